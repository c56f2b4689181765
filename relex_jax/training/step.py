"""The training step: gliner's training forward, its three losses, and a jitted AdamW update.

- `StepBatch`: the arrays of a collated `TrainingBatch` (`relex_jax.data.collate.collate`), a
  pytree for `jit` (numpy leaves are fine; shardings can be attached to it later);
  `PackedStepBatch` the same with the texts packed into shared encoder rows.
- `compute_loss` / `loss_fn(params, batch, ...)`: `RelexModule.train_outputs` (gold entities and
  gold pairs, as gliner's forward with labels, spec §7, §8.2) and the span, adjacency and relation
  losses combined as gliner's forward (spec §10.4, `relex_jax.training.losses`).
- `TrainState` (step, params, opt_state, batch_stats) and `make_train_step(...)`, which returns
  `train_step(state, batch, rng) -> (state, metrics)` under `jax.jit`, the state donated.
  Sharding comes later: `make_train_step` forwards `in_shardings` / `out_shardings` (any
  `jax.jit` keyword) untouched, and nothing here assumes a device layout.

Randomness: `rng` is folded with the state's step, then split into the dropout key (the rng
collection "dropout", as every `nn.Dropout` in `relex_jax.modeling` uses) and, when
`LossConfig.subsamples`, the keys of the negative-subsampling masks.
"""

from __future__ import annotations

from typing import Any, Callable

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
import optax

from relex_jax.config import RelexConfig
from relex_jax.data.packing import PackedBatch
from relex_jax.data.collate import TrainingBatch
from relex_jax.modeling.relex import RelexModule, RelexOutput
from relex_jax.training.losses import LossConfig, adjacency_loss, combine_losses, relation_loss, span_loss
from relex_jax.training.optim import OptimConfig, learning_rate_schedules, make_optimizer

DROPOUT_RNG = "dropout"  # flax's nn.Dropout default rng collection, used by every module here


@flax.struct.dataclass
class StepBatch:
    """One training batch as arrays (shapes: `TrainingBatch`, `relex_jax.data.processor.Batch`)."""

    input_ids: Any  # (B, T)
    attention_mask: Any  # (B, T)
    words_mask: Any  # (B, T)
    text_lengths: Any  # (B,)
    span_mask: Any  # (B, W, K)
    entity_prompt_index: Any  # (B, C)
    entity_prompt_mask: Any  # (B, C)
    relation_prompt_index: Any  # (B, R)
    relation_prompt_mask: Any  # (B, R)
    entity_labels: Any  # (B, W, K, C) float32
    entity_index: Any  # (B, E) gold entities' flat span indices
    entity_mask: Any  # (B, E)
    relation_labels: Any  # (B, E, E, R) float32
    pair_mask: Any  # (B, E, E) the pairs gliner scores in training
    adjacency: Any = None  # (B, E, E) gold adjacency (adjacency heads only)

    @classmethod
    def from_training_batch(cls, batch: TrainingBatch) -> "StepBatch":
        inputs = batch.inputs
        return cls(
            *(np.asarray(x) for x in inputs.model_inputs()),
            np.asarray(batch.entity_labels, np.float32),
            np.asarray(batch.entity_index, np.int32),
            np.asarray(batch.entity_mask, bool),
            np.asarray(batch.relation_labels, np.float32),
            np.asarray(batch.pair_mask, bool),
            None if batch.adjacency is None else np.asarray(batch.adjacency, np.float32),
        )

    def model_inputs(self) -> tuple:
        return (
            self.input_ids, self.attention_mask, self.words_mask, self.text_lengths, self.span_mask,
            self.entity_prompt_index, self.entity_prompt_mask, self.relation_prompt_index, self.relation_prompt_mask,
        )


