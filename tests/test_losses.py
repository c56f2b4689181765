"""Training losses against gliner's own: the focal loss elementwise (values and gradients), the
negative-subsampling masks by structure, and the span / adjacency / relation losses on random
batches laid out both ways.

gliner's loss methods use nothing of the model but `_loss`, so they are called on an instance made
without `__init__` (no backbone to build). Our tensors are padded to larger buckets than gliner's
(more words, classes, relation classes and entity slots, with garbage logits in the padding), so
the comparisons also check that padding adds nothing. The conversion between gliner's pair rows
and our (E, E) pair grid lives here, built from gliner's own pair builders.
"""

from __future__ import annotations

import dataclasses
import inspect
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from relex_jax.modeling.relations import all_pairs_mask
from relex_jax.training.losses import (
    MASKINGS,
    LossConfig,
    adjacency_loss,
    combine_losses,
    focal_loss_with_logits,
    negative_mask,
    relation_loss,
    span_loss,
)

torch = pytest.importorskip("torch")
pytest.importorskip("gliner")

from gliner.config import BaseGLiNERConfig, UniEncoderRelexConfig  # noqa: E402
from gliner.modeling.base import UniEncoderSpanRelexModel  # noqa: E402
from gliner.modeling.loss_functions import focal_loss_with_logits as gliner_focal  # noqa: E402
from gliner.modeling.utils import build_all_entity_pairs, build_entity_pairs  # noqa: E402
from gliner.training.trainer import TrainingArguments  # noqa: E402

REFERENCE = object.__new__(UniEncoderSpanRelexModel)  # only its loss methods are used
SATURATED = -math.log(np.float32(1e-6))  # gliner's per-element ceiling

# (alpha, gamma, prob_margin, label_smoothing)
FOCAL_SETTINGS = [
    (-1.0, 0.0, 0.0, 0.0),  # trainer default: clamped BCE
    (0.25, 2.0, 0.0, 0.0),
    (0.75, 1.5, 0.1, 0.1),
    (0.5, 0.5, 0.3, 0.0),  # gamma < 1 with a margin: torch's gradient is NaN where p < margin
    (-1.0, 1.0, 0.05, 0.2),
    (0.3, 3.0, 0.0, 0.05),
]


# --------------------------------------------------------------------------------------------------
# focal_loss_with_logits, elementwise
# --------------------------------------------------------------------------------------------------


def focal_inputs(normalize_prob: bool, n: int = 6000, seed: int = 0):
    """Logits (or probabilities) with saturated values, hard 0/1 targets, soft targets and -100s."""
    rng = np.random.default_rng(seed)
    if normalize_prob:
        x = 6.0 * rng.standard_normal(n)
        x[:300] = rng.uniform(14.0, 40.0, 300) * rng.choice([-1.0, 1.0], 300)  # |x| > 14
    else:  # probabilities, exact 0 and 1 included (masked adjacency cells, saturated sigmoids)
        x = np.clip(rng.uniform(-0.2, 1.2, n), 0.0, 1.0)
    y = rng.integers(0, 2, n).astype(np.float64)
    y[300:500] = 0.3
    y[500:600] = -100.0
    weights = rng.standard_normal(n)  # so that the gradient of sum(w * loss) is elementwise
    return x.astype(np.float32), y.astype(np.float32), weights.astype(np.float32)


