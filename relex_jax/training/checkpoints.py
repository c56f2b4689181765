"""Training checkpoints: periodic, asynchronous, crash-safe saving and exact resume (Orbax).

Layout
------
`TrainCheckpoints(run_dir, ...)` keeps its checkpoints in `run_dir/checkpoints/`, one directory
per saved step, named by the plain step number (Orbax `CheckpointManager` with its standard step
names)::

    run_dir/checkpoints/
      4/
        state/            the train state pytree (Orbax StandardSave: OCDBT/TensorStore arrays,
                          `_METADATA` with the tree structure, shapes, dtypes, shardings)
        rng/              {"key_data": uint32 array}: the raw data of the PRNG key (absent if
                          the key given was None)
        progress/         progress.json (Orbax JsonSave), see below
        _CHECKPOINT_METADATA
      6/
        ...
      6.orbax-checkpoint-tmp/   only while step 6 is being written (or after a crash while it was)

`progress.json` holds `{"format": 1, "step": 6, "data_state": {...}, "config": {...},
"rng": {"typed": true, "impl": "threefry2x32"}}`: `data_state` is the caller's data-iterator
position (e.g. epoch, batch index, data seed), `config` the run config given to the constructor,
`rng` how to rebuild the key from its raw data. Both dicts must survive a JSON round trip
unchanged (str keys, no tuples, no numpy scalars); `maybe_save` checks this before writing.

The state is an opaque pytree (params, optimizer state, step, batch statistics...) of jax arrays,
numpy arrays / scalars and Python numbers; any pytree node type works (dicts, flax structs,
optax's namedtuples) because Orbax stores it by key path.

Saving
------
`maybe_save(step, state, rng, data_state)` saves when `step % every_n_steps == 0` (or `force=True`,
e.g. at the end of training, or when Orbax has reached a preemption sync point on a pod) and the
step is newer than the latest checkpoint; it returns whether it saved. With `async_save=True` the
call returns once device arrays have been copied to host memory and the files are written by a
background thread while training continues, so the caller may donate or delete the saved
arrays right away. Orbax allows one save in flight: the next save first waits for the previous
one. Call `wait()` (or `close()`, or leave the `with` block) before the process exits, or the
last save is lost. After each committed save only the newest `keep` checkpoints are kept. Each
save logs one INFO line with the step and the step directory.

Resume
------
`latest_step()` is the newest committed step (None for a fresh run).
`restore(step=None, target=...)` returns `(state, rng, data_state)` of that step (the latest by
default). `target` gives the structure, shapes, dtypes and shardings to restore into: a pytree
like the state whose leaves are `jax.ShapeDtypeStruct(shape, dtype, sharding=...)` (e.g. from
`jax.eval_shape` of the init function, with shardings attached), concrete arrays (their sharding
is used), numpy arrays (restored on the host) or Python numbers. Every abstract leaf needs a
sharding, so that a checkpoint written on one device topology restores onto another (a sharded
multi-device run, a different mesh); Orbax fills missing shardings from the one saved, which
fails on a new topology. Values are restored bit-exactly. A target that differs from the saved
tree (missing or extra leaves, other shapes or dtypes) raises `CheckpointMismatchError` naming
each difference; nothing is cast or padded silently. The key comes back as it was given: a typed
key (`jax.random.key`) with its implementation, or a raw uint32 key (`jax.random.PRNGKey`); it is
restored on the default device (it is tiny; `jit` moves it where needed). `saved_config(step)`
reads the run config stored with a step.

Crash safety and its limits
---------------------------
Orbax writes a step into `<step>.orbax-checkpoint-tmp/` and commits it by renaming that directory
to `<step>/` after every file, `commit_success.txt` included, has been written
(`AtomicRenameTemporaryPath`, the default on local and POSIX filesystems). A process killed
before the rename leaves only the tmp directory: it is never listed as a step (step discovery
skips names with the tmp suffix), so `latest_step()` and `restore()` see the previous checkpoint.
The next `TrainCheckpoints` on the directory deletes leftover tmp directories (Orbax
`cleanup_tmp_directories`, in the background, finished before its first save), and a save of the
same step also replaces a stale tmp directory.

Limits:
- The guarantee is the filesystem's: it needs an atomic directory rename. It covers a killed
  process; across a machine crash or power loss it also needs the data on disk before the rename
  is: TensorStore writes the array files (fsync per its `file_io_sync` context setting), but
  Orbax writes its JSON and metadata files and renames without fsync, so that case relies on
  the filesystem's ordering (e.g. ext4 `data=ordered`). Object stores without atomic rename
  (`gs://`) get Orbax's `CommitFileTemporaryPath` instead: the step is written in place and
  counts as complete once its `commit_success.txt` exists. Network filesystems with non-atomic
  or eventually consistent rename (some FUSE mounts) give no guarantee.
- Old checkpoints are deleted with a plain recursive delete after a newer one is committed. A
  crash during that delete can leave a partial *older* step directory that is listed as a step
  and fails to restore; it is never the latest step.
- Do not open a second writer on a directory that a running job is saving to: opening one deletes
  tmp directories, the running job's save in progress included. Evaluators that only read should
  pass `read_only=True` (no saving, no clean-up).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
from orbax.checkpoint.checkpoint_managers import preservation_policy as preservation_lib
from orbax.checkpoint.checkpoint_managers import save_decision_policy as save_decision_lib

logger = logging.getLogger(__name__)

CHECKPOINTS_SUBDIR = "checkpoints"
FORMAT_VERSION = 1
STATE, RNG, PROGRESS = "state", "rng", "progress"
_MAX_LISTED = 20  # differences listed per kind in a mismatch error


class CheckpointMismatchError(ValueError):
    """The restore target does not have the structure, shapes or dtypes of the saved state."""


class TrainCheckpoints:
    """Saves and restores (train state, PRNG key, data position) per step under `directory/checkpoints`.

    Args:
        directory: the run directory; checkpoints go to `directory/checkpoints/<step>/`.
        every_n_steps: save at steps that are multiples of this.
        keep: how many of the newest checkpoints to keep (None: all).
        async_save: write in a background thread (the call returns after the device-to-host copy).
        config: the run config (a JSON-serialisable dict), stored with every step.
        read_only: open for restoring only: no saves, no clean-up of tmp directories.
    """

    def __init__(
        self,
        directory: str | Path,
        every_n_steps: int,
        keep: int | None = 3,
        async_save: bool = True,
        *,
        config: Mapping[str, Any] | None = None,
        read_only: bool = False,
    ):
        if every_n_steps < 1:
            raise ValueError(f"every_n_steps must be >= 1, got {every_n_steps}")
        if keep is not None and keep < 1:
            raise ValueError(f"keep must be >= 1 (or None to keep all), got {keep}")
        self.directory = Path(directory).absolute() / CHECKPOINTS_SUBDIR
        self.every_n_steps = every_n_steps
        self.keep = keep
        self.config = _json_roundtrip_checked(dict(config or {}), "config")
        options = ocp.CheckpointManagerOptions(
            save_decision_policy=save_decision_lib.AnySavePolicy(
                [
                    save_decision_lib.FixedIntervalPolicy(every_n_steps),
                    save_decision_lib.PreemptionCheckpointingPolicy(),
                ]
            ),
            preservation_policy=preservation_lib.LatestN(n=keep),
            enable_async_checkpointing=async_save,
            cleanup_tmp_directories=not read_only,
            read_only=read_only,
            create=not read_only,
        )
        self._manager = ocp.CheckpointManager(
            self.directory,
            options=options,
            item_handlers={
                STATE: ocp.StandardCheckpointHandler(),
                RNG: ocp.StandardCheckpointHandler(),
                PROGRESS: ocp.JsonCheckpointHandler(),
            },
        )
        self._async = async_save

    # -- saving ----------------------------------------------------------------------------------

    def maybe_save(
        self, step: int, state: Any, rng: jax.Array | None, data_state: Mapping[str, Any], force: bool = False
    ) -> bool:
        """Saves (state, rng, data_state) as `step` if it is due (or `force`); returns whether it saved.

        A step that is not newer than the latest checkpoint is never saved (not even with `force`).
        """
        step = int(step)
        latest = self._manager.latest_step()
        if latest is not None and step <= latest:
            return False
        if not force and not self._manager.should_save(step):
            return False
        progress = {
            "format": FORMAT_VERSION,
            "step": step,
            "data_state": _json_roundtrip_checked(dict(data_state), "data_state"),
            "config": self.config,
            "rng": _rng_info(rng),
        }
        items = {STATE: ocp.args.StandardSave(state), PROGRESS: ocp.args.JsonSave(progress)}
        if rng is not None:
            items[RNG] = ocp.args.StandardSave({"key_data": _key_data(rng)})
        saved = self._manager.save(step, args=ocp.args.Composite(**items), force=True)
        if saved and jax.process_index() == 0:
            how = "writing in the background" if self._async else "written"
            logger.info("checkpoint step %d -> %s (%s)", step, self.directory / str(step), how)
        return bool(saved)

    def wait(self) -> None:
        """Blocks until the save in flight (if any) is committed; raises its error if it failed."""
        self._manager.wait_until_finished()

    def close(self) -> None:
        """Waits for the save in flight, then releases Orbax's threads."""
        try:
            self.wait()
        finally:
            self._manager.close()

    def __enter__(self) -> TrainCheckpoints:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- reading ---------------------------------------------------------------------------------

    def latest_step(self) -> int | None:
        """The newest committed step, or None."""
        return self._manager.latest_step()

    def all_steps(self) -> list[int]:
        """All committed steps, oldest first."""
        return sorted(self._manager.all_steps())

    def step_dir(self, step: int) -> Path:
        return self.directory / str(int(step))

    def restore(self, step: int | None = None, *, target: Any) -> tuple[Any, jax.Array | None, dict[str, Any]]:
        """(state, rng, data_state) saved at `step` (default: the latest), state restored into `target`.

        `target`: the state's structure with `jax.ShapeDtypeStruct` leaves carrying shardings (or
        concrete arrays, whose shardings are used). Raises `CheckpointMismatchError` if it differs
        from the saved state, FileNotFoundError if there is no such step.
        """
        step = self._resolve_step(step)
        saved = self._manager.item_metadata(step)
        state_meta = saved[STATE] if STATE in saved.keys() else None
        if state_meta is None:
            raise FileNotFoundError(f"{self.step_dir(step)} has no {STATE!r} item: not a TrainCheckpoints checkpoint")
        restore_target, scalar_paths = _restore_target(target)
        _check_matches(getattr(state_meta, "tree", state_meta), restore_target, self.step_dir(step))
        items = {STATE: ocp.args.StandardRestore(restore_target), PROGRESS: ocp.args.JsonRestore()}
        rng_meta = saved[RNG] if RNG in saved.keys() else None
        if rng_meta is not None:
            key_meta = getattr(rng_meta, "tree", rng_meta)["key_data"]
            items[RNG] = ocp.args.StandardRestore({"key_data": np.zeros(key_meta.shape, key_meta.dtype)})
        restored = self._manager.restore(step, args=ocp.args.Composite(**items))
        state = restored[STATE]
        if scalar_paths:  # numpy scalars travel as 0-d arrays; give them back as scalars
            state = jax.tree_util.tree_map_with_path(
                lambda path, x: x[()] if _path_str(path) in scalar_paths else x, state
            )
        progress = restored[PROGRESS]
        rng = None
        if rng_meta is not None:
            rng = _rebuild_key(restored[RNG]["key_data"], progress["rng"])
        return state, rng, progress["data_state"]

    def saved_config(self, step: int | None = None) -> dict[str, Any]:
        """The run config stored with `step` (default: the latest)."""
        step = self._resolve_step(step)
        progress = self._manager.restore(step, args=ocp.args.Composite(**{PROGRESS: ocp.args.JsonRestore()}))
        return progress[PROGRESS]["config"]

    def _resolve_step(self, step: int | None) -> int:
        steps = self.all_steps()
        if step is None:
            if not steps:
                raise FileNotFoundError(f"no committed checkpoint in {self.directory}")
            return steps[-1]
        if int(step) not in steps:
            raise FileNotFoundError(f"no committed checkpoint for step {step} in {self.directory}; steps: {steps}")
        return int(step)


