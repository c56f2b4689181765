"""`python -m convert SRC OUT [--to-gliner] [--overwrite]`: the same as `relex-jax convert`."""
