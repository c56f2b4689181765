"""gliner's `create_projection_layer`, with its first layer's weights exposed for factorisation.

`Linear(in, 4*out) -> ReLU -> Dropout -> Linear(4*out, out)`. Span markers and the pair MLP apply
it to concatenations [a; b]; its first layer is then `a @ W_a + b @ W_b + bias`, which lets us
project each part once per entity/word instead of once per pair/span (see `spans.py`,
`relations.py`).
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

Dtype = Any


class Linear(nn.Module):
    """A Dense layer whose `kernel` (in, out) and `bias` are readable attributes."""

    in_features: int
    features: int
    axes: tuple[str | None, str | None] = (None, None)
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    def setup(self):
        init = nn.with_logical_partitioning(nn.initializers.lecun_normal(), self.axes)
        self.kernel = self.param("kernel", init, (self.in_features, self.features), self.param_dtype)
        bias_init = nn.with_logical_partitioning(nn.initializers.zeros_init(), (self.axes[1],))
        self.bias = self.param("bias", bias_init, (self.features,), self.param_dtype)

    def __call__(self, x):
        return jnp.matmul(x.astype(self.dtype), self.kernel.astype(self.dtype)) + self.bias.astype(self.dtype)

    def part(self, x, start: int, stop: int):
        """x @ kernel[start:stop] (no bias): the contribution of one slice of a concatenated input."""
        return jnp.matmul(x.astype(self.dtype), self.kernel[start:stop].astype(self.dtype))


class ProjectionMLP(nn.Module):
    """Linear(in, 4 out) -> ReLU -> Dropout -> Linear(4 out, out); torch keys `.0.*` and `.3.*`."""

    in_features: int
    out_features: int
    dropout: float
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    def setup(self):
        width = 4 * self.out_features
        self.hidden = Linear(self.in_features, width, ("embed", "mlp"), self.dtype, self.param_dtype)
        self.output = Linear(width, self.out_features, ("mlp", "embed"), self.dtype, self.param_dtype)
        self.drop = nn.Dropout(self.dropout)

    def activate(self, pre_activation, deterministic: bool, rng=None):
        """ReLU and dropout of the hidden layer, given its pre-activation (`rng`: the dropout key,
        default drawn from the "dropout" collection)."""
        return self.drop(jax.nn.relu(pre_activation), deterministic=deterministic, rng=rng)

    def __call__(self, x, deterministic: bool = True):
        return self.output(self.activate(self.hidden(x), deterministic))

    def fold_output(self, vectors):
        """(..., n, out) label vectors -> (kernel @ v: (..., 4 out, n), bias . v: (..., n)).

        `output(u) . v == u @ (kernel @ v) + bias . v`, so scoring against n label vectors never
        materialises `output(u)`.
        """
        vectors = vectors.astype(self.dtype)
        folded = jnp.einsum("hd,...nd->...hn", self.output.kernel.astype(self.dtype), vectors)
        offset = jnp.einsum("d,...nd->...n", self.output.bias.astype(self.dtype), vectors)
        return folded, offset
