"""Span representations (`markerV0`, gliner's released setting) and entity scores.

Spans follow gliner's canonical table: span (l, k) covers words l..l+k (inclusive), flattened
as l * K + k; spans that leave the text are invalid and, as in gliner, take the values of span
(0, 0) (gliner re-indexes them to (0, 0) before gathering).

markerV0 is `out_project(ReLU([project_start(h)[l]; project_end(h)[l+k]]))`. ReLU acts element-wise,
so out_project's first layer splits into a per-word start part and a per-word end part, and
its last layer folds into the label vectors: entity logits cost O(W K 4D C) instead of
O(W K 4D D). `SpanMarkerV0.__call__` keeps the straightforward form (the test oracle, and what a
caller gets when it asks for span representations).
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from relex_jax.modeling.mlp import ProjectionMLP

Dtype = Any


def end_aligned(per_word, max_width: int):
    """(B, W, F) per-word values -> (B, W, K, F) with [b, l, k] = per_word[b, l + k] (0 past W).

    K shifted copies instead of a gather.
    """
    _, num_words, _ = per_word.shape
    padded = jnp.pad(per_word, ((0, 0), (0, max_width - 1), (0, 0)))
    return jnp.stack([padded[:, k : k + num_words] for k in range(max_width)], axis=2)


def invalid_as_first_span(values, span_mask):
    """Replace invalid spans' values (B, W, K, F) by span (0, 0)'s, gliner's convention."""
    return jnp.where(span_mask[..., None], values, values[:, :1, :1])


class SpanMarkerV0(nn.Module):
    hidden_size: int
    max_width: int
    dropout: float
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    def setup(self):
        d = self.hidden_size
        mlp = lambda i: ProjectionMLP(i, d, self.dropout, self.dtype, self.param_dtype)  # noqa: E731
        self.project_start = mlp(d)
        self.project_end = mlp(d)
        self.out_project = mlp(2 * d)

    def _markers(self, words, deterministic):
        start = jax.nn.relu(self.project_start(words, deterministic))
        end = jax.nn.relu(self.project_end(words, deterministic))
        return start, end

    def hidden(self, words, span_mask, deterministic: bool = True):
        """out_project's hidden activations per span, (B, W, K, 4D), computed per word then combined."""
        d = self.hidden_size
        start, end = self._markers(words, deterministic)
        first = self.out_project.hidden
        pre = (
            first.part(start, 0, d)[:, :, None]
            + end_aligned(first.part(end, d, 2 * d), self.max_width)
            + first.bias.astype(self.dtype)
        )
        return self.out_project.activate(invalid_as_first_span(pre, span_mask), deterministic)

    def __call__(self, words, span_mask, deterministic: bool = True):
        """Span representations (B, W, K, D), the straightforward way (gather, concat, MLP)."""
        start, end = self._markers(words, deterministic)
        k = self.max_width
        pairs = jnp.concatenate(
            [jnp.broadcast_to(start[:, :, None], end_aligned(end, k).shape), end_aligned(end, k)], axis=-1
        )
        pairs = invalid_as_first_span(pairs, span_mask)
        return self.out_project(pairs, deterministic)
