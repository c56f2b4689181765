"""gliner's adjacency head (`RelationsRepLayer`): entity vectors (B, E, D) -> edge probabilities (B, E, E).

Used when `relations_layer` names a decoder; its output picks the pairs that get relation scores
(spec §8.2, §9.2). As gliner: every mode returns probabilities (sigmoid, or softmax weights for
`attention`), masked by the outer product of the entity mask, with the diagonal kept. gliner's
relation layers have no dropout (its `nn.MultiheadAttention` uses dropout 0), so neither do we.

Deviation from gliner: `attention` and `gat` give NaN for every entry of a batch element with no
entity (all keys masked, softmax over nothing); we give 0, the value the mask means. Padded entity
vectors are zeroed first, so garbage (even inf/NaN) in masked slots never reaches outputs or
gradients; for finite inputs this changes nothing.
"""

from __future__ import annotations

import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from relex_jax.config import ADJACENCY_MODES
from relex_jax.modeling.mlp import Linear

Dtype = Any

NUM_HEADS = 8  # gliner never passes `nhead`, so its default holds
MODES = ADJACENCY_MODES
_ALIASES = {"attn": "attention"}


def canonical_mode(mode: str) -> str:
    """gliner's mode matching (lower-cased, `attn` = `attention`); unknown modes fail loudly."""
    m = _ALIASES.get(mode.lower(), mode.lower())
    if m not in MODES:
        raise ValueError(f"unknown adjacency mode {mode!r}; supported: {', '.join(MODES)} (and 'attn')")
    return m


def masked_softmax(scores, mask):
    """Softmax over the last axis restricted to `mask`; rows with nothing unmasked give 0, not NaN.

    Masked scores are replaced before exp (so no inf - inf) and the result after (so no 0/0), which
    keeps values and gradients finite.
    """
    scores = jnp.where(mask, scores, 0.0)
    top = jax.lax.stop_gradient(jnp.max(jnp.where(mask, scores, -jnp.inf), axis=-1, keepdims=True))
    exp = jnp.where(mask, jnp.exp(scores - jnp.where(jnp.isfinite(top), top, 0.0)), 0.0)
    total = exp.sum(-1, keepdims=True)
    return exp / jnp.where(total > 0, total, 1.0)


class MultiheadAttention(nn.Module):
    """torch `nn.MultiheadAttention(D, heads, batch_first=True)` self-attention with a key mask.

    q|k|v is one packed `in_proj` (D, 3D), as torch stores `in_proj_weight`, so conversion is a
    transpose. Returns the output (after `out_proj`) and the weights averaged over heads (float32).
    """

    hidden_size: int
    num_heads: int = NUM_HEADS
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    def setup(self):
        d, dt, pdt = self.hidden_size, self.dtype, self.param_dtype
        self.in_proj = Linear(d, 3 * d, ("embed", "heads"), dt, pdt)
        self.out_proj = Linear(d, d, ("heads", "embed"), dt, pdt)

    def __call__(self, x, key_mask):  # (B, E, D), (B, E) bool
        batch, size, d = x.shape
        head_size = d // self.num_heads
        q, k, v = (t.reshape(batch, size, self.num_heads, head_size) for t in jnp.split(self.in_proj(x), 3, -1))
        q = q.astype(jnp.float32) * math.sqrt(1.0 / head_size)  # torch scales q before q.k
        scores = jnp.einsum("bqhc,bkhc->bhqk", q, k.astype(jnp.float32))
        weights = masked_softmax(scores, key_mask[:, None, None, :])
        context = jnp.einsum("bhqk,bkhc->bqhc", weights.astype(self.dtype), v).reshape(batch, size, d)
        return self.out_proj(context), weights.mean(axis=1)