@flax.struct.dataclass
class PackedStepBatch:
    """A training batch whose texts share packed encoder rows (`relex_jax.data.packing`): the
    token grid (rows, T), then per-text arrays over N text slots (unused slots fully masked)."""

    input_ids: Any  # (rows, T)
    segment_ids: Any  # (rows, T)
    position_ids: Any  # (rows, T)
    words_mask: Any  # (rows, T)
    token_texts: Any  # (rows, T)
    text_lengths: Any  # (N,)
    span_mask: Any  # (N, W, K)
    entity_prompt_index: Any  # (N, C) flat grid positions
    entity_prompt_mask: Any  # (N, C)
    relation_prompt_index: Any  # (N, R)
    relation_prompt_mask: Any  # (N, R)
    word_texts: Any  # (F,) the step's words end to end (`relex_jax.data.packing.word_list`)
    word_positions: Any  # (F,)
    entity_labels: Any  # (N, W, K, C)
    entity_index: Any  # (N, E)
    entity_mask: Any  # (N, E)
    relation_labels: Any  # (N, E, E, R)
    pair_mask: Any  # (N, E, E)
    adjacency: Any = None  # (N, E, E)

    @classmethod
    def from_training_batch(cls, batch: TrainingBatch, packed: PackedBatch) -> "PackedStepBatch":
        """`packed` is `pack_batch(batch.inputs, ..., words=F)`; the targets are padded to its N slots."""
        if packed.word_texts is None:
            raise ValueError("packed training batches need the word list: pack_batch(..., words=...)")
        slots = len(packed.text_lengths)

        def per_text(x, dtype):
            x = np.asarray(x, dtype)
            return np.pad(x, [(0, slots - len(x))] + [(0, 0)] * (x.ndim - 1))

        return cls(
            *(np.asarray(x) for x in packed.model_inputs()), packed.word_texts, packed.word_positions,
            per_text(batch.entity_labels, np.float32),
            per_text(batch.entity_index, np.int32),
            per_text(batch.entity_mask, bool),
            per_text(batch.relation_labels, np.float32),
            per_text(batch.pair_mask, bool),
            None if batch.adjacency is None else per_text(batch.adjacency, np.float32),
        )

    def model_inputs(self) -> tuple:
        return (
            self.input_ids, self.segment_ids, self.position_ids, self.words_mask, self.token_texts, self.text_lengths,
            self.span_mask, self.entity_prompt_index, self.entity_prompt_mask, self.relation_prompt_index,
            self.relation_prompt_mask, self.word_texts, self.word_positions,
        )


@flax.struct.dataclass
class TrainState:
    """Everything a step changes. `step` counts `train_step` calls (micro-batches with gradient
    accumulation); `batch_stats` is empty unless the model has BatchNorm (the TuckER scorer)."""

    step: jax.Array
    params: Any
    opt_state: Any
    batch_stats: Any = flax.struct.field(default_factory=dict)


def training_module(config: RelexConfig, optim_config: OptimConfig | None = None, **kwargs) -> RelexModule:
    """The model with `optim_config`'s compute dtype (bfloat16 with `bf16=True`), float32 params."""
    dtype = (optim_config or OptimConfig()).compute_dtype
    return RelexModule(config, dtype=dtype, param_dtype=jnp.float32, **kwargs)


def create_train_state(variables, optimizer: optax.GradientTransformation) -> TrainState:
    """Initial state from model variables (`RelexModule.init` or a converted checkpoint).

    The state takes the arrays as they are: `train_step` donates them, so on GPU / TPU the
    `variables` passed here are invalid after the first step (copy them first to keep them).
    """
    params = nn.meta.unbox(variables["params"])
    batch_stats = nn.meta.unbox(variables.get("batch_stats", {}))
    return TrainState(jnp.zeros((), jnp.int32), params, optimizer.init(params), batch_stats)


def train_forward(
    module: RelexModule, params, batch: StepBatch, batch_stats=None, dropout_rng=None, deterministic: bool = True
) -> tuple[RelexOutput, Any]:
    """The training forward; returns (outputs, updated batch_stats or the ones passed in)."""
    if module.config.has_adjacency_head and batch.adjacency is None:
        raise ValueError(
            f"the model has an adjacency head ({module.config.relations_layer!r}) but the batch has no gold "
            "adjacency: collate with CollateConfig(adjacency=True) (CollateConfig.from_relex_config sets it)"
        )
    if not deterministic and dropout_rng is None:
        raise ValueError("deterministic=False (dropout on) needs a dropout rng")
    variables = {"params": params}
    if batch_stats:
        variables["batch_stats"] = batch_stats
    mutable = ["batch_stats"] if batch_stats and not deterministic else False
    method = RelexModule.packed_train_outputs if isinstance(batch, PackedStepBatch) else RelexModule.train_outputs
    result = module.apply(
        variables, *batch.model_inputs(), batch.entity_index, batch.entity_mask, batch.pair_mask, deterministic,
        method=method, rngs={} if dropout_rng is None else {DROPOUT_RNG: dropout_rng},
        mutable=mutable,
    )
    if mutable:
        out, updates = result
        return out, updates["batch_stats"]
    return result, batch_stats


