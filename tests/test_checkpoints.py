"""Training checkpoints: every-N / keep-K policy, bit-exact resume, sharded restore, clear mismatch
errors, asynchronous writes, and crash safety (a save killed with SIGKILL leaves the previous
checkpoint usable)."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax.training import train_state
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P
from orbax.checkpoint._src.path import atomicity

from relex_jax.training.checkpoints import CheckpointMismatchError, TrainCheckpoints

REPO = Path(__file__).resolve().parents[1]
TMP_SUFFIX = ".orbax-checkpoint-tmp"  # Orbax's atomicity_types.TMP_DIR_SUFFIX


def _train_state(seed: int, n_updates: int = 2) -> train_state.TrainState:
    """A flax TrainState with a chained optax optimizer (namedtuples, EmptyState nodes), a bf16
    leaf and non-trivial optimizer moments; float leaves include -0.0, inf and NaN."""
    rng = np.random.default_rng(seed)
    kernel = rng.standard_normal((5, 3)).astype(np.float32)
    kernel[0, :3] = [-0.0, np.inf, np.nan]
    params = {
        "dense": {"kernel": jnp.asarray(kernel), "bias": jnp.asarray(rng.standard_normal(3), jnp.bfloat16)},
        "embed": jnp.asarray(rng.standard_normal((7, 2)).astype(np.float32)),
    }
    tx = optax.chain(optax.clip_by_global_norm(1.0), optax.adamw(1e-2))
    state = train_state.TrainState.create(apply_fn=None, params=params, tx=tx)
    state = state.replace(step=jnp.asarray(0, jnp.int32))
    for _ in range(n_updates):
        grads = jax.tree.map(lambda p: jnp.asarray(rng.standard_normal(p.shape), p.dtype), state.params)
        state = state.apply_gradients(grads=grads)
    return state


def _assert_bit_equal(got, want):
    # Same key paths (treedefs also hold static fields such as a TrainState's `tx`, which differ).
    got_paths, got_leaves = zip(*jax.tree_util.tree_flatten_with_path(got)[0])
    want_paths, want_leaves = zip(*jax.tree_util.tree_flatten_with_path(want)[0])
    assert got_paths == want_paths
    for g, w in zip(got_leaves, want_leaves):
        assert type(g) is type(w) or (isinstance(g, jax.Array) and isinstance(w, jax.Array)), (type(g), type(w))
        if isinstance(w, (int, float)):
            assert g == w
            continue
        assert g.dtype == w.dtype and g.shape == w.shape
        assert np.asarray(g).tobytes() == np.asarray(w).tobytes()


def _step_dirs(run_dir: Path) -> list[str]:
    return sorted(os.listdir(run_dir / "checkpoints"))


@pytest.mark.parametrize("async_save", [True, False])
def test_saves_every_n_steps_keeps_last_k_and_logs_each_save(tmp_path, caplog, async_save):
    state = _train_state(0)
    with caplog.at_level(logging.INFO, logger="relex_jax.training.checkpoints"):
        with TrainCheckpoints(tmp_path, every_n_steps=2, keep=2, async_save=async_save) as ckpts:
            saved = [s for s in range(1, 8) if ckpts.maybe_save(s, state, jax.random.key(s), {"epoch": 0, "step": s})]
            ckpts.wait()
            assert saved == [2, 4, 6]
            assert ckpts.all_steps() == [4, 6] and ckpts.latest_step() == 6
    assert [d for d in _step_dirs(tmp_path) if not d.startswith("_")] == ["4", "6"]  # step 2 deleted from disk
    lines = [r.getMessage() for r in caplog.records if r.name == "relex_jax.training.checkpoints"]
    assert len(lines) == 3
    assert all(r.levelno == logging.INFO for r in caplog.records if r.name == "relex_jax.training.checkpoints")
    for step, line in zip((2, 4, 6), lines):
        assert f"step {step}" in line and str(tmp_path / "checkpoints" / str(step)) in line


def test_resume_restores_bit_exact_state_rng_and_data_state(tmp_path):
    config = {"lr": 1e-3, "model": {"hidden": 64}, "labels": ["person", "org"]}
    saved = {}
    with TrainCheckpoints(tmp_path, every_n_steps=2, keep=2, config=config) as ckpts:
        for step in (2, 4, 6):
            state = _train_state(step)
            host = {"np_scalar": np.float32(step / 3), "counts": np.arange(step, dtype=np.uint8), "py_int": step}
            data_state = {"epoch": step // 4, "batch_index": step * 10, "data_seed": 1234, "shuffled": [3, 1, 2]}
            rng = jax.random.fold_in(jax.random.key(7), step)
            assert ckpts.maybe_save(step, (state, host), rng, data_state)
            saved[step] = ((state, host), rng, data_state)

    # A fresh process would start here: a new manager, a freshly initialised target.
    host_target = {"np_scalar": np.float32(0), "counts": np.zeros(6, np.uint8), "py_int": 0}
    target = (_train_state(99, n_updates=0), host_target)
    with TrainCheckpoints(tmp_path, every_n_steps=2, keep=2) as ckpts:
        assert ckpts.latest_step() == 6
        state, rng, data_state = ckpts.restore(target=target)
        _assert_bit_equal(state, saved[6][0])
        assert isinstance(state[0], train_state.TrainState) and state[0].tx is target[0].tx
        assert isinstance(state[1]["np_scalar"], np.float32) and isinstance(state[1]["counts"], np.ndarray)
        assert jax.random.key_impl(rng) == jax.random.key_impl(saved[6][1])
        np.testing.assert_array_equal(jax.random.key_data(rng), jax.random.key_data(saved[6][1]))
        assert data_state == saved[6][2]
        assert ckpts.saved_config() == config

        target4 = (target[0], {**target[1], "counts": np.zeros(4, np.uint8)})
        state4, _, data_state4 = ckpts.restore(4, target=target4)
        _assert_bit_equal(state4, saved[4][0])
        assert data_state4 == saved[4][2]
        with pytest.raises(FileNotFoundError, match=r"step 2 .*steps: \[4, 6\]"):
            ckpts.restore(2, target=target)


@pytest.mark.parametrize("impl", ["raw", "threefry2x32", "rbg"])
def test_rng_comes_back_as_given(tmp_path, impl):
    rng = jax.random.PRNGKey(3) if impl == "raw" else jax.random.key(3, impl=impl)
    state = {"w": jnp.ones(3)}
    with TrainCheckpoints(tmp_path, every_n_steps=1) as ckpts:
        ckpts.maybe_save(1, state, rng, {})
        ckpts.wait()
        _, got, _ = ckpts.restore(target=state)
    if impl == "raw":
        assert got.dtype == jnp.uint32 and not jax.dtypes.issubdtype(got.dtype, jax.dtypes.prng_key)
        np.testing.assert_array_equal(got, rng)
    else:
        assert jax.random.key_impl(got) == jax.random.key_impl(rng)
        np.testing.assert_array_equal(jax.random.key_data(got), jax.random.key_data(rng))
        np.testing.assert_array_equal(jax.random.uniform(got, (4,)), jax.random.uniform(rng, (4,)))


def test_restores_into_the_target_shardings(tmp_path, eight_devices):
    devices = np.array(eight_devices)
    save_mesh = Mesh(devices.reshape(4, 2), ("data", "model"))
    values = np.arange(64, dtype=np.float32).reshape(8, 8) * 0.1
    state = {
        "w": jax.device_put(values, NamedSharding(save_mesh, P("data", "model"))),
        "b": jax.device_put(values[0], NamedSharding(save_mesh, P())),
    }
    with TrainCheckpoints(tmp_path, every_n_steps=1) as ckpts:
        ckpts.maybe_save(1, state, None, {"epoch": 0})

    restore_mesh = Mesh(devices[::-1].reshape(8), ("d",))  # another mesh shape and device order
    target = {
        "w": jax.ShapeDtypeStruct((8, 8), jnp.float32, sharding=NamedSharding(restore_mesh, P(None, "d"))),
        "b": jax.ShapeDtypeStruct((8,), jnp.float32, sharding=NamedSharding(restore_mesh, P("d"))),
    }
    with TrainCheckpoints(tmp_path, every_n_steps=1, read_only=True) as ckpts:
        restored, rng, _ = ckpts.restore(target=target)
        assert rng is None
        for name in ("w", "b"):
            assert restored[name].sharding == target[name].sharding
            assert restored[name].sharding.is_equivalent_to(target[name].sharding, 2)
        np.testing.assert_array_equal(restored["w"], values)
        np.testing.assert_array_equal(restored["b"], values[0])

        unsharded = {**target, "b": jax.ShapeDtypeStruct((8,), jnp.float32)}
        with pytest.raises(ValueError, match=r"without a sharding.*\bb\b"):
            ckpts.restore(target=unsharded)


def test_restores_into_the_eval_shape_of_the_init_function(tmp_path):
    """The usual resume: the target is `jax.eval_shape(init)` with shardings attached (here all
    replicated on 8 devices). `TrainState.create` stores `step` as a Python int; eval_shape makes
    it an int32 scalar, which must restore (not be refused as a dtype mismatch)."""
    tx = optax.adamw(1e-3)

    def init():
        params = {"w": jnp.arange(12, dtype=jnp.float32).reshape(3, 4), "b": jnp.full((4,), 0.5, jnp.bfloat16)}
        return {"train": train_state.TrainState.create(apply_fn=None, params=params, tx=tx), "batch_stats": {}}

    state = init()
    assert state["train"].step == 0 and isinstance(state["train"].step, int)
    with TrainCheckpoints(tmp_path, every_n_steps=1) as ckpts:
        ckpts.maybe_save(1, state, None, {"epoch": 0})

    replicated = NamedSharding(Mesh(np.array(jax.devices()), ("data",)), P())
    target = jax.tree.map(lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=replicated), jax.eval_shape(init))
    with TrainCheckpoints(tmp_path, every_n_steps=1, read_only=True) as ckpts:
        restored, _, _ = ckpts.restore(target=target)
    assert restored["batch_stats"] == {} and restored["train"].tx is tx
    for got, want in zip(jax.tree.leaves(restored), jax.tree.leaves(state)):
        assert got.sharding == replicated
        np.testing.assert_array_equal(np.asarray(got), np.asarray(want))
    assert restored["train"].step.dtype == jnp.int32 and int(restored["train"].step) == 0


@pytest.mark.parametrize(
    "change, expected",
    [
        (
            lambda p: {**p, "extra": jnp.zeros(2)},
            r"in the target but not in the checkpoint: opt_state/1/0/mu/extra, .*params/extra",
        ),
        (lambda p: {"dense": p["dense"]}, r"in the checkpoint but not in the target: .*params/embed"),
        (lambda p: {**p, "embed": jnp.zeros((7, 3))}, r"params/embed: checkpoint shape \(7, 2\), target \(7, 3\)"),
        (
            lambda p: {**p, "dense": {**p["dense"], "bias": p["dense"]["bias"].astype(jnp.float32)}},
            r"params/dense/bias: checkpoint dtype bfloat16, target float32",
        ),
    ],
    ids=["extra-leaf", "missing-leaf", "shape", "dtype"],
)
def test_restore_into_another_structure_names_the_mismatch(tmp_path, change, expected):
    state = _train_state(0, n_updates=0)
    with TrainCheckpoints(tmp_path, every_n_steps=1) as ckpts:
        ckpts.maybe_save(1, state, None, {})
        ckpts.wait()
        other = state.replace(params=change(state.params))
        other = other.replace(opt_state=other.tx.init(other.params))
        with pytest.raises(CheckpointMismatchError, match=expected) as err:
            ckpts.restore(target=other)
        assert str(tmp_path / "checkpoints" / "1") in str(err.value)


def test_force_and_step_rules(tmp_path):
    state = {"w": jnp.ones(2)}
    with TrainCheckpoints(tmp_path, every_n_steps=10, keep=None) as ckpts:
        with pytest.raises(FileNotFoundError, match="no committed checkpoint"):
            ckpts.restore(target=state)
        assert not ckpts.maybe_save(3, state, None, {})
        assert ckpts.maybe_save(3, state, None, {}, force=True)  # e.g. the final step
        assert not ckpts.maybe_save(3, state, None, {}, force=True)  # already saved
        assert ckpts.maybe_save(10, state, None, {})
        assert not ckpts.maybe_save(10, state, None, {}, force=True)
        assert not ckpts.maybe_save(5, state, None, {}, force=True)  # older than the latest
        ckpts.wait()
        assert ckpts.all_steps() == [3, 10]


@pytest.mark.parametrize(
    "data_state",
    [{"epoch": np.int64(1)}, {"order": (1, 2)}, {1: "a"}, {"x": float("nan")}],
    ids=["numpy", "tuple", "int-key", "nan"],
)
def test_data_state_must_survive_json(tmp_path, data_state):
    with TrainCheckpoints(tmp_path, every_n_steps=1) as ckpts:
        with pytest.raises(TypeError, match="data_state"):
            ckpts.maybe_save(1, {"w": jnp.ones(2)}, None, data_state)
        assert ckpts.all_steps() == []
    assert [d for d in _step_dirs(tmp_path) if not d.startswith("_")] == []


def test_async_save_returns_before_the_commit_and_the_caller_may_drop_the_arrays(tmp_path, monkeypatch):
    """The save call returns while the write is held before its commit; the caller deletes the saved
    device buffers (as a donating train step would); the checkpoint still holds the values."""
    gate, reached = threading.Event(), threading.Event()
    original_finalize = atomicity.AtomicRenameTemporaryPath.finalize

    async def held_finalize(self):
        reached.set()
        gate.wait(timeout=120)
        return await original_finalize(self)

    monkeypatch.setattr(atomicity.AtomicRenameTemporaryPath, "finalize", held_finalize)
    state = _train_state(5)
    expected = jax.tree.map(np.array, state)
    ckpts = TrainCheckpoints(tmp_path, every_n_steps=1)
    try:
        assert ckpts.maybe_save(1, state, jax.random.key(0), {"epoch": 3})
        assert reached.wait(timeout=120)
        assert "1" not in _step_dirs(tmp_path) and f"1{TMP_SUFFIX}" in _step_dirs(tmp_path)
        with TrainCheckpoints(tmp_path, every_n_steps=1, read_only=True) as reader:
            assert reader.latest_step() is None  # not committed yet
        for leaf in jax.tree.leaves(state):
            if isinstance(leaf, jax.Array):
                leaf.delete()
    finally:
        gate.set()
        ckpts.close()
    with TrainCheckpoints(tmp_path, every_n_steps=1, read_only=True) as reader:
        restored, _, data_state = reader.restore(target=_train_state(0))
    _assert_bit_equal(jax.tree.map(np.array, restored), expected)
    assert data_state == {"epoch": 3}


_CHILD = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    import jax, jax.numpy as jnp, numpy as np
    from relex_jax.training.checkpoints import TrainCheckpoints

    run_dir, hook, marker = Path(sys.argv[1]), sys.argv[2], Path(sys.argv[3])

    def state(step):
        return {"w": jnp.full((256, 256), step, jnp.float32), "step": jnp.asarray(step, jnp.int32)}

    def hang(*args, **kwargs):
        marker.write_text("in the write")
        time.sleep(3600)

    async def async_hang(*args, **kwargs):
        hang()

    ckpts = TrainCheckpoints(run_dir, every_n_steps=2, keep=3)
    ckpts.maybe_save(2, state(2), jax.random.key(2), {"epoch": 0, "batch": 2})
    ckpts.wait()
    if hook == "before_commit":  # every file written, the rename to 4/ not done
        from orbax.checkpoint._src.path import atomicity
        atomicity.AtomicRenameTemporaryPath.finalize = async_hang
    else:  # mid-write: the JSON item is being written while the arrays are written in parallel
        from orbax.checkpoint._src.handlers import json_checkpoint_handler
        json_checkpoint_handler.JsonCheckpointHandler._save_fn = async_hang
    ckpts.maybe_save(4, state(4), jax.random.key(4), {"epoch": 0, "batch": 4})
    time.sleep(3600)
    """
)


