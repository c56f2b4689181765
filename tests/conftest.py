"""Test-wide JAX setup: 8 simulated CPU devices (for sharding tests) and full-precision matmuls."""

import os

import jax
import pytest

# Commands enable the persistent compilation cache by default (~/.cache/relex_jax/xla); tests and
# the subprocesses they start leave the user's cache alone unless a test turns it on itself.
os.environ.setdefault("RELEX_JAX_COMPILATION_CACHE", "off")

jax.config.update("jax_num_cpu_devices", 8)
jax.config.update("jax_default_matmul_precision", "highest")



def devices_or_skip(count: int) -> list:
    """The first `count` devices, or a skip that says why there are fewer: the 8 simulated devices
    above are CPU devices, and a GPU or TPU host has its own device count."""
    devices = jax.devices()
    if len(devices) < count:
        pytest.skip(f"needs {count} devices: this run's default platform is {devices[0].platform} with "
                    f"{len(devices)} device(s); the suite simulates 8 only on the CPU")
    return devices[:count]


@pytest.fixture
def eight_devices():
    """The 8 devices the sharding tests split work over (skipped with the reason elsewhere)."""
    return devices_or_skip(8)