def compute_loss(
    params,
    batch: StepBatch,
    *,
    module: RelexModule,
    loss_config: LossConfig,
    batch_stats=None,
    rng=None,
    deterministic: bool | None = None,
) -> tuple[jax.Array, tuple[dict[str, jax.Array], Any]]:
    """(total loss, (metrics, updated batch_stats)). `deterministic` defaults to `rng is None`."""
    if deterministic is None:
        deterministic = rng is None
    dropout_rng = loss_rng = None
    if rng is not None:
        dropout_rng, loss_rng = jax.random.split(rng)
    if loss_config.subsamples and loss_rng is None:
        raise ValueError(f"masking={loss_config.masking!r} with negatives={loss_config.negatives} needs an rng")
    keys = jax.random.split(loss_rng, 3) if loss_config.subsamples else (None, None, None)

    out, batch_stats = train_forward(module, params, batch, batch_stats, dropout_rng, deterministic)
    span = span_loss(out.entity_logits, batch.entity_labels, batch.span_mask, batch.entity_prompt_mask, loss_config, keys[0])
    relation = relation_loss(
        out.relation_logits, batch.relation_labels, out.pair_mask, batch.relation_prompt_mask, loss_config, keys[2]
    )
    adjacency = None
    if out.adjacency is not None:
        adjacency = adjacency_loss(out.adjacency, batch.adjacency, out.entity_mask, loss_config, keys[1])
    has_relation_classes = jnp.asarray(batch.relation_prompt_mask).any()
    total = combine_losses(loss_config, span, relation, adjacency, has_relation_classes)
    metrics = {"loss": total, "span_loss": span, "relation_loss": relation}
    if adjacency is not None:
        metrics["adjacency_loss"] = adjacency
    return total, (metrics, batch_stats)


def loss_fn(params, batch: StepBatch, *, module: RelexModule, loss_config: LossConfig, batch_stats=None, rng=None,
            deterministic: bool | None = None) -> tuple[jax.Array, dict[str, jax.Array]]:
    """(total loss, {"loss", "span_loss", "relation_loss", "adjacency_loss" (with a head)}): gliner's
    training loss on `batch`; terms are before their coefficients."""
    loss, (metrics, _) = compute_loss(
        params, batch, module=module, loss_config=loss_config, batch_stats=batch_stats, rng=rng,
        deterministic=deterministic,
    )
    return loss, metrics


def make_train_step(
    module: RelexModule,
    loss_config: LossConfig,
    optim_config: OptimConfig,
    *,
    optimizer: optax.GradientTransformation | None = None,
    dropout: bool = True,
    donate: bool = True,
    jit: bool = True,
    **jit_kwargs,
) -> Callable[[TrainState, StepBatch, jax.Array], tuple[TrainState, dict[str, jax.Array]]]:
    """`train_step(state, batch, rng) -> (state, metrics)`.

    `optimizer` defaults to `make_optimizer(optim_config)` (pass the one the state was made with
    if it differs). `dropout=False` runs the model deterministically (parity checks). Metrics:
    the loss terms, `grad_norm` (global, before clipping, of this micro-batch) and the two
    learning rates of the optimizer step this call contributes to. `jit_kwargs` go to `jax.jit`
    (e.g. `in_shardings`, `out_shardings`).
    """
    optimizer = make_optimizer(optim_config) if optimizer is None else optimizer
    schedules = learning_rate_schedules(optim_config)
    accumulation = optim_config.gradient_accumulation_steps
    grad_fn = jax.value_and_grad(compute_loss, has_aux=True)

    def train_step(state: TrainState, batch: StepBatch, rng):
        step_rng = jax.random.fold_in(rng, state.step)
        (_, (metrics, batch_stats)), grads = grad_fn(
            state.params, batch, module=module, loss_config=loss_config, batch_stats=state.batch_stats,
            rng=step_rng, deterministic=not dropout,
        )
        updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        count = state.step // accumulation
        metrics = dict(
            metrics,
            grad_norm=optax.global_norm(grads),
            learning_rate=schedules["encoder_decay"](count),
            others_lr=schedules["others_decay"](count),
        )
        new_state = state.replace(step=state.step + 1, params=params, opt_state=opt_state, batch_stats=batch_stats)
        return new_state, metrics

    if not jit:
        return train_step
    return jax.jit(train_step, donate_argnums=(0,) if donate else (), **jit_kwargs)


__all__ = [
    "DROPOUT_RNG",
    "PackedStepBatch",
    "StepBatch",
    "TrainState",
    "compute_loss",
    "create_train_state",
    "loss_fn",
    "make_train_step",
    "train_forward",
    "training_module",
]
