"""DeBERTa-v2/v3 encoder in Flax Linen, numerically equal to `transformers.DebertaV2Model`.

Parameter names follow the PyTorch module tree (`embeddings/word_embeddings`,
`encoder/layer_3/attention/self/query_proj`, ...) so that the checkpoint mapping table in
`relex_jax.checkpoint.torch_mapping` reads like a dictionary.

Two deliberate differences in *how* (not *what*) we compute:

* Relative-position attention (c2p / p2c) uses no per-element gather on the (B, h, T, T) score
  tensor. The relative bucket of (i, j) depends only on i - j, so we gather the 2T-1 needed
  rows of the small positional table once (a static index), score every query against them
  with one einsum, and turn "column = relative distance" into "column = key position" with a
  pad/reshape shift. Gathers on the score tensor are very slow on TPU.
* Attention scores, softmax and LayerNorm always run in float32, whatever `dtype` is.
"""

from __future__ import annotations

import functools
from typing import Any, Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from relex_jax.modeling.activations import get_activation
from relex_jax.modeling.encoder_configs import DEBERTA_V3_ATTENTION, DebertaConfig  # noqa: F401 (re-exported)
from relex_jax.modeling.precision import einsum_f32

Dtype = Any


# ----------------------------------------------------------------------------------------------
# Relative positions (host-side, static given the sequence length)


def log_bucket_position(relative_pos: np.ndarray, bucket_size: int, max_position: int) -> np.ndarray:
    """DeBERTa's log-bucketing of relative distances, in float32 like the PyTorch original."""
    relative_pos = np.asarray(relative_pos, dtype=np.int64)
    sign = np.sign(relative_pos)
    mid = bucket_size // 2
    abs_pos = np.where((relative_pos < mid) & (relative_pos > -mid), mid - 1, np.abs(relative_pos))
    ratio = abs_pos.astype(np.float32) / np.float32(mid)
    log_pos = (
        np.ceil(np.log(ratio) / np.log(np.float32((max_position - 1) / mid)) * np.float32(mid - 1))
        + np.float32(mid)
    )
    bucket = np.where(abs_pos <= mid, relative_pos.astype(np.float32), log_pos * sign)
    return bucket.astype(np.int64)


@functools.lru_cache(maxsize=64)
def relative_table_rows(seq_len: int, attention_span: int, bucket_size: int, max_position: int):
    """Rows of the relative-position table each distance uses, in the order the shift expects.

    Returns (c2p_rows, p2c_rows), each of length 2T-1, for `shift_relative_to_absolute`: entry
    r serves distance delta = (T-1) - r between the row and column position of the score matrix
    it is shifted into. For c2p the rows are queries (delta = query - key); p2c is computed with
    keys as rows (delta = key - query) and transposed afterwards, as transformers does. The rows
    reproduce its `clamp(+-bucket(delta) + span, 0, 2 span - 1)`.
    """
    delta = (seq_len - 1) - np.arange(2 * seq_len - 1)
    bucket = log_bucket_position(delta, bucket_size, max_position) if bucket_size > 0 and max_position > 0 else delta
    c2p = np.clip(bucket + attention_span, 0, 2 * attention_span - 1)
    p2c = np.clip(-bucket + attention_span, 0, 2 * attention_span - 1)
    return c2p.astype(np.int32), p2c.astype(np.int32)


@functools.lru_cache(maxsize=16)
def saturation_distance(attention_span: int, bucket_size: int, max_position: int) -> int:
    """The distance from which on every row `relative_table_rows` gives is clipped to the table's
    end (the bucket only grows with the distance): rows of longer distances equal its rows."""
    far = np.arange(4 * max(attention_span, max_position, 1) + 2)
    bucket = log_bucket_position(far, bucket_size, max_position) if bucket_size > 0 and max_position > 0 else far
    saturated = np.nonzero(bucket >= attention_span)[0]
    if not len(saturated):
        raise ValueError(f"relative positions never saturate (span {attention_span}, buckets {bucket_size}, "
                         f"max position {max_position})")
    return int(saturated[0])


