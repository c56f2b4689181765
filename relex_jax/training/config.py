"""Training run configuration: YAML files in `configs/`, overridable with `dotted.key=value`.

A config has these sections (every key optional; unknown keys are errors that name the key):

    seed: 0
    model:       relex_jax.training.init.ModelInit (init: scratch | backbone | checkpoint, ...)
    data:        DataConfig below; `data.collate` overrides CollateConfig fields
    loss:        relex_jax.training.losses.LossConfig fields (the model's coefficients otherwise)
    optim:       relex_jax.training.optim.OptimConfig fields (max_steps counts optimizer steps)
    mesh:        relex_jax.training.sharding.MeshConfig (data / fsdp / tensor device counts)
    train:       TrainLoopConfig below
    checkpoint:  CheckpointConfig below
    eval:        EvalConfig below
    distributed: DistributedConfig below

Override values are parsed as YAML scalars (`optim.learning_rate=1e-4`, `mesh.fsdp=2`,
`data.collate.shuffle_types=false`, `model.gliner.max_width=8`).
"""

from __future__ import annotations

import dataclasses
import difflib
from pathlib import Path
from typing import Any, Mapping, Sequence

import yaml

from relex_jax.data.collate import BUCKET_KEYS
from relex_jax.training.init import ModelInit
from relex_jax.training.losses import LossConfig
from relex_jax.training.optim import OptimConfig
from relex_jax.training.sharding import MeshConfig


@dataclasses.dataclass(frozen=True)
class DataConfig:
    """`train` / `dev`: a .jsonl (../shared/data format) or .json (gliner format) file, a hub
    dataset `hf:NAME[:SPLIT]`, or the embedded generator `synthetic:SPLIT:N` (SPLIT train / dev /
    test). `batch_size` is global (all devices of all hosts). Malformed records fail the run
    (`on_error: raise`) or are skipped with a count (`skip`). Gold entities outside the text, wider
    than the model's `max_width` or past its `max_len` words cannot be trained on: `on_long_span:
    drop` drops them as gliner does, counted and logged (with the first few) and in metrics.jsonl /
    the run summary (`long_spans_dropped`); `error` stops the run before training, naming the
    first record and span."""

    train: str = "synthetic:train:2000"
    dev: str | None = None
    batch_size: int = 8
    on_error: str = "raise"
    on_long_span: str = "drop"
    collate: dict[str, Any] = dataclasses.field(default_factory=dict)
    # Padded sizes per dimension (BUCKET_KEYS), replacing loop.default_buckets' for the dimensions
    # named; [] keeps a dimension's exact per-batch size.
    buckets: dict[str, list[int]] | None = None
    # Packed steps (relex_jax.training.packing): null = gliner-shaped batches of `batch_size`
    # texts; {} = packing with defaults; keys tokens_per_row, rows, max_texts, word_sizes.
    packing: dict[str, Any] | None = None

    def __post_init__(self):
        if self.batch_size < 1:
            raise ValueError("data.batch_size must be positive")
        if self.on_error not in ("raise", "skip"):
            raise ValueError(f"data.on_error must be 'raise' or 'skip', got {self.on_error!r}")
        if self.on_long_span not in ("drop", "error"):
            raise ValueError(f"data.on_long_span must be 'drop' or 'error', got {self.on_long_span!r}")
        if self.packing is not None:
            from relex_jax.training.packing import check_packing_settings

            if not isinstance(self.packing, dict):
                raise ValueError(f"data.packing must be a mapping (or null), got {self.packing!r}")
            check_packing_settings(self.packing)
            if self.buckets:
                raise ValueError("data.buckets and data.packing exclude each other: packing fixes every size itself")
        for key, sizes in (self.buckets or {}).items():
            if key not in BUCKET_KEYS:
                raise ValueError(f"data.buckets.{key} is not a bucketed dimension; known: {', '.join(BUCKET_KEYS)}")
            if not isinstance(sizes, (list, tuple)) or not all(type(s) is int and s > 0 for s in sizes):
                raise ValueError(f"data.buckets.{key} must be a list of positive sizes, got {sizes!r}")


@dataclasses.dataclass(frozen=True)
class TrainLoopConfig:
    dropout: bool = True  # False: deterministic forward (parity checks)
    remat: bool = False  # recompute encoder activations in the backward pass (less memory)
    log_every_n_steps: int = 10  # metrics.jsonl / progress bar / TensorBoard cadence (micro-steps)
    tensorboard: bool = True  # also write DIR/tensorboard when tensorboardX or tensorflow is installed
    progress: bool = True  # tqdm progress bar on process 0


@dataclasses.dataclass(frozen=True)
class CheckpointConfig:
    every_n_steps: int = 500
    keep: int = 3
    async_save: bool = True


