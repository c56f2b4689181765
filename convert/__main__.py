"""Placeholder entry point: checkpoint conversion is not implemented yet (tracked as the converter issue)."""

import sys

sys.exit(
    "python -m convert: gliner checkpoint conversion is not implemented yet in this version of relex-jax "
    "(see README, Status). Encoders load directly with relex_jax.load_hf_encoder(DIR)."
)