def relative_rows(seq_len, attention_span: int, bucket_size: int, max_position: int):
    """`relative_table_rows` as arrays, for a static `seq_len` or a symbolic one (`jax.export`).

    A symbolic length cannot index numpy: the rows are then looked up by distance, clipped at
    `saturation_distance`, in the table of that distance (a gather of 2T-1 small integers).
    """
    if isinstance(seq_len, int):
        return tuple(map(jnp.asarray, relative_table_rows(seq_len, attention_span, bucket_size, max_position)))
    far = saturation_distance(attention_span, bucket_size, max_position)
    tables = relative_table_rows(far + 1, attention_span, bucket_size, max_position)  # entry r: distance far - r
    delta = (seq_len - 1) - jax.lax.iota(jnp.int32, 2 * seq_len - 1)
    index = far - jnp.clip(delta, -far, far)
    return tuple(jnp.asarray(table)[index] for table in tables)


def shift_relative_to_absolute(scores: jax.Array) -> jax.Array:
    """(..., T, 2T-1) scores indexed by r = j + (T-1) - i  ->  (..., T, T) indexed by key j.

    out[i, j] = scores[i, j + T - 1 - i]. Flattening the last two axes makes that element sit at
    i * (2T - 2) + j + (T - 1), so dropping T-1 leading elements and re-folding with row length
    2T-2 lines every row up: a copy, no gather. (`lax.slice_in_dim` rather than indexing: the
    same op, but it also takes a symbolic T, whose bounds indexing cannot normalise.)
    """
    *lead, t, width = scores.shape
    if t == 1:
        return scores
    flat = jax.lax.slice_in_dim(scores.reshape(*lead, -1), t - 1, t - 1 + t * (width - 1), axis=-1)
    return jax.lax.slice_in_dim(flat.reshape(*lead, t, -1), 0, t, axis=-1)


def gather_relative_to_absolute(scores: jax.Array) -> jax.Array:
    """`shift_relative_to_absolute` as a gather, for ONNX export (`exportable`): the flattening
    there makes a size quadratic in a symbolic T, which jax2onnx 0.17 converts wrongly."""
    *lead, t, _ = scores.shape
    query, key = (jax.lax.broadcasted_iota(jnp.int32, (t, t), axis) for axis in (0, 1))
    index = jnp.broadcast_to(key + (t - 1) - query, (*lead, t, t))
    return jnp.take_along_axis(scores, index, axis=-1)


# ----------------------------------------------------------------------------------------------
# Modules


def _dense(features: int, config: DebertaConfig, dtype, param_dtype, axes, name: str, use_bias=True):
    return nn.Dense(
        features,
        use_bias=use_bias,
        dtype=dtype,
        param_dtype=param_dtype,
        kernel_init=nn.with_logical_partitioning(nn.initializers.normal(config.initializer_range), axes),
        bias_init=nn.with_logical_partitioning(nn.initializers.zeros_init(), (axes[-1],)),
        name=name,
    )


def _embed(num: int, features: int, config: DebertaConfig, dtype, param_dtype, axes, name: str):
    return nn.Embed(
        num,
        features,
        dtype=dtype,
        param_dtype=param_dtype,
        embedding_init=nn.with_logical_partitioning(nn.initializers.normal(config.initializer_range), axes),
        name=name,
    )


def _layer_norm(x, config: DebertaConfig, dtype, param_dtype, name: str = "LayerNorm"):
    """PyTorch-style LayerNorm (two-pass variance), computed in float32, returned in `dtype`.

    Call inside a compact method: the submodule is registered on the caller under `name`.
    """
    y = nn.LayerNorm(
        epsilon=config.layer_norm_eps,
        dtype=jnp.float32,
        param_dtype=param_dtype,
        use_fast_variance=False,
        scale_init=nn.with_logical_partitioning(nn.initializers.ones_init(), ("embed",)),
        bias_init=nn.with_logical_partitioning(nn.initializers.zeros_init(), ("embed",)),
        name=name,
    )(x.astype(jnp.float32))
    return y.astype(dtype)


