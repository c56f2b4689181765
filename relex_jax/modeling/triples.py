"""gliner's `TriplesScoreLayer` (knowledge-graph triple scorers) over the all-pairs grid.

gliner scores flattened rows (head, relation, tail); here heads (B, E, D) and tails (B, E, D)
form the (E, E) grid of ordered pairs (head i, tail j) and each pair meets every relation prompt
(B, R, D), giving logits (B, E, E, R) with [b, i, j, r] = score(heads[b, i], relations[b, r],
tails[b, j]). gliner builds the layer with dim = 768 and no kwargs, so the defaults below
(p, clamp 10, power 1, ERMLP width 2048, ConvKB 32 filters, dropout rates) are the only ones.

Cost and memory, per mode:
- trilinear modes (DistMult, SimplE, DistMA, ComplEx, QuatE, HolE) are a per-(head, relation)
  product followed by one (E*R, D) x (D, E) contraction: O(B E R D + B E^2 R D) work and nothing
  of size (B, E, E, R, D). HolE goes through the spectrum (rfft in float32, as gliner):
  sum_k r_k corr(h, t)_k = (1/D) Re sum_f w_f conj(H_f) conj(R_f) T_f, w = 1 at DC/Nyquist else 2.
- norm modes (UM, SE, TransE/H/F, PairRE, TripleRE) precompute per-(head, relation) and
  per-(tail, relation) vectors, then reduce |x| over D on the (B, E, E, R, D) broadcast. XLA
  fuses that into one reduction, but an unfused fallback would hold B E^2 R D floats.
- ERMLP holds (B, E, E, R, 2048) hidden units and ConvKB (B, E, E, R, 32, D) feature maps in
  the worst case (e.g. B=8, E=32, R=10: 0.7 GB and 8 GB): fine for their rare use, not at scale.
- TuckER holds one (D, D) core slice per (text, relation): B R x 2.4 MB at D = 768, plus the
  (D, D, D) core itself (1.8 GB); gliner holds one slice per scored row.
"""

from __future__ import annotations

from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from relex_jax.config import TRIPLES_MODES
from relex_jax.modeling.mlp import Linear

Dtype = Any

MODES = TRIPLES_MODES
# ord of torch.linalg.norm per norm-based mode; gliner's score is -min(||x||_p ** 1.0, 10).
NORM_P = {"UM": 2, "SE": 2, "TransE": 1, "TransH": 2, "TransF": 2, "PairRE": 2, "TripleRE": 2}
CLAMP_NORM = 10.0
# Linear maps of the relation vector, per mode (torch `r_to_<name>`, Flax `r_to_<name>`).
RELATION_MAPS = {
    "TransH": ("rtr", "w"),
    "TransF": ("rvec", "alpha", "beta"),
    "PairRE": ("alpha", "beta"),
    "TripleRE": ("alpha", "beta", "delta", "gamma"),
}
DROPOUT = {"TuckER": 0.2, "ConvKB": 0.3}
ERMLP_HIDDEN = 2048
CONVKB_FILTERS = 32


def _safe_l2(x):
    """||x||_2 over the last axis with a zero (not NaN) gradient at x = 0.

    Self pairs (i = j, UM) and padded entities give x = 0 exactly; torch's norm backward returns 0
    there, plain sqrt would poison a masked loss with NaN.
    """
    sq = jnp.sum(x * x, axis=-1)
    positive = sq > 0
    return jnp.where(positive, jnp.sqrt(jnp.where(positive, sq, 1.0)), 0.0)


def _norm_score(x, p: int):
    """gliner's NormBasedInteraction._score: -min(||x||_p, 10), in float32."""
    x = x.astype(jnp.float32)
    distance = jnp.sum(jnp.abs(x), axis=-1) if p == 1 else _safe_l2(x)
    return -jnp.minimum(distance, CLAMP_NORM)


def _normalize(x, eps: float = 1e-12):
    """torch F.normalize: x / max(||x||_2, eps)."""
    return x / jnp.maximum(_safe_l2(x), eps)[..., None]


def _dropout(layer, x, deterministic: bool, features: int):
    """Dropout on x viewed as (rows, features): XLA:CPU compiles it in 0.5 s instead of 12 s at rank 6."""
    return layer(x.reshape(-1, features), deterministic=deterministic).reshape(x.shape)