@dataclasses.dataclass(frozen=True)
class EvalConfig:
    """Dev-set evaluation every `every_n_steps` micro-steps and at the end (needs `data.dev`).
    The best value of `best_metric` (a dotted path in the report, higher is better) keeps its
    model in DIR/best_model/."""

    every_n_steps: int = 500
    threshold: float = 0.5
    batch_size: int = 16
    best_metric: str = "relations.strict.f1"
    max_examples: int | None = None  # evaluate on the first N dev examples only

    def __post_init__(self):
        # Checked now, not at the first evaluation hours into a run.
        parts = self.best_metric.split(".")
        valid = (len(parts) == 3 and parts[0] in ("entities", "relations") and parts[1] in ("strict", "boundaries")
                 and parts[2] in ("precision", "recall", "f1"))
        if not valid:
            raise ValueError(f"eval.best_metric={self.best_metric!r}; expected entities|relations . strict|boundaries "
                             ". precision|recall|f1, e.g. relations.strict.f1")


@dataclasses.dataclass(frozen=True)
class DistributedConfig:
    """`initialize: true` calls `jax.distributed.initialize` (multi-host). Leave the other fields
    None on TPU pods and SLURM clusters (detected); set them on other multi-process setups."""

    initialize: bool = False
    coordinator_address: str | None = None
    num_processes: int | None = None
    process_id: int | None = None


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    seed: int = 0
    model: ModelInit = ModelInit()
    data: DataConfig = DataConfig()
    loss: dict[str, Any] = dataclasses.field(default_factory=dict)  # LossConfig fields
    optim: OptimConfig = OptimConfig()
    mesh: MeshConfig = MeshConfig()
    train: TrainLoopConfig = TrainLoopConfig()
    checkpoint: CheckpointConfig = CheckpointConfig()
    eval: EvalConfig = EvalConfig()
    distributed: DistributedConfig = DistributedConfig()

    def __post_init__(self):
        _check_keys(self.loss, {f.name for f in dataclasses.fields(LossConfig)}, "loss")

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict (stored with every checkpoint)."""
        return _plain(dataclasses.asdict(self))


_SECTION_CLASSES = {
    "model": ModelInit, "data": DataConfig, "optim": OptimConfig, "mesh": MeshConfig, "train": TrainLoopConfig,
    "checkpoint": CheckpointConfig, "eval": EvalConfig, "distributed": DistributedConfig,
}


def _plain(value):
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def _check_keys(given: Mapping[str, Any], allowed: set[str], where: str) -> None:
    for key in given:
        if key not in allowed:
            close = difflib.get_close_matches(str(key), sorted(allowed), n=1)
            hint = f" (did you mean {where}.{close[0]}?)" if close else f"; known: {', '.join(sorted(allowed))}"
            raise ValueError(f"unknown config key {where}.{key}{hint}")


def _number(value: Any, annotation: str, where: str) -> Any:
    """YAML 1.1 reads 1e-4 (no dot) as a string: accept it where a number is expected."""
    if not isinstance(value, str) or not annotation.startswith(("float", "int")):
        return value
    try:
        return float(value) if annotation.startswith("float") else int(value)
    except ValueError:
        raise ValueError(f"{where} must be a number, got {value!r}") from None


def _section(cls, raw: Any, where: str):
    if raw is None:
        return cls()
    if not isinstance(raw, Mapping):
        raise ValueError(f"config section {where} must be a mapping, got {type(raw).__name__}")
    fields = {f.name: str(f.type) for f in dataclasses.fields(cls)}
    _check_keys(raw, set(fields), where)
    values = {k: _number(v, fields[k], f"{where}.{k}") for k, v in raw.items()}
    try:
        return cls(**values)
    except TypeError as err:
        raise ValueError(f"config section {where}: {err}") from None


def config_from_dict(raw: Mapping[str, Any]) -> TrainConfig:
    _check_keys(raw, {f.name for f in dataclasses.fields(TrainConfig)}, "config")
    kwargs = {name: _section(cls, raw.get(name), name) for name, cls in _SECTION_CLASSES.items()}
    loss = raw.get("loss") or {}
    if not isinstance(loss, Mapping):
        raise ValueError("config section loss must be a mapping")
    return TrainConfig(seed=int(raw.get("seed", 0)), loss=dict(loss), **kwargs)


def apply_overrides(raw: dict[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    """Set `dotted.key=value` overrides (values parsed as YAML) in a nested dict, in place."""
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"override {item!r} is not of the form dotted.key=value")
        parts = key.split(".")
        node = raw
        for part in parts[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ValueError(f"override {item!r}: {part} is not a section")
            node = child
        node[parts[-1]] = yaml.safe_load(value)
    return raw


def load_config(path: str | Path | None, overrides: Sequence[str] = ()) -> TrainConfig:
    """Read a YAML config (None: all defaults) and apply overrides."""
    raw: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        try:
            raw = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as err:
            raise ValueError(f"{path} is not valid YAML: {err}") from None
        if not isinstance(raw, dict):
            raise ValueError(f"{path} must hold a mapping of config sections")
    return config_from_dict(apply_overrides(raw, overrides))