class DebertaModule(nn.Module):
    """Shared fields: the config, the compute `dtype` and the parameter storage `param_dtype`."""

    config: DebertaConfig
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32


class DebertaEmbeddings(DebertaModule):
    """Word (+ absolute position, + token type) embeddings, projection, LayerNorm, padding mask."""

    @nn.compact
    def __call__(self, input_ids, attention_mask, token_type_ids=None, deterministic: bool = True, position_ids=None):
        cfg, dt, pdt = self.config, self.dtype, self.param_dtype
        seq_len = input_ids.shape[-1]
        emb = cfg.word_embedding_size
        x = _embed(cfg.vocab_size, emb, cfg, dt, pdt, ("vocab", "embed"), "word_embeddings")(input_ids)
        if cfg.position_biased_input:
            if position_ids is None and seq_len > cfg.max_position_embeddings:
                raise ValueError(
                    f"sequence length {seq_len} exceeds max_position_embeddings={cfg.max_position_embeddings} "
                    "of this position-biased DeBERTa"
                )
            table = _embed(cfg.max_position_embeddings, emb, cfg, dt, pdt, (None, "embed"), "position_embeddings")
            x = x + (table(jax.lax.iota(jnp.int32, seq_len))[None] if position_ids is None else table(position_ids))
        if cfg.type_vocab_size > 0:
            if token_type_ids is None:
                token_type_ids = jnp.zeros_like(input_ids)
            x = x + _embed(cfg.type_vocab_size, emb, cfg, dt, pdt, (None, "embed"), "token_type_embeddings")(
                token_type_ids
            )
        if emb != cfg.hidden_size:
            x = _dense(cfg.hidden_size, cfg, dt, pdt, (None, "embed"), "embed_proj", use_bias=False)(x)
        x = _layer_norm(x, cfg, dt, pdt)
        x = x * (attention_mask[..., None] > 0).astype(x.dtype)
        return nn.Dropout(cfg.hidden_dropout_prob)(x, deterministic=deterministic)


class DisentangledSelfAttention(DebertaModule):
    """Content-content plus relative content-position (c2p) and position-content (p2c) attention.
    `exportable`: the relative shift as a gather (ONNX export), not the gather-free reshape."""

    exportable: bool = False

    @nn.compact
    def __call__(self, hidden, pair_mask, rel_embeddings, deterministic: bool = True):
        cfg, dt, pdt = self.config, self.dtype, self.param_dtype
        heads, head_size = cfg.num_attention_heads, cfg.head_size
        batch, seq_len, _ = hidden.shape

        def projection(name):
            return _dense(heads * head_size, cfg, dt, pdt, ("embed", "heads"), name)

        def split_heads(x):  # (..., T, h*d) -> (..., h, T, d)
            x = x.reshape(*x.shape[:-1], heads, head_size)
            return jnp.swapaxes(x, -2, -3)

        query_proj, key_proj = projection("query_proj"), projection("key_proj")
        query = split_heads(query_proj(hidden))
        key = split_heads(key_proj(hidden))
        value = split_heads(projection("value_proj")(hidden))

        scale = np.sqrt(np.float32(head_size) * cfg.scale_factor).astype(np.float32)
        scores = einsum_f32("bhqd,bhkd->bhqk", query, key / jnp.asarray(scale, key.dtype))

        if cfg.relative_attention and cfg.pos_att_type:
            rel = nn.Dropout(cfg.hidden_dropout_prob)(rel_embeddings, deterministic=deterministic)
            rel = rel[: 2 * cfg.attention_span].astype(dt)
            shift = gather_relative_to_absolute if self.exportable else shift_relative_to_absolute
            c2p_rows, p2c_rows = relative_rows(seq_len, cfg.attention_span, cfg.position_buckets,
                                               cfg.max_relative_distance)
            if "c2p" in cfg.pos_att_type:
                pos_key_proj = key_proj if cfg.share_att_key else projection("pos_key_proj")
                pos_key = split_heads(pos_key_proj(rel[c2p_rows]))  # (h, 2T-1, d)
                c2p = einsum_f32("bhqd,hrd->bhqr", query, pos_key)
                scores = scores + shift(c2p) / scale
            if "p2c" in cfg.pos_att_type:
                pos_query_proj = query_proj if cfg.share_att_key else projection("pos_query_proj")
                pos_query = split_heads(pos_query_proj(rel[p2c_rows]))
                p2c = einsum_f32("bhkd,hrd->bhkr", key, pos_query)
                scores = scores + jnp.swapaxes(shift(p2c), -1, -2) / scale

        scores = jnp.where(pair_mask, scores, jnp.finfo(jnp.float32).min)
        probs = jax.nn.softmax(scores, axis=-1).astype(dt)
        probs = nn.Dropout(cfg.attention_probs_dropout_prob)(probs, deterministic=deterministic)
        context = jnp.einsum("bhqk,bhkd->bhqd", probs, value)
        return jnp.swapaxes(context, -2, -3).reshape(batch, seq_len, heads * head_size)


