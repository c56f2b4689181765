"""Device layout of training: one `Mesh` with axes (data, fsdp, tensor) and where every array goes.

- Batch rows are split over data x fsdp (every device sees distinct rows).
- Parameters are placed by *logical* axes: `PARAM_AXES` names the logical axes of each parameter
  (by its path in the params tree), and `LOGICAL_AXIS_RULES` maps logical axes to mesh axes. These
  two tables are the only place the layout is decided. With the default rules a mesh of
  (data=N, fsdp=1, tensor=1) is pure data parallelism (everything replicated), fsdp > 1 shards the
  model width of every large matrix over the fsdp devices (ZeRO-3 style: XLA gathers a matrix
  where it is used and reduce-scatters its gradient), and tensor > 1 splits attention heads, feed-
  forward widths and the vocabulary (Megatron style). Any mix is a mesh shape in the config.
- Optimizer state (Adam moments, accumulated gradients) takes the sharding of its parameter; scalars
  (step counts) are replicated.
- A dimension that does not divide by the size of its mesh axes stays whole (replicated along
  those axes): correct, only less memory is saved. `describe_layout` lists such cases.

Layout never changes results beyond float reduction order: `jax.jit` with these in/out shardings
computes the same global function on any mesh (GSPMD inserts the collectives).

Multi-host: call `initialize_distributed()` first (it wraps `jax.distributed.initialize`); each
process then builds its rows of the global batch and `global_batch` assembles them with
`jax.make_array_from_process_local_data`.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import re
from typing import Any, Sequence

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

log = logging.getLogger(__name__)

MESH_AXES = ("data", "fsdp", "tensor")
BATCH_AXES = ("data", "fsdp")  # batch rows are split over both: fsdp devices also see distinct rows

# Logical axis -> mesh axis (or axes, or None = replicated). Edit here to change the layout.
LOGICAL_AXIS_RULES: dict[str, str | tuple[str, ...] | None] = {
    "batch": BATCH_AXES,
    "embed": "fsdp",  # model width (backbone hidden, GLiNER width D)
    "vocab": "tensor",
    "heads": "tensor",  # attention projections: heads x head_dim
    "mlp": "tensor",  # feed-forward and head MLP hidden widths, LSTM gates
    "positions": None,  # relative-position table rows
    "layers": None,  # the stacked-layers axis of a scanned encoder
}

# Parameter path (joined with "/", matched with re.search, first match wins) -> logical axes per
# dimension. A scanned encoder's stacked leaves have one more (leading) dimension: "layers".
# Anything not listed (LayerNorm scales, other biases, small tables) is replicated.
PARAM_AXES: tuple[tuple[str, tuple[str | None, ...]], ...] = (
    (r"word_embeddings/embedding$", ("vocab", "embed")),
    (r"rel_embeddings/embedding$", ("positions", "embed")),
    (r"position_embeddings/embedding$", ("positions", "embed")),  # BERT's absolute positions
    (r"token_type_embeddings/embedding$", (None, "embed")),  # BERT: 2 rows, only the width splits
    (r"embed_proj/kernel$", (None, "embed")),
    (r"attention/self/\w+_proj/kernel$", ("embed", "heads")),
    (r"attention/self/\w+_proj/bias$", ("heads",)),
    (r"attention/output/dense/kernel$", ("heads", "embed")),
    (r"intermediate/dense/kernel$", ("embed", "mlp")),
    (r"intermediate/dense/bias$", ("mlp",)),
    (r"/output/dense/kernel$", ("mlp", "embed")),
    (r"/hidden/kernel$", ("embed", "mlp")),  # GLiNER head MLPs: D -> hidden -> D
    (r"/hidden/bias$", ("mlp",)),
    (r"/output/kernel$", ("mlp", "embed")),
    (r"rnn/.*/(input|hidden)_kernel$", ("embed", "mlp")),  # LSTM: inputs x 4 gates
    (r"rnn/.*/(input|hidden)_bias$", ("mlp",)),
    (r"projection/kernel$", ("embed", "embed")),  # backbone width H -> D (fsdp on the first only)
)


@dataclasses.dataclass(frozen=True)
class MeshConfig:
    """Device counts per mesh axis; -1 (at most one axis) takes the devices the others leave.

    (data=-1) is pure data parallelism, (data=-1, fsdp=8) FSDP groups of 8 inside data parallel
    replicas, (fsdp=-1) full FSDP, tensor > 1 adds tensor parallelism. Devices are laid out with
    `jax.experimental.mesh_utils.create_device_mesh`, so on TPU the fastest links carry the inner
    (tensor, then fsdp) axes.
    """

    data: int = -1
    fsdp: int = 1
    tensor: int = 1

    def __post_init__(self):
        sizes = (self.data, self.fsdp, self.tensor)
        if sum(s == -1 for s in sizes) > 1 or any(s == 0 or s < -1 for s in sizes):
            raise ValueError(f"mesh sizes must be positive, with at most one -1; got {self}")

    def shape(self, num_devices: int) -> tuple[int, int, int]:
        sizes = [self.data, self.fsdp, self.tensor]
        known = math.prod(s for s in sizes if s != -1)
        if -1 in sizes:
            if num_devices % known:
                raise ValueError(f"{num_devices} devices cannot be split into {self} (fixed axes need {known})")
            sizes[sizes.index(-1)] = num_devices // known
        if math.prod(sizes) != num_devices:
            raise ValueError(f"mesh {dict(zip(MESH_AXES, sizes))} needs {math.prod(sizes)} devices, {num_devices} are available")
        return tuple(sizes)


def make_mesh(config: MeshConfig = MeshConfig(), devices: Sequence[Any] | None = None) -> Mesh:
    """The training mesh over `devices` (default: every device of every process)."""
    devices = list(jax.devices() if devices is None else devices)
    shape = config.shape(len(devices))
    try:
        from jax.experimental import mesh_utils

        grid = mesh_utils.create_device_mesh(shape, devices=devices)
    except (ValueError, NotImplementedError, AssertionError):  # topologies mesh_utils does not know (CPU)
        grid = np.asarray(devices).reshape(shape)
    return Mesh(grid, MESH_AXES)


def initialize_distributed(coordinator_address: str | None = None, num_processes: int | None = None,
                           process_id: int | None = None) -> None:
    """`jax.distributed.initialize` once per process, before any other JAX call.

    On TPU pods and SLURM/Open MPI clusters every argument is detected; elsewhere (several GPU
    hosts, or several processes on one host) pass all three (jax 0.10 reads only the address from
    the environment, JAX_COORDINATOR_ADDRESS). See the README's "Training at scale".
    """
    jax.distributed.initialize(coordinator_address=coordinator_address, num_processes=num_processes,
                               process_id=process_id)
    log.info("process %d of %d: %d local devices, %d in all", jax.process_index(), jax.process_count(),
             jax.local_device_count(), jax.device_count())


def _path_string(path) -> str:
    return "/".join(str(getattr(k, "key", getattr(k, "name", getattr(k, "idx", k)))) for k in path)


def logical_axes(path: str, ndim: int) -> tuple[str | None, ...]:
    """The logical axes of the parameter at `path` (a "/"-joined params path) with `ndim` dims."""
    for pattern, axes in PARAM_AXES:
        if re.search(pattern, path):
            if ndim == len(axes) + 1:  # stacked by a scanned encoder
                return ("layers", *axes)
            if ndim == len(axes):
                return axes
    return (None,) * ndim


def partition_spec(axes: Sequence[str | None], shape: Sequence[int], mesh: Mesh) -> PartitionSpec:
    """Map logical axes to mesh axes by `LOGICAL_AXIS_RULES`, dropping a mesh axis when the dimension
    does not divide by its size or an earlier dimension already uses it."""
    used: set[str] = set()
    spec = []
    for name, size in zip(axes, shape):
        target = LOGICAL_AXIS_RULES.get(name) if name else None
        mesh_axes = (target,) if isinstance(target, str) else tuple(target or ())
        mesh_axes = tuple(a for a in mesh_axes if a not in used and mesh.shape[a] > 1)
        if mesh_axes and size % math.prod(mesh.shape[a] for a in mesh_axes):
            mesh_axes = ()
        used.update(mesh_axes)
        spec.append(mesh_axes[0] if len(mesh_axes) == 1 else (mesh_axes or None))
    return PartitionSpec(*spec)


def param_shardings(params, mesh: Mesh):
    """A tree like `params` of `NamedSharding`s (leaves may be arrays or ShapeDtypeStructs)."""

    def sharding(path, leaf):
        shape = np.shape(leaf)
        return NamedSharding(mesh, partition_spec(logical_axes(_path_string(path), len(shape)), shape, mesh))

    return jax.tree_util.tree_map_with_path(sharding, params)


def _suffix_sharding(path: tuple, shape, by_path: dict, fallback: NamedSharding) -> NamedSharding:
    for start in range(len(path)):
        hit = by_path.get(path[start:])
        if hit is not None and hit[0] == tuple(shape):
            return hit[1]
    return fallback


def train_state_shardings(abstract_state, mesh: Mesh):
    """Shardings for a `relex_jax.training.step.TrainState` (arrays or ShapeDtypeStructs): params by
    `param_shardings`; each optimizer-state leaf as the parameter whose path ends its own path
    (Adam's mu and nu mirror the params tree) when the shapes agree; everything else replicated."""
    whole = replicated(mesh)
    params = param_shardings(abstract_state.params, mesh)
    by_path = {}
    for (path, leaf), (_, sharding) in zip(
        jax.tree_util.tree_flatten_with_path(abstract_state.params)[0], jax.tree_util.tree_flatten_with_path(params)[0]
    ):
        by_path[tuple(_path_string([k]) for k in path)] = (tuple(np.shape(leaf)), sharding)

    def optimizer_leaf(path, leaf):
        return _suffix_sharding(tuple(_path_string([k]) for k in path), np.shape(leaf), by_path, whole)

    opt_state = jax.tree_util.tree_map_with_path(optimizer_leaf, abstract_state.opt_state)
    batch_stats = jax.tree_util.tree_map(lambda _: whole, abstract_state.batch_stats)
    return abstract_state.replace(step=whole, params=params, opt_state=opt_state, batch_stats=batch_stats)


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, PartitionSpec())


