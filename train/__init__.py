"""`python -m train`: thin entry point for training (`relex_jax.training.loop`)."""