class DenseResidualNorm(DebertaModule):
    """dense -> dropout -> LayerNorm(x + residual): transformers' SelfOutput and Output blocks."""

    input_axis: str = "embed"  # logical axis of the dense layer's input

    @nn.compact
    def __call__(self, x, residual, deterministic: bool = True):
        cfg = self.config
        x = _dense(cfg.hidden_size, cfg, self.dtype, self.param_dtype, (self.input_axis, "embed"), "dense")(x)
        x = nn.Dropout(cfg.hidden_dropout_prob)(x, deterministic=deterministic)
        return _layer_norm(x + residual, cfg, self.dtype, self.param_dtype)


class DebertaAttention(DebertaModule):
    exportable: bool = False  # see DisentangledSelfAttention

    @nn.compact
    def __call__(self, hidden, pair_mask, rel_embeddings, deterministic: bool = True):
        context = DisentangledSelfAttention(self.config, self.dtype, self.param_dtype, self.exportable, name="self")(
            hidden, pair_mask, rel_embeddings, deterministic
        )
        return DenseResidualNorm(self.config, self.dtype, self.param_dtype, "heads", name="output")(
            context, hidden, deterministic
        )


class DebertaIntermediate(DebertaModule):

    @nn.compact
    def __call__(self, x):
        cfg = self.config
        x = _dense(cfg.intermediate_size, cfg, self.dtype, self.param_dtype, ("embed", "mlp"), "dense")(x)
        return get_activation(cfg.hidden_act)(x)


class DebertaLayer(DebertaModule):
    """One transformer block: disentangled attention, then the feed-forward block."""

    exportable: bool = False  # see DisentangledSelfAttention

    @nn.compact
    def __call__(self, hidden, pair_mask, rel_embeddings, deterministic: bool = True):
        cfg, dt, pdt = self.config, self.dtype, self.param_dtype
        attended = DebertaAttention(cfg, dt, pdt, self.exportable, name="attention")(hidden, pair_mask, rel_embeddings, deterministic)
        inner = DebertaIntermediate(cfg, dt, pdt, name="intermediate")(attended)
        return DenseResidualNorm(cfg, dt, pdt, "mlp", name="output")(inner, attended, deterministic)


class _ScannedLayer(DebertaModule):
    """`DebertaLayer` in the (carry, x) -> (carry, y) form `nn.scan` needs."""

    remat: bool = False
    exportable: bool = False

    @nn.compact
    def __call__(self, hidden, pair_mask, rel_embeddings, deterministic: bool):
        layer_cls = nn.remat(DebertaLayer, static_argnums=(4,)) if self.remat else DebertaLayer
        out = layer_cls(self.config, self.dtype, self.param_dtype, self.exportable, name="layer")(
            hidden, pair_mask, rel_embeddings, deterministic
        )
        return out, out