@pytest.mark.parametrize("normalize_prob", [True, False])
@pytest.mark.parametrize("alpha, gamma, margin, smoothing", FOCAL_SETTINGS)
def test_focal_matches_gliner_values_and_gradients(normalize_prob, alpha, gamma, margin, smoothing):
    x, y, w = focal_inputs(normalize_prob)
    kwargs = dict(
        alpha=alpha, gamma=gamma, prob_margin=margin, label_smoothing=smoothing, normalize_prob=normalize_prob
    )

    xt = torch.tensor(x, requires_grad=True)
    ref = gliner_focal(xt, torch.tensor(y), **kwargs)
    (ref * torch.tensor(w)).sum().backward()
    ref, ref_grad = ref.detach().numpy(), xt.grad.numpy()

    ours = np.asarray(focal_loss_with_logits(x, y, **kwargs))
    grad = np.asarray(jax.grad(lambda v: (focal_loss_with_logits(v, y, **kwargs) * w).sum())(jnp.asarray(x)))

    valid = y != -100
    # Values. Without the sigmoid the two agree to float32 rounding. With it, XLA's and torch's
    # float32 sigmoids differ by one ulp on ~0.4% of inputs (different exp), which -log(1 - p)
    # amplifies by up to 1 / (1 - p): hence the small absolute slack (the loss reaches 13.8).
    atol = 2e-6 if normalize_prob else 0.0
    np.testing.assert_allclose(ours[valid], ref[valid], rtol=1e-6, atol=atol)
    assert np.all(ours[~valid] == 0.0)  # gliner: 0, or NaN with a fractional gamma (its quirk)
    assert np.all(np.isfinite(grad))

    # Gradients, where torch's is a number: 1e-5 relative, with slack at 1e-6 of the largest.
    finite = np.isfinite(ref_grad) & valid
    np.testing.assert_allclose(grad[finite], ref_grad[finite], rtol=1e-5, atol=1e-6 * np.abs(ref_grad[finite]).max())
    # torch's NaNs (gamma < 1, focal base 1 - p_t == 0, where the loss is 0): we give 0, the limit.
    assert np.all(grad[valid & ~np.isfinite(ref_grad)] == 0.0)
    assert np.all(grad[~valid] == 0.0)
    if gamma < 1 and margin > 0:
        assert (~np.isfinite(ref_grad[valid])).any(), "the NaN case above was not exercised"


def test_focal_saturates_like_gliner_not_like_log_sigmoid():
    """Wrong-side logits past |x| ~ 14 cost exactly -ln(1e-6), with zero gradient (spec §10.1)."""
    x = np.array([-20.0, 20.0, -30.0, 30.0, -14.5, -13.0], np.float32)
    y = np.array([1.0, 0.0, 1.0, 0.0, 1.0, 1.0], np.float32)
    loss = np.asarray(focal_loss_with_logits(x, y))
    grad = np.asarray(jax.grad(lambda v: focal_loss_with_logits(v, y).sum())(jnp.asarray(x)))
    assert np.all(loss[:5] == np.float32(SATURATED))  # log_sigmoid would give 20, 20, 30, 30, 14.5
    assert np.all(grad[:5] == 0.0)
    assert 12.99 < loss[5] < 13.01 and grad[5] < -0.99  # below the clamp: the usual -log(p)


def test_focal_label_smoothing_has_no_target_gradient():
    x = jnp.array([0.3, -1.2, 2.0])
    grad = jax.grad(lambda y: focal_loss_with_logits(x, y, label_smoothing=0.1).sum())(jnp.array([1.0, 0.0, 1.0]))
    assert np.all(np.asarray(grad) == 0.0)
    plain = jax.grad(lambda y: focal_loss_with_logits(x, y).sum())(jnp.array([1.0, 0.0, 1.0]))
    assert np.all(np.asarray(plain) != 0.0)  # without smoothing the targets are differentiable, as torch


# --------------------------------------------------------------------------------------------------
# Negative subsampling (gliner's `_loss` masking)
# --------------------------------------------------------------------------------------------------


def sparse_labels(shape, seed: int = 0, rate: float = 0.04):
    """0/1 labels with all-negative items, all-negative classes per example and a positive-free example."""
    rng = np.random.default_rng(seed)
    labels = (rng.uniform(size=shape) < rate).astype(np.float32)
    labels[..., -1] = 0.0  # a class with no positive anywhere
    labels[-1] = 0.0  # an example with no positive at all
    return labels


@pytest.mark.parametrize("masking", MASKINGS)
def test_negative_mask_is_a_noop_at_negatives_one(masking):
    labels = sparse_labels((3, 6, 4, 5))
    mask = negative_mask(labels, masking, 1.0, key=None)  # no key needed: nothing is random
    assert np.all(np.asarray(mask) == 1.0)
    config = LossConfig(masking=masking, negatives=1.0)
    assert not config.subsamples
    logits = np.random.default_rng(1).standard_normal(labels.shape).astype(np.float32)
    span_mask = np.ones(labels.shape[:3], bool)
    prompts = np.ones((3, 5), bool)
    plain = span_loss(logits, labels, span_mask, prompts, LossConfig(masking="none"))
    assert span_loss(logits, labels, span_mask, prompts, config) == plain  # bit for bit


