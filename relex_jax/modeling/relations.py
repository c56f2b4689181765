"""Entity selection for relations, all-pairs construction and pair-MLP relation scores.

Static shapes: at most E entities per row (a cap chosen by the caller), pairs as an (E, E) grid
with a mask. gliner's pair list is this grid's row-major order without the diagonal, so masked
grid entries in row-major order are exactly gliner's pairs.

The pair MLP is `output(ReLU(hidden([h_i; t_j])))` scored against relation prompts. Its first
layer splits into `h_i @ A + t_j @ B + b` (per entity, O(E D 4D)) and its last layer folds into
the prompts, so all pairs cost O(E^2 4D R) instead of gliner's O(E^2 (2D 4D + 4D D)).

Memory: the hidden activations of all pairs, (B, E, E, 4D), would be the largest intermediate of
the whole model at low thresholds (hundreds to thousands of passing spans per text; XLA asked for
over 100 GB). `relation_logits` therefore scores head rows in chunks of static size, so the pair
stage holds at most `PAIR_CHUNK_ELEMENTS` hidden values per batch row (or one head row, E * 4D, if
that is more), plus its (B, E, E, R) output.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

# Pair-MLP hidden values (head rows x E tails x 4D) held at once per batch row: 16 MiB of float32.
# Per batch row, so that the bound (and whether chunking happens at all) does not depend on batch
# size or device count: the rest of the model is already linear in B, this makes the pair stage
# linear in E. Small enough for batches of 32 on a laptop (512 MiB), large enough that training
# (gold E of a few dozen) and ordinary inference stay a single einsum: E*E*4D <= 2^22 covers
# E <= 128 at D = 64, E <= 36 at D = 768. Read at call time, so a benchmark can patch it.
PAIR_CHUNK_ELEMENTS = 1 << 22


def passing_spans(entity_logits, span_mask, class_mask, threshold):
    """(B, W, K): in-text spans whose best real-class probability exceeds `threshold`.

    Deviation from gliner: padded class slots (per-text label sets of different sizes) are not
    allowed to select a span; gliner lets their non-zero logits do so.
    """
    probs = jnp.where(class_mask[:, None, None, :], jax.nn.sigmoid(entity_logits.astype(jnp.float32)), 0.0)
    return (probs.max(-1) > threshold) & span_mask


def select_entities(entity_logits, span_mask, class_mask, threshold, max_entities: int, scatter: bool = True):
    """Spans that pass (`passing_spans`), packed in gliner's order.

    entity_logits (B, W, K, C), span_mask (B, W, K), class_mask (B, C). Returns the flat span
    indices l*K+k (B, E) in increasing order (gliner's (start, width) order), their mask (B, E)
    and the number of spans that passed per row (B,): a count above E means the cap cut the
    selection and the caller must retry with a larger one.

    `scatter=False` selects the same spans without `jnp.nonzero`, whose batched scatter ONNX
    converters cannot express: the e-th passing span's index is the number of spans before it
    in which fewer than e+1 spans have passed (a comparison and a sum over (B, N, E)).
    """
    batch = entity_logits.shape[0]
    keep = passing_spans(entity_logits, span_mask, class_mask, threshold).reshape(batch, -1)
    count = keep.sum(-1)
    slots = jax.lax.iota(jnp.int32, max_entities)
    mask = slots[None, :] < count[:, None]
    if scatter:
        index = jax.vmap(lambda row: jnp.nonzero(row, size=max_entities, fill_value=0)[0])(keep)
    else:
        passed = jnp.cumsum(keep.astype(jnp.int32), axis=-1)  # (B, N) spans passed up to and including n
        index = jnp.where(mask, (passed[:, :, None] <= slots[None, None, :]).sum(1, dtype=jnp.int32), 0)
    return index.astype(jnp.int32), mask, count


def all_pairs_mask(entity_mask):
    """(B, E) -> (B, E, E): ordered pairs of real entities, i != j."""
    slots = jax.lax.iota(jnp.int32, entity_mask.shape[-1])  # iotas, not a boolean `jnp.eye` (no ONNX EyeLike)
    return entity_mask[:, :, None] & entity_mask[:, None, :] & (slots[:, None] != slots[None, :])[None]


def pair_representations(pair_mlp, entities, deterministic: bool = True):
    """gliner's pair representations (B, E, E, D), the straightforward way: MLP([h_i; t_j])."""
    size = entities.shape[1]
    heads = jnp.broadcast_to(entities[:, :, None], (*entities.shape[:2], size, entities.shape[-1]))
    tails = jnp.broadcast_to(entities[:, None, :], heads.shape)
    return pair_mlp(jnp.concatenate([heads, tails], axis=-1), deterministic)


def pair_chunk_rows(size: int, width: int, chunk_elements: int | None = None) -> int:
    """Head rows per chunk for E = `size` entities and hidden width `width` (4D): all E when the
    whole grid fits in `chunk_elements` (default `PAIR_CHUNK_ELEMENTS`), else as many as fit, at
    least 1, evened out over the same number of chunks so the last chunk is not mostly padding.
    A symbolic E (`jax.export`) gets the same arithmetic as an expression, without the all-E
    shortcut (which compares sizes), so its program always maps over chunks."""
    limit = PAIR_CHUNK_ELEMENTS if chunk_elements is None else chunk_elements
    if not jax.export.is_symbolic_dim(size) and size * size * width <= limit:
        return size
    chunks = -(-size // jax.core.max_dim(1, limit // (size * width)))
    return -(-size // chunks)


def relation_logits(
    pair_mlp, entities, relation_prompts, deterministic: bool = True, chunk_elements: int | None = None,
    chunked: bool = True,
):
    """Relation logits (B, E, E, R) = pair_rep(i, j) . relation_prompt(r), factorised.

    Heads are scored `pair_chunk_rows` rows at a time: one einsum when a single chunk covers E
    (training and ordinary inference, compiled as before chunking), else a `lax.map` over zero-padded chunks of head rows (padding rows
    are sliced off), so the (B, rows, E, 4D) hidden block is the largest intermediate for any E. Each
    chunk is rematerialised under differentiation: its backward pass recomputes the block instead of
    storing one per chunk, which would bring the E^2 memory back. Dropout gets one key per chunk: a
    key drawn inside the mapped body is traced once and would give every chunk the same mask.
    `chunked=False` (ONNX export: a symbolic E would need a symbolic padding) is always one einsum.
    """
    batch, size, d = entities.shape
    first = pair_mlp.hidden
    folded, offset = pair_mlp.fold_output(relation_prompts)
    heads, tails = first.part(entities, 0, d), first.part(entities, d, 2 * d)  # (B, E, 4D) each
    bias = first.bias.astype(pair_mlp.dtype)

    def score(head_rows, rng=None):  # (B, rows, 4D) -> (B, rows, E, R); rng: None draws from "dropout"
        pre = head_rows[:, :, None] + tails[:, None, :] + bias
        hidden = pair_mlp.activate(pre, deterministic, rng)
        return jnp.einsum("bijh,bhr->bijr", hidden, folded) + offset[:, None, None, :]

    if not chunked:
        return score(heads)
    rows = pair_chunk_rows(size, heads.shape[-1], chunk_elements)
    if not jax.export.is_symbolic_dim(size) and rows == size:
        return score(heads)
    chunks = -(-size // rows)
    padded = jnp.pad(heads, ((0, 0), (0, chunks * rows - size), (0, 0)))
    blocks = padded.reshape(batch, chunks, rows, -1).swapaxes(0, 1)  # (chunks, B, rows, 4D)
    rngs = None if deterministic else jax.random.split(pair_mlp.make_rng("dropout"), chunks)
    logits = jax.lax.map(lambda xs: jax.checkpoint(score)(*xs), (blocks, rngs))  # (chunks, B, rows, E, R)
    return logits.swapaxes(0, 1).reshape(batch, chunks * rows, size, -1)[:, :size]
