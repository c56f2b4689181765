"""The optimiser of gliner's trainer (spec §13.4) in optax: AdamW with four parameter groups,
HF learning-rate schedules with warmup, global-norm clipping and gradient accumulation.

Parameter groups, as gliner's `Trainer.create_optimizer` (which always sees `others_lr` set, since
`GLiNER.create_training_args` fills it):

| group              | learning rate   | weight decay          |
|--------------------|-----------------|-----------------------|
| `others_decay`     | `others_lr`     | `others_weight_decay` |
| `others_no_decay`  | `others_lr`     | 0                     |
| `encoder_decay`    | `learning_rate` | `weight_decay`        |
| `encoder_no_decay` | `learning_rate` | 0                     |

"Encoder" is gliner's `token_rep_layer` (its name test `"token_rep_layer" in name`): our
`backbone`, `layers_fuser` and `projection`. "No decay" is every parameter of a LayerNorm (HF's
`ALL_LAYERNORM_LAYERS`) and every parameter whose torch name contains "bias": our leaves under a
`LayerNorm` module and leaves named `bias`, `input_bias`, `hidden_bias` (the LSTM's `bias_ih_l0`,
`bias_hh_l0`). BatchNorm scales (TuckER) are not LayerNorms, so they decay, as in gliner.

Update order per optimizer step, as HF's Trainer with `adamw_torch`: the (accumulated, averaged)
gradient is clipped to global norm `max_grad_norm` with torch's formula
(`min(1, max_norm / (norm + 1e-6))`), then Adam moments with bias correction, then
`-lr_t * (adam + wd * param)`, which is torch.optim.AdamW's decoupled decay
`p *= 1 - lr_t * wd` before the Adam step. The schedule is evaluated at the optimizer-step count,
starting at 0 (so with warmup the first update has learning rate 0, as in HF).

Gradient accumulation: `optax.MultiSteps` averages `gradient_accumulation_steps` micro-batch
gradients and applies the chain above once per k calls (HF scales each micro-batch loss by 1/k
and sums the gradients: the same mean). Schedules count optimizer steps, not micro-batches.

Precision: parameters and optimizer state (Adam moments, accumulated gradients) are float32. With
`bf16=True` the *model* computes in bfloat16 (`RelexModule(dtype=compute_dtype)`, what
`relex_jax.training.step.training_module` builds): each layer casts its float32 parameters to
bfloat16 where it uses them, so gradients arrive in float32 at the parameters (the transpose of
the cast), and the losses are computed in float32. Softmax, LayerNorm and relative-position
scores stay float32 inside the model.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable

import jax
import jax.numpy as jnp
import optax

GROUPS = ("others_decay", "others_no_decay", "encoder_decay", "encoder_no_decay")  # gliner's group order
ENCODER_MODULES = ("backbone", "layers_fuser", "projection")  # gliner's `token_rep_layer`
NO_DECAY_MODULES = ("LayerNorm",)
NO_DECAY_LEAVES = ("bias", "input_bias", "hidden_bias")
SCHEDULES = ("linear", "cosine", "constant", "constant_with_warmup")
TORCH_CLIP_EPS = 1e-6  # torch.nn.utils.clip_grad_norm_: max_norm / (total_norm + 1e-6)


@dataclasses.dataclass(frozen=True)
class OptimConfig:
    """Optimiser settings, named and defaulted as `GLiNER.create_training_args` / HF TrainingArguments.

    Deviation: gliner computes `others_weight_decay or weight_decay`, so an explicit 0.0 silently
    becomes `weight_decay`. Here None means "same as weight_decay" and 0.0 means 0; pass None to
    reproduce gliner's default. `others_lr` None means `learning_rate`, as gliner.
    """

    learning_rate: float = 5e-5  # encoder (token_rep_layer) learning rate
    weight_decay: float = 0.01  # encoder weight decay
    others_lr: float | None = None  # everything else; None = learning_rate
    others_weight_decay: float | None = None  # None = weight_decay
    adam_beta1: float = 0.9
    adam_beta2: float = 0.999
    adam_epsilon: float = 1e-8
    lr_scheduler_type: str = "linear"  # linear | cosine | constant | constant_with_warmup (HF get_scheduler)
    warmup_ratio: float = 0.1  # used when warmup_steps == 0: ceil(max_steps * warmup_ratio)
    warmup_steps: float = 0  # HF: >= 1 a step count, in (0, 1) a ratio of max_steps
    max_steps: int = 10000  # optimizer steps (HF's num_training_steps)
    max_grad_norm: float | None = 1.0  # None or <= 0: no clipping (as HF)
    gradient_accumulation_steps: int = 1
    bf16: bool = False  # compute dtype of the model; params and optimizer state stay float32

    def __post_init__(self):
        if self.lr_scheduler_type not in SCHEDULES:
            raise ValueError(f"lr_scheduler_type={self.lr_scheduler_type!r}; supported: {', '.join(SCHEDULES)}")
        if not 0.0 <= self.warmup_ratio <= 1.0:
            raise ValueError("warmup_ratio must lie in [0, 1]")
        if self.warmup_steps < 0 or self.max_steps < 1 or self.gradient_accumulation_steps < 1:
            raise ValueError("warmup_steps >= 0, max_steps >= 1 and gradient_accumulation_steps >= 1 are required")

    @property
    def encoder_lr(self) -> float:
        return self.learning_rate

    @property
    def head_lr(self) -> float:
        return self.learning_rate if self.others_lr is None else self.others_lr

    @property
    def head_weight_decay(self) -> float:
        return self.weight_decay if self.others_weight_decay is None else self.others_weight_decay

    @property
    def compute_dtype(self):
        return jnp.bfloat16 if self.bf16 else jnp.float32

    @property
    def num_warmup_steps(self) -> int:
        """gliner's `TrainingArguments.get_warmup_steps`: the ratio when warmup_steps is 0, else HF's rule."""
        if self.warmup_steps == 0:
            return math.ceil(self.max_steps * self.warmup_ratio)
        if self.warmup_steps >= 1:
            return int(self.warmup_steps)
        return math.ceil(self.max_steps * self.warmup_steps)

    def group_settings(self) -> dict[str, tuple[float, float]]:
        """{group: (peak learning rate, weight decay)}."""
        return {
            "others_decay": (self.head_lr, self.head_weight_decay),
            "others_no_decay": (self.head_lr, 0.0),
            "encoder_decay": (self.encoder_lr, self.weight_decay),
            "encoder_no_decay": (self.encoder_lr, 0.0),
        }


def lr_factor_schedule(config: OptimConfig) -> Callable[[Any], jax.Array]:
    """HF's LambdaLR multiplier for `lr_scheduler_type` at optimizer step `count` (0-based), float32."""
    warmup, total, kind = config.num_warmup_steps, config.max_steps, config.lr_scheduler_type

    def factor(count):
        step = jnp.asarray(count, jnp.float32)
        if kind == "constant":  # HF's get_constant_schedule ignores warmup
            return jnp.ones_like(step)
        if kind == "constant_with_warmup":
            after = jnp.ones_like(step)
        elif kind == "linear":
            after = jnp.maximum(0.0, (total - step) / max(1, total - warmup))
        else:  # cosine with HF's num_cycles 0.5: 0.5 (1 + cos(pi p)) = sin(pi (1 - p) / 2)^2, the second
            # form accurate in float32 down to the last steps (1 - p is an exact integer ratio)
            remaining = (total - step) / max(1, total - warmup)
            after = jnp.square(jnp.sin(0.5 * math.pi * remaining))
        return jnp.where(step < warmup, step / max(1, warmup), after)

    return factor