class ConvLayer(DebertaModule):
    """DeBERTa-v2's 1-D convolution branch, applied to the embeddings after the first layer."""

    @nn.compact
    def __call__(self, embeddings, layer_output, attention_mask, deterministic: bool = True):
        cfg = self.config
        pad = (cfg.conv_kernel_size - 1) // 2
        out = nn.Conv(
            cfg.hidden_size,
            kernel_size=(cfg.conv_kernel_size,),
            padding=[(pad, pad)],
            feature_group_count=cfg.conv_groups,
            dtype=self.dtype,
            param_dtype=self.param_dtype,
            kernel_init=nn.with_logical_partitioning(
                nn.initializers.normal(cfg.initializer_range), (None, None, "embed")
            ),
            bias_init=nn.with_logical_partitioning(nn.initializers.zeros_init(), ("embed",)),
            name="conv",
        )(embeddings)
        mask = (attention_mask[..., None] > 0).astype(out.dtype)
        out = out * mask
        out = get_activation(cfg.conv_act)(nn.Dropout(cfg.hidden_dropout_prob)(out, deterministic=deterministic))
        return _layer_norm(layer_output + out, cfg, self.dtype, self.param_dtype) * mask


class DebertaEncoder(DebertaModule):
    """The layer stack with shared relative-position embeddings and the optional conv branch."""

    remat: bool = False
    scan_layers: bool = False
    exportable: bool = False  # see DisentangledSelfAttention

    @nn.compact
    def __call__(self, embeddings, attention_mask, deterministic: bool = True, output_hidden_states: bool = False):
        """`attention_mask` (B, T) may hold segment ids (packed rows): see `segment_pair_mask`."""
        cfg, dt, pdt = self.config, self.dtype, self.param_dtype
        pair_mask = segment_pair_mask(attention_mask)  # (B, 1, T, T)

        rel_embeddings = None
        if cfg.relative_attention:
            table = _embed(2 * cfg.attention_span, cfg.hidden_size, cfg, dt, pdt, (None, "embed"), "rel_embeddings")
            rel_embeddings = table.embedding
            if "layer_norm" in cfg.norm_rel_ebd:
                rel_embeddings = _layer_norm(rel_embeddings, cfg, jnp.float32, pdt)

        hidden = embeddings
        states = [embeddings]
        first_scanned = cfg.scanned_layers_start if self.scan_layers else cfg.num_hidden_layers
        layer_cls = nn.remat(DebertaLayer, static_argnums=(4,)) if self.remat else DebertaLayer
        for i in range(first_scanned):
            hidden = layer_cls(cfg, dt, pdt, self.exportable, name=f"layer_{i}")(hidden, pair_mask, rel_embeddings, deterministic)
            if i == 0 and cfg.conv_kernel_size > 0:
                hidden = ConvLayer(cfg, dt, pdt, name="conv")(embeddings, hidden, attention_mask, deterministic)
            states.append(hidden)

        if first_scanned < cfg.num_hidden_layers:
            scan = nn.scan(
                _ScannedLayer,
                variable_axes={"params": 0},
                split_rngs={"params": True, "dropout": True},
                in_axes=(nn.broadcast, nn.broadcast, nn.broadcast),
                length=cfg.num_hidden_layers - first_scanned,
                metadata_params={nn.PARTITION_NAME: "layers"},
            )
            hidden, stacked = scan(cfg, dt, pdt, self.remat, self.exportable, name="layers")(
                hidden, pair_mask, rel_embeddings, deterministic
            )
            states.extend(stacked[i] for i in range(stacked.shape[0]))

        return (hidden, tuple(states)) if output_hidden_states else hidden


def segment_pair_mask(segment_ids):
    """(B, T) segment ids -> (B, 1, T, T): query and key in the same non-padding segment.

    A 0/1 attention mask is the one-segment case (real query and real key). Packed rows hold
    several examples numbered 1, 2, ... (0 = padding): attention is block-diagonal, so every
    example sees only its own tokens, exactly as if it were encoded alone. The mask has the
    score tensor's (T, T) shape, broadcast over heads.
    """
    same = segment_ids[:, :, None] == segment_ids[:, None, :]
    return (same & (segment_ids[:, None, :] > 0))[:, None]