# -- helpers -------------------------------------------------------------------------------------


def _json_roundtrip_checked(value: dict[str, Any], what: str) -> dict[str, Any]:
    """`value` if JSON reproduces it exactly; a clear error (before any background write) if not."""
    try:
        back = json.loads(json.dumps(value, allow_nan=False))
    except (TypeError, ValueError) as err:
        raise TypeError(
            f"{what} must be JSON-serialisable (str keys; str, int, float, bool, None, list, dict values): {err}"
        ) from err
    if back != value or not _same_json_types(back, value):
        raise TypeError(
            f"{what} does not survive a JSON round trip unchanged (tuples become lists, non-str keys "
            f"become str): {value!r} -> {back!r}"
        )
    return back


def _same_json_types(a: Any, b: Any) -> bool:
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return all(_same_json_types(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return all(_same_json_types(x, y) for x, y in zip(a, b))
    return True


def _is_typed_key(rng: Any) -> bool:
    return hasattr(rng, "dtype") and jax.dtypes.issubdtype(rng.dtype, jax.dtypes.prng_key)


def _key_data(rng: Any) -> np.ndarray:
    """The key's raw data as a host numpy array: the key is the same on every process, and Orbax
    refuses a process-local device array in a multi-process save."""
    data = jax.random.key_data(rng) if _is_typed_key(rng) else rng
    if getattr(data, "dtype", None) != np.uint32:
        got = getattr(data, "dtype", type(data))
        raise TypeError(f"rng must be a typed PRNG key or raw uint32 key data, got {got}")
    return np.asarray(data)


def _rng_info(rng: Any) -> dict[str, Any] | None:
    if rng is None:
        return None
    if _is_typed_key(rng):
        return {"typed": True, "impl": str(jax.random.key_impl(rng))}
    return {"typed": False, "impl": None}


def _rebuild_key(data: np.ndarray, info: Mapping[str, Any]) -> jax.Array:
    data = jnp.asarray(data)
    return jax.random.wrap_key_data(data, impl=info["impl"]) if info["typed"] else data


def _key_name(key: Any) -> str:
    for attr in ("key", "name", "idx"):  # DictKey / FlattenedIndexKey, GetAttrKey, SequenceKey
        if hasattr(key, attr):
            return str(getattr(key, attr))
    return str(key)


def _path_str(path: tuple[Any, ...]) -> str:
    return "/".join(_key_name(k) for k in path)


def _restore_target(target: Any) -> tuple[Any, set[str]]:
    """Orbax-ready target: arrays -> ShapeDtypeStruct with their sharding, numpy scalars -> 0-d
    arrays (their paths returned, to turn them back); abstract leaves without a sharding refused."""
    scalar_paths: set[str] = set()
    unsharded: list[str] = []

    def convert(path, leaf):
        if isinstance(leaf, jax.Array):
            return jax.ShapeDtypeStruct(leaf.shape, leaf.dtype, sharding=leaf.sharding)
        if isinstance(leaf, jax.ShapeDtypeStruct):
            if leaf.sharding is None:
                unsharded.append(_path_str(path))
            return leaf
        if isinstance(leaf, np.generic):
            scalar_paths.add(_path_str(path))
            return np.asarray(leaf)
        return leaf

    converted = jax.tree_util.tree_map_with_path(convert, target)
    if unsharded:
        raise ValueError(
            "restore target leaves without a sharding (give each jax.ShapeDtypeStruct one, e.g. "
            f"NamedSharding(mesh, P()) to replicate): {', '.join(unsharded[:_MAX_LISTED])}"
        )
    return converted, scalar_paths


def _check_matches(saved_tree: Any, target: Any, where: Path) -> None:
    """Raises CheckpointMismatchError listing missing/extra leaves and shape/dtype differences."""
    saved = dict((_path_str(p), m) for p, m in jax.tree_util.tree_flatten_with_path(saved_tree)[0])
    wanted = dict((_path_str(p), x) for p, x in jax.tree_util.tree_flatten_with_path(target)[0])
    problems = []
    only_target = sorted(wanted.keys() - saved.keys())
    only_saved = sorted(saved.keys() - wanted.keys())
    if only_target:
        problems.append(f"in the target but not in the checkpoint: {_listing(only_target)}")
    if only_saved:
        problems.append(f"in the checkpoint but not in the target: {_listing(only_saved)}")
    differences = []
    for path in sorted(wanted.keys() & saved.keys()):
        want, have = wanted[path], saved[path]
        if not hasattr(want, "dtype"):  # a Python number: nothing to compare
            continue
        want_shape, have_shape = tuple(want.shape), tuple(getattr(have, "shape", ()) or ())
        want_dtype, have_dtype = np.dtype(want.dtype), getattr(have, "dtype", None)
        if want_shape != have_shape:
            differences.append(f"{path}: checkpoint shape {have_shape}, target {want_shape}")
        # A Python number is stored as a ScalarMetadata whose dtype (int64/float64) is nominal:
        # it restores into any scalar dtype (e.g. a TrainState.create step into eval_shape's int32).
        nominal = isinstance(have, ocp.metadata.ScalarMetadata)
        if have_dtype is not None and not nominal and np.dtype(have_dtype) != want_dtype:
            differences.append(f"{path}: checkpoint dtype {np.dtype(have_dtype)}, target {want_dtype}")
    if differences:
        problems.append("different leaves: " + _listing(differences, sep="; "))
    if problems:
        raise CheckpointMismatchError(
            f"checkpoint {where} does not match the restore target's state structure ("
            + " | ".join(problems)
            + "). Restore into the state structure this run saved (same model config and optimizer)."
        )


def _listing(items: list[str], sep: str = ", ") -> str:
    more = f"{sep}... and {len(items) - _MAX_LISTED} more" if len(items) > _MAX_LISTED else ""
    return sep.join(items[:_MAX_LISTED]) + more