@pytest.mark.parametrize("hook", ["before_commit", "mid_write"])
def test_a_save_killed_midway_leaves_the_previous_checkpoint_usable(tmp_path, hook):
    run_dir, marker = tmp_path / "run", tmp_path / "marker"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    env["JAX_PLATFORMS"] = "cpu"
    with open(tmp_path / "child.log", "wb") as log:
        command = [sys.executable, "-c", _CHILD, str(run_dir), hook, str(marker)]
        child = subprocess.Popen(command, env=env, stdout=log, stderr=log)
        try:
            deadline = time.monotonic() + 300
            while not marker.exists():
                assert child.poll() is None, f"child exited early:\n{(tmp_path / 'child.log').read_text()[-3000:]}"
                assert time.monotonic() < deadline, "child never reached the write"
                time.sleep(0.05)
            names = _step_dirs(run_dir)
            assert "2" in names and "4" not in names and f"4{TMP_SUFFIX}" in names
            assert os.listdir(run_dir / "checkpoints" / f"4{TMP_SUFFIX}")  # partly written
        finally:
            child.send_signal(signal.SIGKILL)
            child.wait()
    assert child.returncode == -signal.SIGKILL
    assert f"4{TMP_SUFFIX}" in _step_dirs(run_dir)  # the kill left the tmp directory behind

    target = {"w": jnp.zeros((256, 256), jnp.float32), "step": jnp.asarray(0, jnp.int32)}
    with TrainCheckpoints(run_dir, every_n_steps=2, keep=3) as ckpts:
        assert ckpts.latest_step() == 2 and ckpts.all_steps() == [2]
        state, rng, data_state = ckpts.restore(target=target)
        np.testing.assert_array_equal(state["w"], np.full((256, 256), 2, np.float32))
        assert int(state["step"]) == 2 and data_state == {"epoch": 0, "batch": 2}
        np.testing.assert_array_equal(jax.random.key_data(rng), jax.random.key_data(jax.random.key(2)))

        # Opening the directory cleans leftover tmp directories up (in the background).
        deadline = time.monotonic() + 60
        while f"4{TMP_SUFFIX}" in _step_dirs(run_dir) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert f"4{TMP_SUFFIX}" not in _step_dirs(run_dir)

        # The resumed run saves step 4 again.
        new4 = {"w": jnp.full((256, 256), 40, jnp.float32), "step": jnp.asarray(4, jnp.int32)}
        assert ckpts.maybe_save(4, new4, rng, {"epoch": 0, "batch": 4})
        ckpts.wait()
        assert ckpts.all_steps() == [2, 4]
        state, _, data_state = ckpts.restore(target=target)
        np.testing.assert_array_equal(state["w"], np.asarray(new4["w"]))
        assert data_state == {"epoch": 0, "batch": 4}
    assert not [d for d in _step_dirs(run_dir) if TMP_SUFFIX in d]


def test_device_count_tests_skip_with_the_reason_on_other_platforms(monkeypatch):
    from types import SimpleNamespace

    from conftest import devices_or_skip

    assert len(devices_or_skip(8)) == 8
    monkeypatch.setattr(jax, "devices", lambda: [SimpleNamespace(platform="gpu")])
    with pytest.raises(pytest.skip.Exception, match="needs 8 devices: .* platform is gpu with 1 device"):
        devices_or_skip(8)
