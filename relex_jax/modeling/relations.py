"""Entity selection for relations, all-pairs construction and pair-MLP relation scores.

Static shapes: at most E entities per row (a cap chosen by the caller), pairs as an (E, E) grid
with a mask. gliner's pair list is this grid's row-major order without the diagonal, so masked
grid entries in row-major order are exactly gliner's pairs.

The pair MLP is `output(ReLU(hidden([h_i; t_j])))` scored against relation prompts. Its first
layer splits into `h_i @ A + t_j @ B + b` (per entity, O(E D 4D)) and its last layer folds into
the prompts, so all pairs cost O(E^2 4D R) instead of gliner's O(E^2 (2D 4D + 4D D)).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def passing_spans(entity_logits, span_mask, class_mask, threshold):
    """(B, W, K): in-text spans whose best real-class probability exceeds `threshold`.

    Deviation from gliner: padded class slots (per-text label sets of different sizes) are not
    allowed to select a span; gliner lets their non-zero logits do so.
    """
    probs = jnp.where(class_mask[:, None, None, :], jax.nn.sigmoid(entity_logits.astype(jnp.float32)), 0.0)
    return (probs.max(-1) > threshold) & span_mask


def select_entities(entity_logits, span_mask, class_mask, threshold, max_entities: int):
    """Spans that pass (`passing_spans`), packed in gliner's order.

    entity_logits (B, W, K, C), span_mask (B, W, K), class_mask (B, C). Returns the flat span
    indices l*K+k (B, E) in increasing order (gliner's (start, width) order), their mask (B, E)
    and the number of spans that passed per row (B,): a count above E means the cap cut the
    selection and the caller must retry with a larger one.
    """
    batch = entity_logits.shape[0]
    keep = passing_spans(entity_logits, span_mask, class_mask, threshold).reshape(batch, -1)
    count = keep.sum(-1)
    index = jax.vmap(lambda row: jnp.nonzero(row, size=max_entities, fill_value=0)[0])(keep)
    mask = jnp.arange(max_entities)[None, :] < count[:, None]
    return index.astype(jnp.int32), mask, count


def all_pairs_mask(entity_mask):
    """(B, E) -> (B, E, E): ordered pairs of real entities, i != j."""
    size = entity_mask.shape[-1]
    return entity_mask[:, :, None] & entity_mask[:, None, :] & ~jnp.eye(size, dtype=bool)[None]


def pair_hidden(pair_mlp, entities, deterministic: bool = True):
    """The pair MLP's hidden activations for every (head i, tail j): (B, E, E, 4D)."""
    d = entities.shape[-1]
    first = pair_mlp.hidden
    pre = first.part(entities, 0, d)[:, :, None] + first.part(entities, d, 2 * d)[:, None, :]
    return pair_mlp.activate(pre + first.bias.astype(pair_mlp.dtype), deterministic)


def pair_representations(pair_mlp, entities, deterministic: bool = True):
    """gliner's pair representations (B, E, E, D), the straightforward way: MLP([h_i; t_j])."""
    size = entities.shape[1]
    heads = jnp.broadcast_to(entities[:, :, None], (*entities.shape[:2], size, entities.shape[-1]))
    tails = jnp.broadcast_to(entities[:, None, :], heads.shape)
    return pair_mlp(jnp.concatenate([heads, tails], axis=-1), deterministic)


def relation_logits(pair_mlp, entities, relation_prompts, deterministic: bool = True):
    """Relation logits (B, E, E, R) = pair_rep(i, j) . relation_prompt(r), factorised."""
    folded, offset = pair_mlp.fold_output(relation_prompts)
    hidden = pair_hidden(pair_mlp, entities, deterministic)
    return jnp.einsum("bijh,bhr->bijr", hidden, folded) + offset[:, None, None, :]