def checked_encoder_inputs(input_ids, attention_mask, token_type_ids, segment_ids=None, position_ids=None):
    """The attention mask (all ones when None; the segment ids of packed rows when given), after
    checking every input is (batch, tokens) like `input_ids`: shared by the encoders, whose
    callers pass the same arrays."""
    if input_ids.ndim != 2:
        raise ValueError(f"input_ids must be (batch, tokens), got shape {input_ids.shape}")
    if segment_ids is not None:
        if attention_mask is not None:
            raise ValueError("pass either attention_mask or segment_ids (packed rows), not both")
        attention_mask = segment_ids
    if attention_mask is None:
        attention_mask = jnp.ones_like(input_ids)
    for name, array in (("attention_mask", attention_mask), ("token_type_ids", token_type_ids),
                        ("position_ids", position_ids)):
        if array is not None and array.shape != input_ids.shape:
            raise ValueError(f"{name} shape {array.shape} does not match input_ids shape {input_ids.shape}")
    return attention_mask


class DebertaV2Model(DebertaModule):
    """Flax counterpart of `transformers.DebertaV2Model`.

    `apply({"params": p}, input_ids, attention_mask)` returns the last hidden state (B, T, H);
    with `output_hidden_states=True` it returns `(last, (embeddings, layer_1, ..., layer_N))`.
    `remat` recomputes each layer's activations in the backward pass; `scan_layers` runs the
    stack as one `nn.scan` (params stacked under `encoder/layers`, see `stack_layer_params`).

    Packed rows: `segment_ids` (B, T) (1, 2, ... per example, 0 = padding) instead of
    `attention_mask`, and `position_ids` restarting at 0 per example. Relative positions need
    nothing more: within a segment, i - j is the distance inside the example. The conv branch
    (DeBERTa-v2) would mix neighbouring examples, so it refuses packed rows.
    `exportable`: formulations ONNX export needs where they are slower (see DisentangledSelfAttention).
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
        if segment_ids is not None and self.config.conv_kernel_size > 0:
            raise ValueError("packed rows (segment_ids) are not supported with DeBERTa-v2's conv layer "
                             "(conv_kernel_size > 0): its kernel would read across examples")
        attention_mask = checked_encoder_inputs(input_ids, attention_mask, token_type_ids, segment_ids, position_ids)
        embeddings = DebertaEmbeddings(self.config, self.dtype, self.param_dtype, name="embeddings")(
            input_ids, attention_mask, token_type_ids, deterministic, position_ids
        )
        return DebertaEncoder(
            self.config, self.dtype, self.param_dtype, self.remat, self.scan_layers, self.exportable, name="encoder"
        )(embeddings, attention_mask, deterministic, output_hidden_states)


# ----------------------------------------------------------------------------------------------
# Param-tree layouts: one `layer_i` subtree per layer (the canonical, checkpointed layout) or the
# scanned layout with the stacked layers under `encoder/layers/layer`.


def stack_layer_params(params: Mapping[str, Any], config: DebertaConfig) -> dict:
    """Unrolled params (`encoder/layer_i`) -> the layout of `DebertaV2Model(scan_layers=True)`."""
    params = dict(params)
    encoder = dict(params["encoder"])
    start, n = config.scanned_layers_start, config.num_hidden_layers
    layers = [encoder.pop(f"layer_{i}") for i in range(start, n)]
    if layers:
        encoder["layers"] = {"layer": jax.tree_util.tree_map(lambda *xs: jnp.stack(xs), *layers)}
    params["encoder"] = encoder
    return params


def unstack_layer_params(params: Mapping[str, Any], config: DebertaConfig) -> dict:
    """Inverse of `stack_layer_params`."""
    params = dict(params)
    encoder = dict(params["encoder"])
    stacked = encoder.pop("layers", None)
    if stacked is not None:
        for k in range(config.num_hidden_layers - config.scanned_layers_start):
            encoder[f"layer_{config.scanned_layers_start + k}"] = jax.tree_util.tree_map(
                lambda x: x[k], stacked["layer"]
            )
    params["encoder"] = encoder
    return params
