"""Test-wide JAX setup: 8 simulated CPU devices (for sharding tests), full-precision matmuls, and
one XLA compilation cache for the whole run."""

import os
import shutil
import tempfile

import jax
import pytest

from relex_jax.compilation_cache import ENV_VAR, enable_compilation_cache

# The run's own cache (below), shared by the pytest-xdist workers through this variable.
RUN_CACHE_VAR = "RELEX_JAX_TEST_RUN_CACHE"

jax.config.update("jax_num_cpu_devices", 8)
jax.config.update("jax_default_matmul_precision", "highest")

if os.environ.get("PYTEST_XDIST_WORKER"):  # one worker per core: one PyTorch thread each, not two competing
    try:
        import torch

        torch.set_num_threads(1)
    except ImportError:
        pass


def pytest_configure(config):
    """Many tests build the same tiny models and compile the same programs under new `jit`
    objects (a new `RelexModel`, a new train step); one persistent cache for the run turns those
    repeats into loads. It lives in a fresh temporary directory (no state from earlier runs, the
    user's cache untouched), made by the first process and removed by it at the end."""
    if not os.environ.get(RUN_CACHE_VAR):
        os.environ[RUN_CACHE_VAR] = tempfile.mkdtemp(prefix="relex_jax_test_xla_")
        config._relex_run_cache_owner = True
    # Commands run in-process and the subprocesses tests start (`python -m train`, benchmarks)
    # use it too, through the commands' own setting, and leave the user's cache alone. An entry
    # a killed process left half written is a warning and a fresh compilation, not an error.
    os.environ[ENV_VAR] = os.environ[RUN_CACHE_VAR]
    enable_compilation_cache(os.environ[RUN_CACHE_VAR])


def pytest_unconfigure(config):
    if getattr(config, "_relex_run_cache_owner", False):
        shutil.rmtree(os.environ.pop(RUN_CACHE_VAR), ignore_errors=True)


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


# Files of a minute or more (subprocess training runs, large parity fixtures), longest first. They
# start the run, so that it does not end with one worker alone on a long file while the other
# idles (pyproject's `--no-loadscope-reorder` keeps this order; xdist would otherwise order files
# by their number of tests, which put the three-test, three-minute subprocess file last).
LONG_FILES_FIRST = (
    "test_training_processes.py", "test_packing.py", "test_deberta_parity.py", "test_inference.py",
    "test_relex_parity.py", "test_train_step.py", "test_convert.py", "test_accelerator.py",
)


def pytest_collection_modifyitems(items):
    rank = {name: i for i, name in enumerate(LONG_FILES_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: file order otherwise kept