def _contract(per_head, tails):
    """sum_d per_head[b, i, r, d] * tails[b, j, d] -> (B, E, E, R)."""
    return jnp.einsum("bird,bjd->bijr", per_head, tails)


def _heads(x):  # (B, E, R, D) per (head, relation) -> broadcastable over tails
    return x[:, :, None]


def _tails(x):  # (B, E, R, D) per (tail, relation) -> broadcastable over heads
    return x[:, None, :]


def _rel(x):  # (B, R, D) -> broadcastable over (head, tail)
    return x[:, None, None]


def _with_rel(entities, relations):
    """Element-wise product per (entity, relation): (B, E, D) x (B, R, D) -> (B, E, R, D)."""
    return entities[:, :, None] * relations[:, None]


def _spectrum(x, exportable: bool = False):
    """rfft(x) along the last axis in float32, as (real, imaginary) parts. `exportable`: as a
    contraction with the DFT's cosines and sines, since jax2onnx 0.17 writes an rfft graph that
    onnxruntime refuses to load (O(D^2) per vector instead of O(D log D); the pair contraction
    dominates either way)."""
    x = x.astype(jnp.float32)
    if not exportable:
        spectrum = jnp.fft.rfft(x, axis=-1)
        return spectrum.real, spectrum.imag
    n = x.shape[-1]
    angle = 2 * np.pi * np.outer(np.arange(n), np.arange(n // 2 + 1)) / n
    return x @ np.cos(angle).astype(np.float32), -(x @ np.sin(angle).astype(np.float32))


def _eye(key, shape, dtype=jnp.float32):
    return jnp.eye(*shape, dtype=dtype)


# gliner initialises TransF as plain TransE: r_vec = r, alpha = beta = 1.
_ONE_BIAS = dict(kernel_init=nn.initializers.zeros_init(), bias_init=nn.initializers.ones_init())
_TRANSF_INITS = {"rvec": dict(kernel_init=_eye), "alpha": _ONE_BIAS, "beta": _ONE_BIAS}


class InitLinear(Linear):
    """`Linear` with chosen initialisers (TransF starts as TransE: identity map, alpha = beta = 1)."""

    kernel_init: Callable = nn.initializers.lecun_normal()
    bias_init: Callable = nn.initializers.zeros_init()

    def setup(self):
        init = nn.with_logical_partitioning(self.kernel_init, self.axes)
        self.kernel = self.param("kernel", init, (self.in_features, self.features), self.param_dtype)
        bias_init = nn.with_logical_partitioning(self.bias_init, (self.axes[1],))
        self.bias = self.param("bias", bias_init, (self.features,), self.param_dtype)


class PointwiseConv(nn.Module):
    """Conv1d with kernel size 1 (ConvKB's `conv`): kernel (1, in, out) as torch's, transposed."""

    in_channels: int
    features: int
    param_dtype: Dtype = jnp.float32

    def setup(self):
        init = nn.with_logical_partitioning(nn.initializers.lecun_normal(), (None, None, None))
        self.kernel = self.param("kernel", init, (1, self.in_channels, self.features), self.param_dtype)
        self.bias = self.param("bias", nn.initializers.zeros_init(), (self.features,), self.param_dtype)


class BatchNorm(nn.Module):
    """torch BatchNorm1d over the last axis: params scale/bias, `batch_stats` mean/var.

    deterministic=True uses the running statistics (gliner's eval mode). Otherwise it normalises
    with the biased batch statistics of x's rows (those with mask True) and, outside init, updates
    the running ones as torch (momentum 0.1, variance made unbiased with `count` rows); the caller
    must then apply with mutable=["batch_stats"].
    """

    features: int
    momentum: float = 0.1
    epsilon: float = 1e-5
    param_dtype: Dtype = jnp.float32

    def setup(self):
        def vector(name, init):
            return self.param(name, nn.with_logical_partitioning(init, ("embed",)), (self.features,), self.param_dtype)

        self.scale = vector("scale", nn.initializers.ones_init())
        self.bias = vector("bias", nn.initializers.zeros_init())
        self.mean = self.variable("batch_stats", "mean", jnp.zeros, (self.features,), jnp.float32)
        self.var = self.variable("batch_stats", "var", jnp.ones, (self.features,), jnp.float32)

    def __call__(self, x, deterministic: bool = True, mask=None, count=None):
        x = x.astype(jnp.float32)
        if deterministic:
            mean, var = self.mean.value, self.var.value
        else:
            rows = x.reshape(-1, x.shape[-1])
            weight = jnp.ones(rows.shape[0]) if mask is None else mask.reshape(-1).astype(jnp.float32)
            total = weight.sum()
            mean = weight @ rows / total
            var = weight @ jnp.square(rows - mean) / total
            if not self.is_initializing():
                count = total if count is None else count
                m = self.momentum
                self.mean.value = (1 - m) * self.mean.value + m * mean
                self.var.value = (1 - m) * self.var.value + m * var * count / (count - 1)
        return (x - mean) / jnp.sqrt(var + self.epsilon) * self.scale + self.bias


class TripleScorer(nn.Module):
    """gliner's TriplesScoreLayer(mode) on all (head i, tail j) pairs x relations: (B, E, E, R)."""

    mode: str
    dim: int = 768
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32
    dropout_rate: float | None = None  # None: gliner's rate for the mode (TuckER 0.2, ConvKB 0.3)
    exportable: bool = False  # HolE's spectrum as a contraction (ONNX export, see `_spectrum`)

    def __post_init__(self):
        if self.mode == "ConvE":
            raise ValueError(
                "TriplesScoreLayer('ConvE') cannot be built by gliner (it requires `emb_dim1`, which the "
                "model never passes), so no checkpoint uses it"
            )
        if self.mode not in MODES:
            raise ValueError(f"unknown triples mode {self.mode!r}; supported (case-sensitive): {', '.join(MODES)}")
        if self.mode in ("SimplE", "ComplEx") and self.dim % 2:
            raise ValueError(f"{self.mode} requires an even dim, got {self.dim}")
        if self.mode == "QuatE" and self.dim % 4:
            raise ValueError(f"QuatE requires dim divisible by 4, got {self.dim}")
        super().__post_init__()

    def setup(self):
        d, dt, pdt, mode = self.dim, self.dtype, self.param_dtype, self.mode
        for name in RELATION_MAPS.get(mode, ()):
            axes = ("embed", None if name == "gamma" else "embed")
            inits = _TRANSF_INITS[name] if mode == "TransF" else {}
            setattr(self, f"r_to_{name}", InitLinear(d, 1 if name == "gamma" else d, axes, dt, pdt, **inits))
        rate = DROPOUT.get(mode, 0.0) if self.dropout_rate is None else self.dropout_rate
        if mode == "TuckER":
            init = nn.with_logical_partitioning(nn.initializers.xavier_uniform(), ("embed", None, None))
            self.W = self.param("W", init, (d, d, d), pdt)  # torch's xavier bounds: fans d*d, d*d
            self.bn0 = BatchNorm(d, param_dtype=pdt)
            self.bn1 = BatchNorm(d, param_dtype=pdt)
            self.dropout = nn.Dropout(rate)  # on the core slices
            self.input_dropout = nn.Dropout(rate)
        elif mode == "ERMLP":
            self.mlp_hidden = Linear(3 * d, ERMLP_HIDDEN, ("embed", "mlp"), dt, pdt)
            self.mlp_output = Linear(ERMLP_HIDDEN, 1, ("mlp", None), dt, pdt)
        elif mode == "ConvKB":
            self.conv = PointwiseConv(3, CONVKB_FILTERS, pdt)
            self.fc = Linear(CONVKB_FILTERS * d, 1, (None, None), dt, pdt)
            self.dropout = nn.Dropout(rate)

    def __call__(self, heads, relations, tails, deterministic: bool = True):
        """heads (B, E, D), relations (B, R, D), tails (B, E, D) -> scores (B, E, E, R), float32."""
        h, r, t = (x.astype(self.dtype) for x in (heads, relations, tails))
        batch, size, dim = h.shape
        if self.mode in ("SimplE", "ComplEx", "QuatE") and dim % (4 if self.mode == "QuatE" else 2):
            raise ValueError(f"{self.mode} cannot split vectors of size {dim}")
        shape = (batch, size, size, r.shape[1])
        if self.mode in NORM_P:
            scores = self._norm_mode(h, r, t)
        elif self.mode == "TuckER":
            scores = self._tucker_grid(h, r, t, deterministic)
        elif self.mode == "ERMLP":
            scores = self._ermlp(h, r, t)
        elif self.mode == "ConvKB":
            scores = self._convkb(h, r, t, deterministic)
        else:
            scores = self._trilinear(h, r, t)
        return jnp.broadcast_to(scores.astype(jnp.float32), shape)

    # -- norm-based ------------------------------------------------------------------------------

    def _norm_mode(self, h, r, t):
        mode, p = self.mode, NORM_P[self.mode]
        if mode == "UM":  # ignores the relation: (B, E, E, 1)
            return _norm_score(_heads(h[:, :, None]) - _tails(t[:, :, None]), p)
        if mode == "SE":  # diag(r) h - diag(r) t
            return _norm_score(_heads(_with_rel(h, r)) - _tails(_with_rel(t, r)), p)
        if mode == "TransE":
            return _norm_score(_heads(h[:, :, None]) + _rel(r) - _tails(t[:, :, None]), p)
        if mode == "TransH":  # project onto the hyperplane with normal w(r), translate by r_tr(r)
            w = _normalize(self.r_to_w(r))
            translation = self.r_to_rtr(r)

            def project(x):  # x - (x . w) w, per (entity, relation)
                return x[:, :, None] - jnp.einsum("bed,brd->ber", x, w)[..., None] * w[:, None]

            return _norm_score(_heads(project(h)) + _rel(translation) - _tails(project(t)), p)
        alpha_h = _with_rel(h, self.r_to_alpha(r))
        beta_t = _with_rel(t, self.r_to_beta(r))
        if mode == "TransF":
            return _norm_score(_heads(alpha_h) + _rel(self.r_to_rvec(r)) - _tails(beta_t), p)
        if mode == "PairRE":
            return _norm_score(_heads(alpha_h) - _tails(beta_t), p)
        # TripleRE: gamma(r) * score(alpha h + delta - beta t)
        base = _norm_score(_heads(alpha_h) + _rel(self.r_to_delta(r)) - _tails(beta_t), p)
        return self.r_to_gamma(r)[:, None, None, :, 0].astype(jnp.float32) * base

    # -- trilinear (separable) -------------------------------------------------------------------

    def _trilinear(self, h, r, t):
        mode = self.mode
        if mode == "DistMult":
            return _contract(_with_rel(h, r), t)
        if mode == "DistMA":  # h.r + h.t + r.t
            hr = jnp.einsum("bid,brd->bir", h, r)[:, :, None]
            ht = jnp.einsum("bid,bjd->bij", h, t)[..., None]
            rt = jnp.einsum("brd,bjd->bjr", r, t)[:, None]
            return hr + ht + rt
        if mode == "SimplE":  # (h_f r_f . t_b + h_b r_b . t_f) / 2
            (hf, hb), (rf, rb), (tf, tb) = (jnp.split(x, 2, axis=-1) for x in (h, r, t))
            per_head = jnp.concatenate([_with_rel(hf, rf), _with_rel(hb, rb)], axis=-1)
            return 0.5 * _contract(per_head, jnp.concatenate([tb, tf], axis=-1))
        if mode == "ComplEx":  # Re<h, r, conj t> = (h r)_re . t_re + (h r)_im . t_im
            (hre, him), (rre, rim) = (jnp.split(x, 2, axis=-1) for x in (h, r))
            re = _with_rel(hre, rre) - _with_rel(him, rim)
            im = _with_rel(hre, rim) + _with_rel(him, rre)
            return _contract(jnp.concatenate([re, im], axis=-1), t)
        if mode == "QuatE":  # Hamilton product h x r, then . t
            (h0, h1, h2, h3), (r0, r1, r2, r3) = (jnp.split(x, 4, axis=-1) for x in (h, r))
            m = _with_rel
            a0 = m(h0, r0) - m(h1, r1) - m(h2, r2) - m(h3, r3)
            a1 = m(h0, r1) + m(h1, r0) + m(h2, r3) - m(h3, r2)
            a2 = m(h0, r2) - m(h1, r3) + m(h2, r0) + m(h3, r1)
            a3 = m(h0, r3) + m(h1, r2) - m(h2, r1) + m(h3, r0)
            return _contract(jnp.concatenate([a0, a1, a2, a3], axis=-1), t)
        return self._hole(h, r, t)

    def _hole(self, h, r, t):
        """sum_k r_k corr(h, t)_k, corr = irfft(conj(rfft h) rfft t), through the spectrum, in
        real and imaginary parts (ONNX has no complex numbers)."""
        n = h.shape[-1]
        (hr, hi), (rr, ri), (tr, ti) = (_spectrum(x, self.exportable) for x in (h, r, t))
        weight = np.full(hr.shape[-1], 2.0, np.float32)
        weight[0] = 1.0
        if n % 2 == 0:
            weight[-1] = 1.0  # Nyquist bin
        weight /= n
        # g = conj(fh fr) * weight, (B, E, R, F); score = sum(Re g Re ft - Im g Im ft)
        g_real = (_with_rel(hr, rr) - _with_rel(hi, ri)) * weight
        g_imag = -(_with_rel(hr, ri) + _with_rel(hi, rr)) * weight
        return _contract(jnp.concatenate([g_real, -g_imag], axis=-1), jnp.concatenate([tr, ti], axis=-1))

    # -- neural ----------------------------------------------------------------------------------

    def _ermlp(self, h, r, t):
        """Linear(3D, 2048)([h; r; t]) split per part, ReLU, Linear(2048, 1)."""
        d, first, last = h.shape[-1], self.mlp_hidden, self.mlp_output
        pre = first.part(h, 0, d)[:, :, None, None] + _rel(first.part(r, d, 2 * d))
        hidden = jax.nn.relu(pre + first.part(t, 2 * d, 3 * d)[:, None, :, None] + first.bias.astype(self.dtype))
        return jnp.sum(hidden * last.kernel[:, 0].astype(self.dtype), axis=-1) + last.bias[0].astype(self.dtype)

    def _convkb(self, h, r, t, deterministic):
        """Conv1d(3 -> 32, k=1) on [h, r, t] per coordinate, ReLU, dropout, Linear(32 D, 1)."""
        d, dt = h.shape[-1], self.dtype
        kernel, bias = self.conv.kernel[0].astype(dt), self.conv.bias.astype(dt)  # (3, F), (F,)

        def filtered(x, c):  # (B, N, D) -> (B, N, F, D)
            return x[:, :, None, :] * kernel[c][:, None]

        pre = filtered(h, 0)[:, :, None, None] + _rel(filtered(r, 1)) + filtered(t, 2)[:, None, :, None]
        features = jax.nn.relu(pre + bias[:, None])  # (B, E, E, R, F, D)
        features = _dropout(self.dropout, features, deterministic, CONVKB_FILTERS * d)
        fc = self.fc.kernel[:, 0].reshape(CONVKB_FILTERS, d).astype(dt)  # torch flattens (F, D) row-major
        return jnp.sum(features * fc, axis=(-2, -1)) + self.fc.bias[0].astype(dt)

    # -- TuckER ----------------------------------------------------------------------------------

    def _tucker_grid(self, h, r, t, deterministic):
        """TuckER with each (head, relation, tail) scored on its own.

        gliner computes core slices as matmul(r_rows (n, D), W (D, D, D)) -> (D, n, D) and reads
        that memory back as (n, D, D): for n > 1 a row's slice mixes other rows' relations, so
        its scores depend on what else is in the batch (padded pairs included). For n = 1 the
        slice is W_r[p, q] = sum_k r_k W[p, k, q]; relex-jax uses that for every row, i.e.
        gliner's function of a single triple (a documented deviation for n > 1).
        BatchNorm in training: batch statistics of the B E heads (tails), padded entities
        included, with the unbiased running update counting the B E E R grid rows.
        """
        batch, size, d = h.shape
        rows = batch * size * size * r.shape[1]
        h = _dropout(self.input_dropout, self.bn0(h, deterministic, count=rows), deterministic, d)
        t = _dropout(self.input_dropout, self.bn1(t, deterministic, count=rows), deterministic, d)
        core = jnp.einsum("brk,pkq->brpq", r, self.W.astype(self.dtype))  # (B, R, D, D)
        core = _dropout(self.dropout, core, deterministic, d * d)
        return jnp.einsum("bip,brpq,bjq->bijr", h.astype(self.dtype), core, t.astype(self.dtype))
