"""Temporary alias: the readers moved to `relex_jax.data.readers`, collation to `relex_jax.data.collate`.

Only `relex_jax/cli.py` and `relex_jax/evaluation.py` still import from here (they are being
edited on another branch of issue 20); point them at `relex_jax.data.readers` and delete this file.
"""

from relex_jax.data.readers import Example, MalformedRecord, read_examples  # noqa: F401
