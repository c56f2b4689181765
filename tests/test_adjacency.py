"""AdjacencyHead against gliner's `RelationsRepLayer`, every mode, weights re-drawn at std 0.3.

Ragged entity masks include a row with no entity (gliner: NaN for attention/gat, ours: 0) and a
row with one entity; padded slots carry finite garbage, which gliner ignores as well.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from relex_jax.checkpoint.torch_mapping import ADJACENCY_RULES, convert_state_dict, flatten_params, to_state_dict
from relex_jax.modeling.adjacency import AdjacencyHead

from torch_fixtures import redraw_weights, torch

from gliner.modeling.multitask.relations_layers import RelationsRepLayer

D, E = 64, 7
COUNTS = (7, 0, 1, 4)  # entities per row
MODES = ("dot", "mlp", "attention", "attn", "bilinear", "gcn", "gat", "GAT")  # matched lower-cased
LAST_LAYER = {"bilinear": "proj", "gcn": "proj", "gat": "linear"}  # makes z in sigmoid(z_i . z_j)
TORCH_PREFIX = "relations_rep_layer."  # + RelationsRepLayer's own `relation_rep_layer.*` keys


def batch(seed: int, std: float = 0.3):
    """Entity vectors (B, E, D) with finite garbage in padded slots, and the mask (B, E)."""
    rng = np.random.default_rng(seed)
    mask = np.arange(E)[None, :] < np.asarray(COUNTS)[:, None]
    x = (std * rng.standard_normal((len(COUNTS), E, D))).astype(np.float32)
    x[~mask] = rng.uniform(-3, 3, size=((~mask).sum(), D))
    return x, mask


def spread_logits(layer, last_name: str, x, mask, logit_std: float = 2.0):
    """Shift and scale the last projection so that sigmoid(z_i . z_j) spreads out.

    The z vectors share a large common part (ReLU features in gcn, attention averages in gat);
    with re-drawn weights it alone pushes every probability to 1.0, where parity proves nothing.
    """
    last = layer.relation_rep_layer.get_submodule(last_name)
    seen = []
    hook = last.register_forward_hook(lambda module, inputs, output: seen.append(output))
    reference(layer, x, mask)
    hook.remove()
    z = seen[0][torch.from_numpy(mask)]  # real entities only
    with torch.no_grad():
        last.bias -= z.mean(0)
        scale = logit_std / ((z - z.mean(0)) @ (z - z.mean(0)).T).std().sqrt()
        last.weight *= scale
        last.bias *= scale


def build(mode: str, seed: int):
    """(gliner layer, Flax head, converted params, torch state dict) for one mode."""
    torch.manual_seed(seed)
    layer = RelationsRepLayer(D, mode).eval()
    redraw_weights(layer, seed)
    head = AdjacencyHead(mode, D)
    x, mask = batch(seed)
    if mode.lower() in LAST_LAYER:
        spread_logits(layer, LAST_LAYER[mode.lower()], x, mask)
    shapes = jax.eval_shape(head.init, jax.random.key(0), x, mask)
    params = nn.meta.unbox(shapes.get("params", {}))  # dot has no params at all
    expected = {"adjacency/" + k: v.shape for k, v in flatten_params(params).items()}
    state = {TORCH_PREFIX + k: v.numpy() for k, v in layer.state_dict().items()}
    params = convert_state_dict(state, ADJACENCY_RULES, expected).get("adjacency", {})  # dot has none
    return layer, head, {"params": params}, state


def reference(layer, x, mask):
    with torch.no_grad():
        return layer(torch.from_numpy(x), torch.from_numpy(mask)).numpy()


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("mode", MODES)
def test_parity_with_gliner(mode, seed):
    layer, head, params, _ = build(mode, seed)
    x, mask = batch(seed)
    ref = reference(layer, x, mask)
    eager = np.asarray(head.apply(params, x, mask))
    jitted = np.asarray(jax.jit(head.apply)(params, x, mask))
    np.testing.assert_allclose(eager, jitted, rtol=0, atol=1e-6)

    finite = np.isfinite(ref)
    scale = np.abs(ref[finite]).max()
    assert np.abs(jitted - ref)[finite].max() <= 1e-5 * scale
    # Probabilities spread out, so the comparison means something.
    pairs = mask[:, :, None] & mask[:, None, :]
    assert ((ref[pairs] > 0.05) & (ref[pairs] < 0.95)).mean() > 0.5
    if mode.lower() in ("attention", "attn", "gat"):  # gliner's NaN for the row with no entity; ours is 0
        assert np.isnan(ref[1]).all() and not np.isnan(np.delete(ref, 1, axis=0)).any()
        assert (jitted[1] == 0).all()
    else:
        assert finite.all()
    assert np.isfinite(jitted).all()
    # Diagonal kept (not zeroed) for real entities, everything else masked to exactly 0.
    assert (jitted[~pairs] == 0).all() and (np.diagonal(jitted, axis1=1, axis2=2)[mask] > 0).all()


@pytest.mark.parametrize("mode", ["dot", "mlp", "attention", "bilinear", "gcn", "gat"])
def test_padded_garbage_is_ignored(mode):
    _, head, params, _ = build(mode, 2)
    x, mask = batch(2)
    clean = np.where(mask[..., None], x, 0)
    dirty = x.copy()
    dirty[2, 1:] = np.inf
    dirty[3, 5] = np.nan
    dirty[1] = -np.inf
    dirty[3, 6] = 1e30
    apply = jax.jit(head.apply, static_argnames="deterministic")
    out_clean = np.asarray(apply(params, clean, mask))
    np.testing.assert_array_equal(np.asarray(apply(params, dirty, mask)), out_clean)
    # No dropout anywhere in gliner's head: training mode gives the same numbers, without an rng.
    np.testing.assert_array_equal(np.asarray(apply(params, dirty, mask, deterministic=False)), out_clean)


@pytest.mark.parametrize("mode", ["mlp", "attention", "gcn", "gat"])
def test_gradients_finite_with_empty_row(mode):
    _, head, params, _ = build(mode, 3)
    x, mask = batch(3)
    x[1] = np.nan  # the row with no entity, all garbage
    weights = jnp.asarray(np.random.default_rng(3).standard_normal((len(COUNTS), E, E)), jnp.float32)

    def loss(p, entities):
        return (head.apply(p, entities, mask) * weights).sum()

    grad_params, grad_x = jax.jit(jax.grad(loss, argnums=(0, 1)))(params, x)
    grads = flatten_params(grad_params["params"])
    assert grads and all(np.isfinite(g).all() for g in grads.values())
    unused = {"attn/out_proj/kernel", "attn/out_proj/bias"} if mode == "attention" else set()  # as in gliner
    assert all((np.abs(g).max() > 0) != (path in unused) for path, g in grads.items())
    grad_x = np.asarray(grad_x)
    assert np.isfinite(grad_x).all() and (grad_x[~mask] == 0).all() and np.abs(grad_x[mask]).max() > 0


@pytest.mark.parametrize("mode", ["mlp", "attention", "bilinear", "gcn", "gat"])
def test_conversion_round_trips(mode):
    _, _, params, state = build(mode, 4)
    back = to_state_dict({"adjacency": params["params"]}, ADJACENCY_RULES)
    assert back.keys() == state.keys()
    for key, value in state.items():
        np.testing.assert_array_equal(back[key], value)


def test_unknown_mode_names_the_supported_ones():
    with pytest.raises(ValueError, match="supported: dot, mlp, attention, bilinear, gcn, gat"):
        AdjacencyHead("transformer", D)