@pytest.mark.parametrize("masking", ["global", "label", "span"])
def test_negative_mask_structure_at_half(masking):
    labels = sparse_labels((4, 40, 5, 6))
    mask = np.asarray(jax.jit(negative_mask, static_argnums=(1, 2))(labels, masking, 0.5, jax.random.key(3)))
    assert set(np.unique(mask)) == {0.0, 1.0}
    if masking == "global":
        candidate = labels == 0
    elif masking == "label":  # a class with no positive among the example's spans
        candidate = np.broadcast_to(labels.sum(axis=(1, 2), keepdims=True) == 0, labels.shape)
    else:  # a span with no positive class
        candidate = np.broadcast_to(labels.sum(axis=-1, keepdims=True) == 0, labels.shape)
    assert np.all(mask[~candidate] == 1.0)  # positives, and whatever shares a row/column with one
    assert (~candidate).sum() > 100 and candidate.sum() > 1000
    assert abs(mask[candidate].mean() - 0.5) < 0.05  # 4 sigma at 1000 draws
    # Each candidate entry is drawn on its own, not once per span (or per class): all-candidate
    # groups come out mixed (a group of 6 is uniform by chance 2 / 64 of the time).
    def groups(a):  # per class over the example's spans for "label", per span over classes otherwise
        return a.transpose(0, 3, 1, 2).reshape(4 * 6, -1) if masking == "label" else a.reshape(-1, 6)

    mixed = [g.min() != g.max() for g, c in zip(groups(mask), groups(candidate)) if c.all()]
    assert len(mixed) >= 4 and np.mean(mixed) > 0.9


def test_negative_mask_none_ignores_negatives_and_a_missing_key_fails():
    labels = sparse_labels((2, 5, 3, 4))
    assert np.all(np.asarray(negative_mask(labels, "none", 0.0)) == 1.0)
    with pytest.raises(ValueError, match="key"):
        negative_mask(labels, "span", 0.5)
    with pytest.raises(ValueError):
        negative_mask(labels, "spans", 0.5, jax.random.key(0))
    with pytest.raises(ValueError):
        LossConfig(masking="row")
    with pytest.raises(ValueError):
        LossConfig(loss_reduction="none")


def test_losses_apply_the_subsampling_mask():
    """Each loss multiplies its elementwise focal loss by `negative_mask` over gliner's axes:
    (W, K) spans, (E, E) pairs, and for the adjacency (E, E) cells with a single class."""
    ours = random_batch(seed=5)
    config = LossConfig(negatives=0.5, masking="label", focal_loss_gamma=2.0)
    key = jax.random.key(7)

    def manual(values, targets, mask, one_class=False):
        focal = focal_loss_with_logits(values, targets, gamma=2.0, normalize_prob=not one_class)
        if one_class:  # adjacency: probabilities, cells as items with a single class
            kept = negative_mask(targets[..., None], "label", 0.5, key)[..., 0]
        else:
            kept = negative_mask(targets, "label", 0.5, key)
        return jnp.where(mask, focal * kept, 0.0).sum()

    span_mask = ours["span_mask"][..., None] & ours["prompt_mask"][:, None, None, :]
    span = span_loss(ours["logits"], ours["labels"], ours["span_mask"], ours["prompt_mask"], config, key)
    np.testing.assert_allclose(span, manual(ours["logits"], ours["labels"], span_mask), rtol=1e-6)
    full = span_loss(
        ours["logits"], ours["labels"], ours["span_mask"], ours["prompt_mask"], LossConfig(focal_loss_gamma=2.0)
    )
    assert span < full

    adj_mask = ours["entity_mask"][:, :, None] & ours["entity_mask"][:, None, :]
    adj = adjacency_loss(ours["adjacency"], ours["adj_targets"], ours["entity_mask"], config, key)
    np.testing.assert_allclose(adj, manual(ours["adjacency"], ours["adj_targets"], adj_mask, one_class=True), rtol=1e-6)

    rel_mask = ours["sampled_pairs"][..., None] & ours["rel_prompt_mask"][:, None, None, :]
    rel = relation_loss(
        ours["rel_logits"], ours["rel_targets"], ours["sampled_pairs"], ours["rel_prompt_mask"], config, key
    )
    np.testing.assert_allclose(rel, manual(ours["rel_logits"], ours["rel_targets"], rel_mask), rtol=1e-6)


# --------------------------------------------------------------------------------------------------
# Span, adjacency and relation losses against gliner
# --------------------------------------------------------------------------------------------------