class AdjacencyHead(nn.Module):
    """`relations_rep_layer.relation_rep_layer` for one mode; params named after gliner's modules."""

    mode: str
    hidden_size: int
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    def __post_init__(self):
        mode = canonical_mode(self.mode)  # fail at construction, not at first call
        if mode in ("attention", "gat") and self.hidden_size % NUM_HEADS:
            raise ValueError(f"adjacency mode {mode!r} needs hidden_size divisible by {NUM_HEADS}")
        super().__post_init__()

    def setup(self):
        d, dt, pdt, mode = self.hidden_size, self.dtype, self.param_dtype, canonical_mode(self.mode)
        if mode == "mlp":  # torch `mlp.0` / `mlp.2`: Linear(2D, D) -> ReLU -> Linear(D, 1)
            self.mlp_hidden = Linear(2 * d, d, ("embed", "mlp"), dt, pdt)
            self.mlp_output = Linear(d, 1, ("mlp", None), dt, pdt)
        if mode in ("attention", "gat"):
            self.attn = MultiheadAttention(d, NUM_HEADS, dt, pdt)
        if mode == "gcn":
            self.gcn_linear = Linear(d, d, ("embed", None), dt, pdt)
        if mode in ("bilinear", "gcn"):
            self.proj = Linear(d, d, ("embed", None), dt, pdt)
        if mode == "gat":
            self.linear = Linear(d, d, ("embed", None), dt, pdt)

    def __call__(self, entities, entity_mask, deterministic: bool = True):
        """(B, E, D), (B, E) -> (B, E, E) float32 probabilities. `deterministic` is unused (no dropout)."""
        del deterministic
        mask = entity_mask.astype(bool)
        pair_mask = mask[:, :, None] & mask[:, None, :]
        x = jnp.where(mask[..., None], entities, 0).astype(self.dtype)
        mode = canonical_mode(self.mode)
        if mode == "attention":  # the head-averaged attention weights are the probabilities
            return jnp.where(pair_mask, self.attn(x, mask)[1], 0.0)
        if mode == "mlp":
            logits = self._mlp_logits(x)
        else:  # the rest score sigmoid(z_i . z_j) for some per-entity z
            if mode == "dot":
                z = x
            elif mode == "bilinear":
                z = self.proj(x)
            elif mode == "gcn":
                z = self.proj(self._gcn(x, mask))
            else:  # gat: attention output (out_proj applied), then `linear`
                z = self.linear(self.attn(x, mask)[0])
            logits = jnp.einsum("bid,bjd->bij", z, z)
        probs = jax.nn.sigmoid(logits.astype(jnp.float32))
        return jnp.where(pair_mask, probs, 0.0)

    def _mlp_logits(self, x):
        """mlp([x_i; x_j]) for all pairs; the first layer split per entity (x_i A + x_j B + b)."""
        d = self.hidden_size
        pre = self.mlp_hidden.part(x, 0, d)[:, :, None] + self.mlp_hidden.part(x, d, 2 * d)[:, None, :]
        return self.mlp_output(jax.nn.relu(pre + self.mlp_hidden.bias.astype(self.dtype)))[..., 0]

    def _gcn(self, x, mask):
        """One GCN layer on the dot-product graph: ReLU(linear(D^-1/2 (A0 + I) D^-1/2 x)), masked.

        A0 = sigmoid(x x^T) on real pairs; self-loops only on real entities; degrees clamped at 1e-6
        as gliner, so padded rows (degree 0) stay 0.
        """
        m = mask.astype(jnp.float32)
        graph = jax.nn.sigmoid(jnp.einsum("bid,bjd->bij", x, x).astype(jnp.float32)) * m[:, :, None] * m[:, None, :]
        graph = graph + m[:, :, None] * jnp.eye(x.shape[1], dtype=jnp.float32)
        scale = jnp.maximum(graph.sum(-1), 1e-6) ** -0.5
        graph = scale[:, :, None] * graph * scale[:, None, :]
        return jax.nn.relu(self.gcn_linear(jnp.einsum("bij,bjd->bid", graph.astype(self.dtype), x)))
