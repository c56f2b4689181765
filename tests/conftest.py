"""Test-wide JAX setup: 8 simulated CPU devices (for sharding tests) and full-precision matmuls."""

import jax

jax.config.update("jax_num_cpu_devices", 8)
jax.config.update("jax_default_matmul_precision", "highest")
