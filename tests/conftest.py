"""Test-wide JAX setup: 8 simulated CPU devices (for sharding tests) and full-precision matmuls."""

import os

import jax

# Commands enable the persistent compilation cache by default (~/.cache/relex_jax/xla); tests and
# the subprocesses they start leave the user's cache alone unless a test turns it on itself.
os.environ.setdefault("RELEX_JAX_COMPILATION_CACHE", "off")

jax.config.update("jax_num_cpu_devices", 8)
jax.config.update("jax_default_matmul_precision", "highest")