def batch_sharding(mesh: Mesh) -> NamedSharding:
    """Rows over data x fsdp, every other dimension whole."""
    return NamedSharding(mesh, PartitionSpec(BATCH_AXES))


def batch_rows_multiple(mesh: Mesh) -> int:
    """The global batch size must be a multiple of this (the devices rows are split over)."""
    return mesh.shape["data"] * mesh.shape["fsdp"]


def global_batch(local_batch, mesh: Mesh):
    """Assemble each process's rows (a pytree of numpy arrays, rows first, identical shapes on every
    process apart from the rows) into global arrays sharded by `batch_sharding`."""
    sharding = batch_sharding(mesh)

    def put(x):
        if x is None:
            return None
        x = np.asarray(x)
        global_shape = (x.shape[0] * jax.process_count(), *x.shape[1:])
        return jax.make_array_from_process_local_data(sharding, x, global_shape)

    return jax.tree_util.tree_map(put, local_batch)


def gather_hosts(tree, tiled: bool = False):
    """`tree` from every process, as numpy arrays on each: per-process values stacked on a new
    leading axis (one entry per process), or with `tiled` the full value of globally sharded arrays.
    The one home of multi-host gathering; with one process nothing is communicated."""
    if jax.process_count() == 1:
        tree = jax.device_get(tree)
        return tree if tiled else jax.tree_util.tree_map(lambda x: np.asarray(x)[None], tree)
    from jax.experimental import multihost_utils

    return multihost_utils.process_allgather(tree, tiled=tiled)


def describe_layout(params, mesh: Mesh) -> list[str]:
    """One line per parameter: path, shape, partition spec (for logs and `--print-layout`)."""
    shardings = param_shardings(params, mesh)
    lines = []
    for (path, leaf), sharding in zip(jax.tree_util.tree_flatten_with_path(params)[0], jax.tree_util.tree_leaves(shardings)):
        lines.append(f"{_path_string(path)} {tuple(np.shape(leaf))} {tuple(sharding.spec)}")
    return lines