B, W, K = 4, 6, 3  # gliner's tight shapes
C, R = 4, 3  # gliner's C' and C_rel (batch maxima)
PAD_W, PAD_C, PAD_R, CAP = 8, 6, 5, 7  # our buckets: more words, classes, relation classes, entity slots
TEXT_LENGTHS = (6, 3, 5, 1)
CLASS_COUNTS = (4, 2, 3, 1)
REL_COUNTS = (3, 0, 2, 3)
ENTITY_COUNTS = (5, 0, 1, 3)  # selected entities per row; gliner's E = 5


def random_batch(seed: int):
    """One random batch in our padded layout, with garbage in every padded slot."""
    rng = np.random.default_rng(seed)
    span_mask = np.zeros((B, PAD_W, K), bool)
    for b, n in enumerate(TEXT_LENGTHS):
        span_mask[b, :n] = (np.arange(n)[:, None] + np.arange(K)[None, :]) < n  # end inside the text
    prompt_mask = np.arange(PAD_C)[None, :] < np.asarray(CLASS_COUNTS)[:, None]
    labels = ((rng.uniform(size=(B, PAD_W, K, PAD_C)) < 0.2) & span_mask[..., None] & prompt_mask[:, None, None, :])
    logits = 3.0 * rng.standard_normal((B, PAD_W, K, PAD_C))
    logits[rng.uniform(size=logits.shape) < 0.05] = 18.0 * rng.choice([-1.0, 1.0])  # saturated entries

    entity_mask = np.arange(CAP)[None, :] < np.asarray(ENTITY_COUNTS)[:, None]
    rel_prompt_mask = np.arange(PAD_R)[None, :] < np.asarray(REL_COUNTS)[:, None]
    real = entity_mask[:, :, None] & entity_mask[:, None, :]
    # Adjacency head output: probabilities, masked by m_i m_j (diagonal kept), some exactly 0 or 1.
    adjacency = np.clip(rng.uniform(-0.1, 1.1, (B, CAP, CAP)), 0.0, 1.0) * real
    # Gold adjacency = sampled pairs (positives and negatives), never the diagonal.
    off_diagonal = real & ~np.eye(CAP, dtype=bool)[None]
    sampled_pairs = off_diagonal & (rng.uniform(size=(B, CAP, CAP)) < 0.5)
    rel_logits = 3.0 * rng.standard_normal((B, CAP, CAP, PAD_R))
    positives = (rng.uniform(size=rel_logits.shape) < 0.3) & rel_prompt_mask[:, None, None, :]
    ours = dict(
        logits=logits.astype(np.float32), labels=labels.astype(np.float32), span_mask=span_mask,
        prompt_mask=prompt_mask, entity_mask=entity_mask, adjacency=adjacency.astype(np.float32),
        adj_targets=sampled_pairs.astype(np.float32), sampled_pairs=sampled_pairs,
        rel_logits=rel_logits.astype(np.float32), rel_prompt_mask=rel_prompt_mask,
        # relation targets for both target-pair masks: relations_layer "none" (all pairs) and an
        # adjacency head (sampled pairs); zero outside them.
        rel_targets_all=(positives & off_diagonal[..., None]).astype(np.float32),
        rel_targets=(positives & sampled_pairs[..., None]).astype(np.float32),
    )
    return ours


def to_gliner_rows(grid_logits, grid_targets, pair_idx, pair_mask):
    """Our (B, E, E, R) grids -> gliner's (B, N, R) pair rows in gliner's pair order.

    Logits at padded rows are those of pair (0, 0), as gliner's `clamp_min(0)` gathers them;
    targets at padded rows are 0, as gliner's collator pads `rel_matrix`.
    """
    idx = np.maximum(pair_idx.numpy(), 0)
    b = np.arange(idx.shape[0])[:, None]
    logits = grid_logits[b, idx[..., 0], idx[..., 1]]
    targets = grid_targets[b, idx[..., 0], idx[..., 1]] * pair_mask.numpy()[..., None]
    return torch.tensor(logits), torch.tensor(targets)


CONFIGS = {
    "default": LossConfig(),
    "focal": LossConfig(
        focal_loss_alpha=0.75, focal_loss_gamma=2.0, rel_focal_loss_alpha=0.4, rel_focal_loss_gamma=1.5,
        focal_loss_prob_margin=0.1, label_smoothing=0.1, masking="span", use_span_width_weight=True,
    ),
    "width": LossConfig(focal_loss_alpha=0.25, focal_loss_gamma=1.0, use_span_width_weight=True, masking="label"),
}