def learning_rate_schedules(config: OptimConfig) -> dict[str, optax.Schedule]:
    """{group: schedule(count) -> learning rate} for the four groups."""
    factor = lr_factor_schedule(config)
    return {group: (lambda count, peak=peak: peak * factor(count)) for group, (peak, _) in config.group_settings().items()}


def _path_names(path) -> list[str]:
    names = []
    for key in path:
        for attr in ("key", "name", "idx"):
            if hasattr(key, attr):
                names.append(str(getattr(key, attr)))
                break
    return names


def parameter_group(names: list[str]) -> str:
    """The group of one parameter, given its path in the params tree (e.g. ["backbone", ..., "bias"])."""
    encoder = bool(names) and names[0] in ENCODER_MODULES
    no_decay = any(n in NO_DECAY_MODULES for n in names[:-1]) or (bool(names) and names[-1] in NO_DECAY_LEAVES)
    return ("encoder_" if encoder else "others_") + ("no_decay" if no_decay else "decay")


def parameter_groups(params) -> Any:
    """A tree like `params` (the unboxed params collection) holding each leaf's group name."""
    return jax.tree_util.tree_map_with_path(lambda path, _: parameter_group(_path_names(path)), params)


def clip_by_global_norm_torch(max_norm: float) -> optax.GradientTransformation:
    """torch.nn.utils.clip_grad_norm_: scale by min(1, max_norm / (global_norm + 1e-6))."""

    def init(params):
        del params
        return optax.EmptyState()

    def update(updates, state, params=None):
        del params
        norm = optax.global_norm(updates)
        scale = jnp.minimum(1.0, max_norm / (norm + TORCH_CLIP_EPS))
        return jax.tree_util.tree_map(lambda g: (g * scale).astype(g.dtype), updates), state

    return optax.GradientTransformation(init, update)


def make_optimizer(config: OptimConfig) -> optax.GradientTransformation:
    """The full optax transformation (see the module docstring); state is float32."""
    schedules = learning_rate_schedules(config)
    per_group = {}
    for group, (_, decay) in config.group_settings().items():
        parts = [optax.add_decayed_weights(decay)] if decay else []
        per_group[group] = optax.chain(*parts, optax.scale_by_learning_rate(schedules[group]))
    parts = []
    if config.max_grad_norm is not None and config.max_grad_norm > 0:
        parts.append(clip_by_global_norm_torch(config.max_grad_norm))
    parts += [
        optax.scale_by_adam(config.adam_beta1, config.adam_beta2, config.adam_epsilon, mu_dtype=jnp.float32),
        optax.multi_transform(per_group, parameter_groups),
    ]
    tx = optax.chain(*parts)
    if config.gradient_accumulation_steps > 1:
        tx = optax.MultiSteps(tx, every_k_schedule=config.gradient_accumulation_steps, use_grad_mean=True)
        tx = tx.gradient_transformation()
    return tx
