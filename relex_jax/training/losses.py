"""GLiNER-Relex training losses (spec §10) on our padded, static-shape layout.

Layout (all padding carried by masks, so every shape is a bucket size):

- spans: entity logits and targets (B, W, K, C), `span_mask` (B, W, K), `entity_prompt_mask` (B, C);
- adjacency: probabilities and targets (B, E, E) over the selected entities, `entity_mask` (B, E);
- relations: logits and targets (B, E, E, R) on the pair grid, a target-pair mask (B, E, E) and
  `relation_prompt_mask` (B, R).

gliner's relation targets `rel_matrix` (B, N, R) are rows in its pair order instead (spec §2.7, §8):
row p of example b is the p-th pair (i, j) of

- `relations_layer="none"`: all i != j among the n_b selected entities, row-major;
- an adjacency head: the gold-adjacency pairs (adj[i, j] = 1, i != j), row-major, i.e. the sorted
  sampled pairs (positives and sampled negatives).

In both cases that is the p-th True cell, in row-major order, of our target-pair mask (for "none"
`all_pairs_mask(entity_mask)`, for an adjacency head the gold adjacency without its diagonal), and
`rel_matrix[b, p]` is `relation_targets[b, i, j]`. Cells outside the mask hold zeros and are ignored.

Entity alignment (which gold span is entity i) is the data pipeline's business; these functions
trust that the targets use the same entity order as the logits.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

IGNORE_INDEX = -100  # gliner's `ignore_index`: targets equal to it add nothing
EPS = 1e-6  # gliner's clamp floor before log: the loss per element saturates at -ln(1e-6)
REDUCTIONS = ("sum", "mean")
MASKINGS = ("global", "label", "span", "none")


@dataclasses.dataclass(frozen=True)
class LossConfig:
    """Loss hyper-parameters, named and defaulted as gliner's trainer / model config.

    Defaults are `gliner.training.trainer.TrainingArguments` (loss terms) and `gliner.config`
    (coefficients). gliner's loss functions take Python numbers, so these are static under jit.
    """

    focal_loss_alpha: float = -1.0  # TrainingArguments.focal_loss_alpha; < 0 disables the alpha weight
    focal_loss_gamma: float = 0.0  # TrainingArguments.focal_loss_gamma; 0 = plain (clamped) BCE
    rel_focal_loss_alpha: float | None = None  # TrainingArguments.rel_focal_loss_alpha; None = entity alpha
    rel_focal_loss_gamma: float | None = None  # TrainingArguments.rel_focal_loss_gamma; None = entity gamma
    focal_loss_prob_margin: float = 0.0  # TrainingArguments.focal_loss_prob_margin
    label_smoothing: float = 0.0  # TrainingArguments.label_smoothing
    loss_reduction: str = "sum"  # TrainingArguments.loss_reduction
    negatives: float = 1.0  # TrainingArguments.negatives: keep probability of negatives; 1.0 = keep all
    # TrainingArguments.masking is "global"; GLiNER.create_training_args passes "none". Both are
    # no-ops at negatives=1.0.
    masking: str = "global"
    use_span_width_weight: bool = False  # TrainingArguments.use_span_width_weight
    span_loss_coef: float = 1.0  # BaseGLiNERConfig.span_loss_coef
    adjacency_loss_coef: float = 1.0  # UniEncoderRelexConfig.adjacency_loss_coef
    relation_loss_coef: float = 1.0  # UniEncoderRelexConfig.relation_loss_coef

    def __post_init__(self):
        # gliner warns and falls back to "sum" on an unknown reduction; a typo should fail instead.
        if self.loss_reduction not in REDUCTIONS:
            raise ValueError(f"loss_reduction={self.loss_reduction!r}; supported: {', '.join(REDUCTIONS)}")
        if self.masking not in MASKINGS:
            raise ValueError(f"masking={self.masking!r}; supported: {', '.join(MASKINGS)}")

    @classmethod
    def from_relex_config(cls, config, **trainer_settings) -> "LossConfig":
        """The model's loss coefficients (`span_loss_coef`, `adjacency_loss_coef`,
        `relation_loss_coef`, kept in `RelexConfig.extra` from gliner_config.json) plus the trainer's
        loss settings (`focal_loss_alpha`, `loss_reduction`, ...)."""
        coefficients = {
            name: float(config.extra[name])
            for name in ("span_loss_coef", "adjacency_loss_coef", "relation_loss_coef")
            if name in config.extra
        }
        return cls(**{**coefficients, **trainer_settings})

    @property
    def relation_alpha(self) -> float:
        """Alpha of the adjacency and relation losses (the trainer's fallback to the entity one)."""
        return self.focal_loss_alpha if self.rel_focal_loss_alpha is None else self.rel_focal_loss_alpha

    @property
    def relation_gamma(self) -> float:
        return self.focal_loss_gamma if self.rel_focal_loss_gamma is None else self.rel_focal_loss_gamma

    @property
    def subsamples(self) -> bool:
        """Whether negatives are randomly dropped (so a key is needed). `rand < 1.0` always holds."""
        return self.masking != "none" and self.negatives < 1.0


def _clamp(x, low=None, high=None):
    """`torch.clamp`: the gradient passes at the boundaries too (`jnp.clip` halves it at ties)."""
    if low is not None:
        x = jnp.where(x < low, low, x)
    if high is not None:
        x = jnp.where(x > high, high, x)
    return x


def _power(x, exponent: float):
    """`x ** exponent` with torch's exact special cases (square, cube, sqrt) for the usual gammas."""
    if exponent in (1, 2, 3):
        return jax.lax.integer_pow(x, int(exponent))
    if exponent == 0.5:
        return jnp.sqrt(x)
    return x**exponent


def focal_loss_with_logits(
    x,
    y,
    alpha: float = -1.0,
    gamma: float = 0.0,
    prob_margin: float = 0.0,
    label_smoothing: float = 0.0,
    normalize_prob: bool = True,
):
    """gliner's elementwise focal loss (spec §10.1), float32.

    Probabilities are formed first, then clamped at 1e-6 and logged, exactly as gliner: this is
    not `log_sigmoid` / optax BCE, whose values differ once a logit passes |x| ~ 14. With
    `normalize_prob=False`, `x` already holds probabilities (the adjacency loss).

    Two deliberate differences, both where gliner gives NaN: entries with `y == -100` give 0
    (gliner multiplies them by 0 before the focal factor, a negative base to a fractional gamma
    makes that NaN); and where the focal base 1 - p_t is 0 (e.g. p below `prob_margin`, or a
    masked adjacency cell at probability 0) the gradient is 0, where torch's is NaN for gamma < 1.
    """
    x = jnp.asarray(x, jnp.float32)
    y = jnp.asarray(y, jnp.float32)
    valid = y != IGNORE_INDEX
    y = jnp.where(valid, y, 0.0)
    if label_smoothing != 0:
        y = jax.lax.stop_gradient(y * (1 - label_smoothing) + 0.5 * label_smoothing)
    p = jax.nn.sigmoid(x) if normalize_prob else x
    pm = _clamp(p - prob_margin, 0.0, 1.0)
    loss = -y * jnp.log(_clamp(p, EPS)) + -(1.0 - y) * jnp.log(_clamp(1.0 - pm, EPS))
    loss = jnp.where(valid, loss, 0.0)
    if gamma > 0:
        p_t = p * y + (1 - pm) * (1 - y)
        base = jnp.where(valid, 1 - p_t, 1.0)
        # Where base == 0 the loss is already 0; torch's pow gradient there is 0 * inf = NaN for
        # gamma < 1. Keep the forward and give the gradient 0 (the limit) instead.
        loss = loss * jnp.where(base > 0, _power(jnp.where(base > 0, base, 1.0), gamma), 0.0)
    if alpha >= 0:
        loss = (alpha * y + (1 - alpha) * (1 - y)) * loss
    return loss


def negative_mask(labels, masking: str, negatives: float, key=None):
    """gliner's negative subsampling mask (spec §10.2), 1.0 = keep, for labels (B, *items, C).

    The candidates for dropping are, per mode: "global" every entry with label 0; "label" every
    entry of a class with no positive among the example's items; "span" every entry of an item
    with no positive class. Each candidate is kept independently with probability `negatives`.
    Items are spans (W, K), entity pairs (E, E), or adjacency cells (E, E) with C = 1, matching
    gliner's flattened (B, items, C) tensors. With `negatives >= 1` or "none" this is all ones and
    needs no key.
    """
    if masking not in MASKINGS:
        raise ValueError(f"masking={masking!r}; supported: {', '.join(MASKINGS)}")
    labels = jnp.asarray(labels, jnp.float32)
    if masking == "none" or negatives >= 1.0:
        return jnp.ones(labels.shape, jnp.float32)
    if labels.ndim < 3:
        raise ValueError(f"labels must be (batch, *items, classes); got shape {labels.shape}")
    if key is None:
        raise ValueError(f"masking={masking!r} with negatives={negatives} drops entries at random: pass a key")
    if masking == "global":
        candidate = labels == 0
    elif masking == "label":
        candidate = labels.sum(axis=tuple(range(1, labels.ndim - 1)), keepdims=True) == 0
    else:
        candidate = labels.sum(axis=-1, keepdims=True) == 0
    keep = jax.random.uniform(key, labels.shape) < negatives
    return jnp.where(candidate, keep, True).astype(jnp.float32)


def _subsample(losses, labels, config: LossConfig, key):
    if not config.subsamples:
        return losses
    return losses * negative_mask(labels, config.masking, config.negatives, key)


def _reduce(losses, mask, count, reduction: str):
    """Masked sum, or sum / count ("mean"); 0 when nothing counts, as gliner."""
    total = jnp.where(mask, losses, 0.0).sum()
    if reduction == "sum":
        return total
    count = jnp.asarray(count, jnp.float32)
    return jnp.where(count > 0, total / jnp.maximum(count, 1.0), 0.0)


def span_loss(entity_logits, entity_targets, span_mask, entity_prompt_mask, config: LossConfig, key=None):
    """Entity loss over spans (gliner's `UniEncoderSpanModel.loss`, focal variant).

    entity_logits / entity_targets (B, W, K, C), span_mask (B, W, K), entity_prompt_mask (B, C).
    "mean" divides by the number of valid spans, not spans x classes (gliner's choice). With
    `use_span_width_weight`, positives of width k (1-based) weigh 1 + log(k).
    """
    targets = jnp.asarray(entity_targets, jnp.float32)
    losses = focal_loss_with_logits(
        entity_logits, targets, config.focal_loss_alpha, config.focal_loss_gamma,
        config.focal_loss_prob_margin, config.label_smoothing,
    )
    losses = _subsample(losses, targets, config, key)
    if config.use_span_width_weight:
        # As gliner: w = 1 + log(k) in float32, then 1 + (w - 1) * y on positives.
        width = 1.0 + jnp.log(jnp.arange(1, targets.shape[2] + 1, dtype=jnp.float32))
        losses = losses * (1.0 + (width[:, None] - 1.0) * jnp.maximum(targets, 0.0))
    mask = span_mask[..., None].astype(bool) & entity_prompt_mask[:, None, None, :].astype(bool)
    return _reduce(losses, mask, span_mask.astype(jnp.float32).sum(), config.loss_reduction)


def adjacency_loss(adjacency, adjacency_targets, entity_mask, config: LossConfig, key=None):
    """Adjacency-head loss (gliner's `adj_loss`): focal on probabilities, no second sigmoid.

    adjacency / adjacency_targets (B, E, E), entity_mask (B, E). Every pair of real entities
    counts, the diagonal included (its target is 0), as gliner. Uses the relation alpha / gamma.
    """
    targets = jnp.asarray(adjacency_targets, jnp.float32)
    losses = focal_loss_with_logits(
        adjacency, targets, config.relation_alpha, config.relation_gamma,
        config.focal_loss_prob_margin, config.label_smoothing, normalize_prob=False,
    )
    losses = _subsample(losses[..., None], targets[..., None], config, key)[..., 0]
    entity_mask = entity_mask.astype(bool)
    mask = entity_mask[:, :, None] & entity_mask[:, None, :]
    return _reduce(losses, mask, mask.sum(), config.loss_reduction)


def relation_loss(relation_logits, relation_targets, pair_mask, relation_prompt_mask, config: LossConfig, key=None):
    """Relation loss over target pairs (gliner's `rel_loss`).

    relation_logits / relation_targets (B, E, E, R); `pair_mask` (B, E, E) marks the pairs gliner
    scores in training (module docstring); relation_prompt_mask (B, R). "mean" divides by the
    number of (pair, relation class) entries. Uses the relation alpha / gamma.
    """
    targets = jnp.asarray(relation_targets, jnp.float32)
    losses = focal_loss_with_logits(
        relation_logits, targets, config.relation_alpha, config.relation_gamma,
        config.focal_loss_prob_margin, config.label_smoothing,
    )
    losses = _subsample(losses, targets, config, key)
    mask = pair_mask[..., None].astype(bool) & relation_prompt_mask[:, None, None, :].astype(bool)
    return _reduce(losses, mask, mask.sum(), config.loss_reduction)


def combine_losses(config: LossConfig, span=None, relation=None, adjacency=None, has_relation_classes=True):
    """The training loss of gliner's relex forward (spec §10.4).

    `span` is None when the batch has no entity class (gliner's C' == 0); `relation` is None when
    there are no relation targets, and `adjacency` None without an adjacency head. gliner scales
    the span loss by `span_loss_coef` only when it adds relation terms, which it does only if the
    batch has at least one relation class: pass `has_relation_classes =
    relation_prompt_mask.any()` (it may be traced). Where gliner's loss is None we return 0.
    """
    span_value = jnp.float32(0.0) if span is None else jnp.asarray(span, jnp.float32)
    if relation is None:
        return span_value
    joint = span_value * config.span_loss_coef  # summed in gliner's order: span, adjacency, relation
    if adjacency is not None:
        joint = joint + adjacency * config.adjacency_loss_coef
    joint = joint + relation * config.relation_loss_coef
    return jnp.where(has_relation_classes, joint, span_value)