def gliner_kwargs(config: LossConfig, relation: bool):
    return dict(
        alpha=config.relation_alpha if relation else config.focal_loss_alpha,
        gamma=config.relation_gamma if relation else config.focal_loss_gamma,
        prob_margin=config.focal_loss_prob_margin, label_smoothing=config.label_smoothing,
        reduction=config.loss_reduction, negatives=config.negatives, masking=config.masking,
    )


@pytest.mark.parametrize("reduction", ["sum", "mean"])
@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_span_loss_matches_gliner(name, reduction):
    config = dataclasses.replace(CONFIGS[name], loss_reduction=reduction)
    ours = random_batch(seed=11)
    ref = REFERENCE.loss(
        torch.tensor(ours["logits"][:, :W, :, :C]),
        torch.tensor(ours["labels"][:, :W, :, :C]),
        torch.tensor(ours["prompt_mask"][:, :C]).long(),
        span_mask=torch.tensor(ours["span_mask"][:, :W]),
        use_span_width_weight=config.use_span_width_weight,
        **gliner_kwargs(config, relation=False),
    ).item()
    got = span_loss(ours["logits"], ours["labels"], ours["span_mask"], ours["prompt_mask"], config)
    np.testing.assert_allclose(float(got), ref, rtol=1e-6)
    assert ref > 0.1  # not a vacuous comparison


@pytest.mark.parametrize("reduction", ["sum", "mean"])
@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_adjacency_loss_matches_gliner(name, reduction):
    config = dataclasses.replace(CONFIGS[name], loss_reduction=reduction)
    ours = random_batch(seed=12)
    e = max(ENTITY_COUNTS)
    target_mask = torch.tensor(ours["entity_mask"][:, :e]).float()
    ref = REFERENCE.adj_loss(
        torch.tensor(ours["adjacency"][:, :e, :e]),
        torch.tensor(ours["adj_targets"][:, :e, :e]),
        target_mask.unsqueeze(1) * target_mask.unsqueeze(2),  # as gliner's forward builds adj_mask
        **gliner_kwargs(config, relation=True),
    ).item()
    got = adjacency_loss(ours["adjacency"], ours["adj_targets"], ours["entity_mask"], config)
    np.testing.assert_allclose(float(got), ref, rtol=1e-6)
    assert ref > 0.1  # not a vacuous comparison


@pytest.mark.parametrize("reduction", ["sum", "mean"])
@pytest.mark.parametrize("name", sorted(CONFIGS))
@pytest.mark.parametrize("relations_layer", ["none", "adjacency"])
def test_relation_loss_matches_gliner(relations_layer, name, reduction):
    config = dataclasses.replace(CONFIGS[name], loss_reduction=reduction)
    ours = random_batch(seed=13)
    e = max(ENTITY_COUNTS)
    target_rep = torch.zeros(B, e, 8)
    if relations_layer == "none":  # all ordered pairs of the selected entities
        pair_idx, pair_mask, _, _ = build_all_entity_pairs(target_rep, torch.tensor(ours["entity_mask"][:, :e]))
        targets = ours["rel_targets_all"]
        our_pairs = all_pairs_mask(jnp.asarray(ours["entity_mask"]))
    else:  # training selects the gold (sampled) pairs
        pair_idx, pair_mask, _, _ = build_entity_pairs(torch.tensor(ours["adj_targets"][:, :e, :e]), target_rep, 0.5)
        targets = ours["rel_targets"]
        our_pairs = ours["sampled_pairs"]
    logits_rows, targets_rows = to_gliner_rows(ours["rel_logits"][..., :R], targets[..., :R], pair_idx, pair_mask)
    n = pair_mask.shape[1]
    ref = REFERENCE.rel_loss(
        logits_rows,
        targets_rows,
        pair_mask.unsqueeze(-1).expand(B, n, R),  # as gliner's forward builds them
        torch.tensor(ours["rel_prompt_mask"][:, :R]).unsqueeze(1).expand(B, n, R),
        **gliner_kwargs(config, relation=True),
    ).item()
    got = relation_loss(ours["rel_logits"], targets, our_pairs, ours["rel_prompt_mask"], config)
    np.testing.assert_allclose(float(got), ref, rtol=1e-6)
    assert targets_rows.sum() > 5 and ref > 0.1


