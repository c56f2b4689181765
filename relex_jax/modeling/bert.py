"""BERT-family encoder in Flax Linen, numerically equal to `transformers.BertModel`'s last hidden state.

`BertModel` keeps `DebertaV2Model`'s contract, so the relex model can run on either backbone:
the same `apply(params, input_ids, attention_mask, token_type_ids, deterministic,
output_hidden_states)` call and return values, the same `dtype` / `param_dtype` / `remat` /
`scan_layers` options, and the same parameter layout (`embeddings/...`, `encoder/layer_i/...`,
stacked under `encoder/layers/layer` by `stack_layer_params`, which serves both encoders).

The post-attention and feed-forward halves of a block are DeBERTa's own modules (the PyTorch
code is the same there); only the embeddings and the plain scaled dot-product self-attention are
BERT's. Parameter names follow the PyTorch tree, except that the attention projections are
called `query_proj` / `key_proj` / `value_proj` (torch: `query` / `key` / `value`) as in DeBERTa,
so one sharding table and one optimizer grouping cover both; the checkpoint table renames them.

There is no pooler: GLiNER uses the last hidden state. Checkpoint loading drops a stored pooler
explicitly (`relex_jax.checkpoint.hf_encoder`). Attention scores, softmax and LayerNorm always
run in float32, whatever `dtype` is.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from relex_jax.modeling.deberta import (
    DebertaIntermediate,
    DenseResidualNorm,
    _dense,
    _embed,
    _layer_norm,
    checked_encoder_inputs,
    segment_pair_mask,
    stack_layer_params,
    unstack_layer_params,
)
from relex_jax.modeling.encoder_configs import BertConfig
from relex_jax.modeling.precision import einsum_f32

Dtype = Any

__all__ = ["BertConfig", "BertModel", "stack_layer_params", "unstack_layer_params"]


class BertModule(nn.Module):
    """Shared fields: the config, the compute `dtype` and the parameter storage `param_dtype`."""

    config: BertConfig
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32


class BertEmbeddings(BertModule):
    """Word + token-type + absolute position embeddings, LayerNorm, dropout (transformers' order)."""

    @nn.compact
    def __call__(self, input_ids, token_type_ids=None, deterministic: bool = True, position_ids=None):
        cfg, dt, pdt = self.config, self.dtype, self.param_dtype
        seq_len = input_ids.shape[-1]
        if position_ids is None and seq_len > cfg.max_position_embeddings:
            raise ValueError(
                f"sequence length {seq_len} exceeds max_position_embeddings={cfg.max_position_embeddings}"
            )
        if token_type_ids is None:
            token_type_ids = jnp.zeros_like(input_ids)
        x = _embed(cfg.vocab_size, cfg.hidden_size, cfg, dt, pdt, ("vocab", "embed"), "word_embeddings")(input_ids)
        x = x + _embed(cfg.type_vocab_size, cfg.hidden_size, cfg, dt, pdt, (None, "embed"), "token_type_embeddings")(
            token_type_ids
        )
        positions = _embed(cfg.max_position_embeddings, cfg.hidden_size, cfg, dt, pdt, (None, "embed"),
                           "position_embeddings")
        x = x + (positions(jax.lax.iota(jnp.int32, seq_len))[None] if position_ids is None else positions(position_ids))
        x = _layer_norm(x, cfg, dt, pdt)
        return nn.Dropout(cfg.hidden_dropout_prob)(x, deterministic=deterministic)


class BertSelfAttention(BertModule):
    """Scaled dot-product self-attention; `key_mask` (B, 1, 1, T) hides padded keys from every
    query, or (B, 1, T, T) keeps each packed example to its own keys (`segment_pair_mask`)."""

    @nn.compact
    def __call__(self, hidden, key_mask, deterministic: bool = True):
        cfg, dt, pdt = self.config, self.dtype, self.param_dtype
        heads, head_size = cfg.num_attention_heads, cfg.head_size
        batch, seq_len, _ = hidden.shape

        def project(name):  # (B, T, H) -> (B, h, T, d)
            x = _dense(heads * head_size, cfg, dt, pdt, ("embed", "heads"), name)(hidden)
            return jnp.swapaxes(x.reshape(batch, seq_len, heads, head_size), 1, 2)

        query, key, value = project("query_proj"), project("key_proj"), project("value_proj")
        scores = einsum_f32("bhqd,bhkd->bhqk", query, key) * np.float32(head_size**-0.5)
        scores = jnp.where(key_mask, scores, jnp.finfo(jnp.float32).min)
        probs = jax.nn.softmax(scores, axis=-1).astype(dt)
        probs = nn.Dropout(cfg.attention_probs_dropout_prob)(probs, deterministic=deterministic)
        context = jnp.einsum("bhqk,bhkd->bhqd", probs, value)
        return jnp.swapaxes(context, 1, 2).reshape(batch, seq_len, heads * head_size)


class BertAttention(BertModule):

    @nn.compact
    def __call__(self, hidden, key_mask, deterministic: bool = True):
        context = BertSelfAttention(self.config, self.dtype, self.param_dtype, name="self")(
            hidden, key_mask, deterministic
        )
        return DenseResidualNorm(self.config, self.dtype, self.param_dtype, "heads", name="output")(
            context, hidden, deterministic
        )


class BertLayer(BertModule):
    """One post-LayerNorm transformer block: self-attention, then the feed-forward block."""

    @nn.compact
    def __call__(self, hidden, key_mask, deterministic: bool = True):
        cfg, dt, pdt = self.config, self.dtype, self.param_dtype
        attended = BertAttention(cfg, dt, pdt, name="attention")(hidden, key_mask, deterministic)
        inner = DebertaIntermediate(cfg, dt, pdt, name="intermediate")(attended)
        return DenseResidualNorm(cfg, dt, pdt, "mlp", name="output")(inner, attended, deterministic)


def _layer_class(remat: bool):
    # static_argnums counts `self`: argument 3 is `deterministic`.
    return nn.remat(BertLayer, static_argnums=(3,)) if remat else BertLayer


class _ScannedLayer(BertModule):
    """`BertLayer` in the (carry, x) -> (carry, y) form `nn.scan` needs."""

    remat: bool = False

    @nn.compact
    def __call__(self, hidden, key_mask, deterministic: bool):
        out = _layer_class(self.remat)(self.config, self.dtype, self.param_dtype, name="layer")(
            hidden, key_mask, deterministic
        )
        return out, out


class BertEncoder(BertModule):
    """The layer stack: `layer_i` submodules, or one `nn.scan` over them (`layers/layer`)."""

    remat: bool = False
    scan_layers: bool = False

    @nn.compact
    def __call__(self, embeddings, attention_mask, deterministic: bool = True, output_hidden_states: bool = False,
                 packed: bool = False):
        """`packed`: `attention_mask` holds segment ids and attention is block-diagonal. Otherwise
        padded queries see every real key, as in transformers (tests compare them too)."""
        cfg, dt, pdt = self.config, self.dtype, self.param_dtype
        if packed:
            key_mask = segment_pair_mask(attention_mask)  # (B, 1, T, T)
        else:
            key_mask = attention_mask.astype(bool)[:, None, None, :]  # (B, 1, 1, T)
        hidden, states = embeddings, [embeddings]
        if self.scan_layers:
            scan = nn.scan(
                _ScannedLayer,
                variable_axes={"params": 0},
                split_rngs={"params": True, "dropout": True},
                in_axes=(nn.broadcast, nn.broadcast),
                length=cfg.num_hidden_layers,
                metadata_params={nn.PARTITION_NAME: "layers"},
            )
            hidden, stacked = scan(cfg, dt, pdt, self.remat, name="layers")(hidden, key_mask, deterministic)
            states.extend(stacked[i] for i in range(stacked.shape[0]))
        else:
            layer_cls = _layer_class(self.remat)
            for i in range(cfg.num_hidden_layers):
                hidden = layer_cls(cfg, dt, pdt, name=f"layer_{i}")(hidden, key_mask, deterministic)
                states.append(hidden)
        return (hidden, tuple(states)) if output_hidden_states else hidden


class BertModel(BertModule):
    """Flax counterpart of `transformers.BertModel` without its pooler.

    `apply({"params": p}, input_ids, attention_mask, token_type_ids)` returns the last hidden
    state (B, T, H); `token_type_ids` default to zeros, `attention_mask` to all ones. With
    `output_hidden_states=True` it returns `(last, (embeddings, layer_1, ..., layer_N))`.
    `remat` recomputes each layer's activations in the backward pass; `scan_layers` runs the
    stack as one `nn.scan` (params stacked under `encoder/layers`, see `stack_layer_params`).
    Packed rows: `segment_ids` (B, T) instead of `attention_mask`, and `position_ids` that
    restart at 0 per example, so each example reads the position embeddings it would alone.
    `exportable` changes nothing: BERT needs no export-only formulation (taken so that both
    backbones are built alike).
    """

    remat: bool = False
    scan_layers: bool = False
    exportable: bool = False

    @nn.compact
    def __call__(
        self,
        input_ids,
        attention_mask=None,
        token_type_ids=None,
        deterministic: bool = True,
        output_hidden_states: bool = False,
        segment_ids=None,
        position_ids=None,
    ):
        attention_mask = checked_encoder_inputs(input_ids, attention_mask, token_type_ids, segment_ids, position_ids)
        embeddings = BertEmbeddings(self.config, self.dtype, self.param_dtype, name="embeddings")(
            input_ids, token_type_ids, deterministic, position_ids
        )
        return BertEncoder(
            self.config, self.dtype, self.param_dtype, self.remat, self.scan_layers, name="encoder"
        )(embeddings, attention_mask, deterministic, output_hidden_states, segment_ids is not None)
