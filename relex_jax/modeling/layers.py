"""Small layers of the GLiNER-Relex head: the word-level BiLSTM.

`BiLSTM` equals PyTorch's bidirectional `nn.LSTM(batch_first=True)` run on
`pack_padded_sequence(x, lengths, enforce_sorted=False)` and unpacked with `pad_packed_sequence`
(spec §4): the backward direction starts at each row's last real word (position len-1, not W-1),
both directions start from zero state, and padded positions come out exactly 0.

With static shapes, packing becomes masking: each row is reversed *within its length* (a static
per-row index on the (B, W, D) input, its own inverse), so both directions only ever see their real
words as a prefix, and one `lax.scan` runs the two directions side by side, which halves the
number of sequential steps. The input projection of all time steps is one matmul outside the scan;
only h @ W_hh is inside.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from relex_jax.modeling.precision import einsum_f32

Dtype = Any


def _torch_lstm_init(hidden_size: int):
    """PyTorch's LSTM default: every tensor ~ U(-1/sqrt(H), 1/sqrt(H))."""
    bound = 1.0 / np.sqrt(hidden_size)

    def init(key, shape, dtype=jnp.float32):
        return jax.random.uniform(key, shape, dtype, -bound, bound)

    return init


class LSTMWeights(nn.Module):
    """One direction of one layer: PyTorch's W_ih, W_hh, b_ih, b_hh, transposed to (in, 4H).

    The 4H axis keeps PyTorch's gate order [i, f, g, o], so conversion is a transpose. The two
    biases stay separate parameters (they are summed in the forward) so that every tensor of a
    checkpoint round-trips exactly.
    """

    hidden_size: int
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, input_size: int):
        h4, init = 4 * self.hidden_size, _torch_lstm_init(self.hidden_size)

        def param(name, shape, axes):
            return self.param(name, nn.with_logical_partitioning(init, axes), shape, self.param_dtype)

        # The gate axis stays unsharded: each scan step needs all four gates of every unit.
        input_kernel = param("input_kernel", (input_size, h4), ("embed", None))
        hidden_kernel = param("hidden_kernel", (self.hidden_size, h4), (None, None))
        input_bias = param("input_bias", (h4,), (None,))
        hidden_bias = param("hidden_bias", (h4,), (None,))
        return input_kernel, hidden_kernel, input_bias, hidden_bias


def reverse_within_length(x: jax.Array, index: jax.Array) -> jax.Array:
    """Gather (B, W, ...) along time with `index` = `within_length_reversal(lengths, W)`."""
    index = index.reshape(index.shape + (1,) * (x.ndim - 2))
    return jnp.take_along_axis(x, index, axis=1)


def within_length_reversal(lengths: jax.Array, width: int) -> jax.Array:
    """(B, W) index t -> len-1-t for t < len, t itself on padding: reverses each row's real prefix."""
    t = jax.lax.iota(jnp.int32, width)
    return jnp.where(t < lengths[:, None], lengths[:, None] - 1 - t, t)


class BiLSTMLayer(nn.Module):
    """One bidirectional layer; returns [h_fwd ; h_bwd] per position, zeros on padding."""

    hidden_size: int
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x, mask, reversal):
        dt, f32 = self.dtype, jnp.float32
        directions = [
            LSTMWeights(self.hidden_size, self.param_dtype, name=name)(x.shape[-1]) for name in ("forward", "backward")
        ]
        w_ih, w_hh, b_ih, b_hh = (jnp.stack(p) for p in zip(*directions))  # leading axis: direction

        # Both directions see their real words as a prefix, so padded steps never reach a real output.
        xs = jnp.stack([x, reverse_within_length(x, reversal)]).astype(dt)  # (2, B, W, D)
        gates_x = einsum_f32("nbwd,ndg->wnbg", xs, w_ih.astype(dt))
        gates_x = gates_x + (b_ih + b_hh).astype(f32)[None, :, None, :]

        # State and gate nonlinearities stay float32: the recurrence accumulates over W steps.
        def step(carry, gx):
            h, c = carry
            gates = gx + einsum_f32("nbh,nhg->nbg", h.astype(dt), w_hh.astype(dt))
            i, f, g, o = jnp.split(gates, 4, axis=-1)
            c = jax.nn.sigmoid(f) * c + jax.nn.sigmoid(i) * jnp.tanh(g)
            h = jax.nn.sigmoid(o) * jnp.tanh(c)
            return (h, c), h

        zeros = jnp.zeros(gates_x.shape[1:-1] + (self.hidden_size,), f32)  # (2, B, H)
        _, hs = jax.lax.scan(step, (zeros, zeros), gates_x)  # (W, 2, B, H)
        forward, backward = jnp.moveaxis(hs, 0, 2)  # each (B, W, H)
        out = jnp.concatenate([forward, reverse_within_length(backward, reversal)], axis=-1)
        return jnp.where(mask[..., None], out, 0).astype(dt)


class BiLSTM(nn.Module):
    """Packed bidirectional multi-layer LSTM on padded (B, W, D_in) input -> (B, W, 2 * hidden_size).

    Layer k+1 reads layer k's [fwd ; bwd] output. Rows of length 0 (which PyTorch refuses to pack)
    give zeros; lengths above W are treated as W. Values at padded input positions never matter:
    they are zeroed first, so they cannot leak NaN into outputs or gradients.
    """

    hidden_size: int
    num_layers: int = 1
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, lengths: jax.Array) -> jax.Array:
        width = x.shape[1]
        lengths = jnp.clip(lengths.astype(jnp.int32), 0, width)
        mask = jax.lax.iota(jnp.int32, width)[None, :] < lengths[:, None]
        reversal = within_length_reversal(lengths, width)
        x = jnp.where(mask[..., None], x, 0).astype(self.dtype)
        for k in range(self.num_layers):
            x = BiLSTMLayer(self.hidden_size, self.dtype, self.param_dtype, name=f"layer_{k}")(x, mask, reversal)
        return x