def test_mean_with_nothing_to_count_is_zero():
    config = LossConfig(loss_reduction="mean")
    empty = np.zeros((2, 3), bool)
    assert float(adjacency_loss(np.full((2, 3, 3), 0.7, np.float32), np.zeros((2, 3, 3)), empty, config)) == 0.0
    assert float(relation_loss(np.ones((2, 3, 3, 2)), np.zeros((2, 3, 3, 2)), np.zeros((2, 3, 3), bool),
                               np.ones((2, 2), bool), config)) == 0.0


def test_losses_jit_and_differentiate():
    ours = random_batch(seed=14)
    config = CONFIGS["focal"]

    @jax.jit
    def total(span_logits, rel_logits, adjacency):
        span = span_loss(span_logits, ours["labels"], ours["span_mask"], ours["prompt_mask"], config)
        adj = adjacency_loss(adjacency, ours["adj_targets"], ours["entity_mask"], config)
        rel = relation_loss(rel_logits, ours["rel_targets"], ours["sampled_pairs"], ours["rel_prompt_mask"], config)
        return combine_losses(config, span, rel, adj, has_relation_classes=ours["rel_prompt_mask"].any())

    grads = jax.grad(total, argnums=(0, 1, 2))(ours["logits"], ours["rel_logits"], ours["adjacency"])
    for grad in grads:
        assert np.all(np.isfinite(np.asarray(grad)))
    # Padding gets no gradient: padded classes, relation classes, non-target pairs.
    assert np.all(np.asarray(grads[0])[~(ours["span_mask"][..., None] & ours["prompt_mask"][:, None, None, :])] == 0)
    rel_mask = ours["sampled_pairs"][..., None] & ours["rel_prompt_mask"][:, None, None, :]
    assert np.all(np.asarray(grads[1])[~rel_mask] == 0) and np.any(np.asarray(grads[1])[rel_mask] != 0)


# --------------------------------------------------------------------------------------------------
# Combination and configuration
# --------------------------------------------------------------------------------------------------


def test_combine_losses_follows_gliner_forward():
    config = LossConfig(span_loss_coef=2.0, adjacency_loss_coef=3.0, relation_loss_coef=5.0)
    span, adj, rel = jnp.float32(1.5), jnp.float32(0.25), jnp.float32(0.125)
    assert combine_losses(config, span, rel, adj) == 2.0 * 1.5 + 3.0 * 0.25 + 5.0 * 0.125
    assert combine_losses(config, span, rel) == 2.0 * 1.5 + 5.0 * 0.125  # no adjacency head
    assert combine_losses(config, span) == 1.5  # no relation term: span_loss_coef is NOT applied
    assert combine_losses(config, None, rel, adj) == 3.0 * 0.25 + 5.0 * 0.125  # C' == 0
    assert combine_losses(config, None) == 0.0  # gliner: loss None
    # No relation class in the batch (gliner's C_rel == 0): the span loss alone, unscaled, even traced.
    no_rel = jax.jit(lambda m: combine_losses(config, span, rel, adj, has_relation_classes=m.any()))
    assert no_rel(jnp.zeros((2, 3), bool)) == 1.5
    assert no_rel(jnp.ones((2, 3), bool)) == 2.0 * 1.5 + 3.0 * 0.25 + 5.0 * 0.125


def test_loss_config_defaults_are_gliner_trainer_and_config_defaults():
    trainer = {f.name: f.default for f in dataclasses.fields(TrainingArguments)}
    config = LossConfig()
    for name in ("focal_loss_alpha", "focal_loss_gamma", "rel_focal_loss_alpha", "rel_focal_loss_gamma",
                 "focal_loss_prob_margin", "label_smoothing", "loss_reduction", "negatives", "masking",
                 "use_span_width_weight"):
        assert getattr(config, name) == trainer[name], name
    assert config.span_loss_coef == inspect.signature(BaseGLiNERConfig.__init__).parameters["span_loss_coef"].default
    relex = inspect.signature(UniEncoderRelexConfig.__init__).parameters
    assert config.adjacency_loss_coef == relex["adjacency_loss_coef"].default
    assert config.relation_loss_coef == relex["relation_loss_coef"].default
    # Relation alpha / gamma fall back to the entity ones, as the trainer's compute_loss.
    tuned = LossConfig(focal_loss_alpha=0.75, focal_loss_gamma=2.0)
    assert (tuned.relation_alpha, tuned.relation_gamma) == (0.75, 2.0)
    assert dataclasses.replace(tuned, rel_focal_loss_alpha=0.0).relation_alpha == 0.0
