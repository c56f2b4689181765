"""Parity of the Flax DeBERTa encoder with `transformers.DebertaV2Model` (torch, float32, eval)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from torch_fixtures import build_deberta, ragged_batch, torch, torch_last_hidden

import relex_jax
from relex_jax.modeling.deberta import DEBERTA_V3_ATTENTION, stack_layer_params

BASE = dict(
    vocab_size=300,
    hidden_size=64,
    num_hidden_layers=2,
    num_attention_heads=4,
    intermediate_size=128,
    hidden_dropout_prob=0.0,
    attention_probs_dropout_prob=0.0,
)
CONFIGS = {
    # deberta-v3-small's settings; T < 128 so only the linear bucket region is used.
    "v3_small_like": DEBERTA_V3_ATTENTION,
    # Few buckets so that sequences reach the log-bucketed region.
    "v3_log_buckets": dict(
        relative_attention=True, position_buckets=8, max_relative_positions=64, pos_att_type="p2c|c2p",
        share_att_key=True, norm_rel_ebd="layer_norm", position_biased_input=False,
    ),
    # deberta-v2 style: conv branch, absolute positions, separate positional projections, clamped distances.
    "v2_like": dict(
        relative_attention=True, max_relative_positions=16, pos_att_type="p2c|c2p", share_att_key=False,
        conv_kernel_size=3, conv_act="gelu", position_biased_input=True,
    ),
    "c2p_only": dict(
        relative_attention=True, position_buckets=16, max_relative_positions=64, pos_att_type="c2p",
        share_att_key=False, norm_rel_ebd="layer_norm", position_biased_input=False,
    ),
    "p2c_only": dict(
        relative_attention=True, position_buckets=16, max_relative_positions=64, pos_att_type="p2c",
        share_att_key=True, position_biased_input=False, hidden_act="gelu_new",
    ),
    "embedding_size_48": dict(
        relative_attention=True, position_buckets=16, pos_att_type="p2c|c2p", embedding_size=48,
        position_biased_input=True, type_vocab_size=2, conv_kernel_size=5, conv_groups=4, conv_act="tanh",
    ),
    "absolute_only": dict(relative_attention=False, position_biased_input=True, hidden_act="relu"),
}
LENGTHS = [40, 33, 5, 1]


def relative_error(out: np.ndarray, ref: np.ndarray, mask: np.ndarray) -> float:
    valid = mask.astype(bool)
    return float(np.abs(out - ref)[valid].max() / np.abs(ref[valid]).max())


@pytest.fixture(scope="module", params=sorted(CONFIGS))
def reference(request, tmp_path_factory):
    """(name, saved directory, torch model) for each config, built once per module."""
    name = request.param
    path = tmp_path_factory.mktemp(name)
    model = build_deberta(path, seed=len(name), **BASE, **CONFIGS[name])
    return name, path, model


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_matches_transformers(reference, seed):
    _, path, torch_model = reference
    module, params = relex_jax.load_hf_encoder(path)
    ids, mask = ragged_batch(np.random.default_rng(seed), BASE["vocab_size"], LENGTHS)
    ref = torch_last_hidden(torch_model, ids, mask)
    out = np.asarray(module.apply({"params": params}, jnp.asarray(ids), jnp.asarray(mask)))
    assert out.shape == ref.shape
    assert relative_error(out, ref, mask) <= 1e-5


def test_all_hidden_states_match(reference):
    _, path, torch_model = reference
    module, params = relex_jax.load_hf_encoder(path)
    ids, mask = ragged_batch(np.random.default_rng(7), BASE["vocab_size"], LENGTHS)
    with torch.no_grad():
        ref = torch_model(
            input_ids=torch.from_numpy(ids), attention_mask=torch.from_numpy(mask), output_hidden_states=True
        ).hidden_states
    last, states = module.apply({"params": params}, ids, mask, output_hidden_states=True)
    assert len(states) == len(ref) == BASE["num_hidden_layers"] + 1
    np.testing.assert_array_equal(np.asarray(last), np.asarray(states[-1]))
    for ours, theirs in zip(states, ref):
        assert relative_error(np.asarray(ours), theirs.numpy(), mask) <= 1e-5


def test_padding_does_not_change_real_tokens(reference):
    _, path, _ = reference
    module, params = relex_jax.load_hf_encoder(path)
    ids, mask = ragged_batch(np.random.default_rng(3), BASE["vocab_size"], LENGTHS)
    batched = np.asarray(module.apply({"params": params}, ids, mask))
    for row, length in enumerate(LENGTHS):
        alone = np.asarray(module.apply({"params": params}, ids[row : row + 1, :length], mask[row : row + 1, :length]))
        scale = np.abs(alone).max()
        assert np.abs(batched[row, :length] - alone[0]).max() <= 1e-5 * scale


@pytest.mark.parametrize("variant", ["remat", "scan", "scan_remat"])
def test_remat_and_scan_equal_plain_stack(reference, variant):
    name, path, _ = reference
    plain, params = relex_jax.load_hf_encoder(path)
    remat, scan = variant != "scan", variant.startswith("scan")
    other, other_params = relex_jax.load_hf_encoder(path, remat=remat, scan_layers=scan)
    if scan:
        assert "layers" in other_params["encoder"], "scan variant should hold stacked layer params"
    ids, mask = ragged_batch(np.random.default_rng(4), BASE["vocab_size"], LENGTHS)

    def loss(module, p):
        return jnp.sum(jnp.tanh(module.apply({"params": p}, ids, mask)) * mask[..., None])

    out_plain = np.asarray(plain.apply({"params": params}, ids, mask))
    out_other = np.asarray(other.apply({"params": other_params}, ids, mask))
    # Not bit-identical: XLA fuses a scanned body differently, so float sums may reassociate.
    np.testing.assert_allclose(out_other, out_plain, rtol=0, atol=1e-5 * np.abs(out_plain).max())
    # Gradients too: remat changes only what is stored, scan only how the stack is traced.
    grads_plain = jax.grad(lambda p: loss(plain, p))(params)
    grads_other = jax.grad(lambda p: loss(other, p))(other_params)
    if scan:
        grads_plain = stack_layer_params(grads_plain, plain.config)
    # Some leaves are ~0 up to rounding noise, so the bar is relative to the largest gradient.
    scale = max(float(np.abs(g).max()) for g in jax.tree_util.tree_leaves(grads_plain))
    for g_other, g_plain in zip(jax.tree_util.tree_leaves(grads_other), jax.tree_util.tree_leaves(grads_plain)):
        np.testing.assert_allclose(g_other, g_plain, rtol=0, atol=1e-5 * scale)


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_bfloat16_compute_stays_close(name, tmp_path):
    # Weights at std 0.1 (5x the usual init): at 0.3 attention is so sharp that even torch's own
    # bf16 forward is 3-10% off its float32 one (measured), so that scale tests nothing of ours.
    torch_model = build_deberta(tmp_path, seed=0, std=0.1, **BASE, **CONFIGS[name])
    module, params = relex_jax.load_hf_encoder(tmp_path, dtype=jnp.bfloat16)
    ids, mask = ragged_batch(np.random.default_rng(5), BASE["vocab_size"], LENGTHS)
    out = module.apply({"params": params}, ids, mask)
    assert out.dtype == jnp.bfloat16
    assert params["embeddings"]["word_embeddings"]["embedding"].dtype == jnp.float32
    ref = torch_last_hidden(torch_model, ids, mask)
    assert relative_error(np.asarray(out, np.float32), ref, mask) <= 2e-2


def test_dropout_is_active_in_training_mode(reference, tmp_path):
    name, path, _ = reference
    for scan in (False, True):
        module, params = relex_jax.load_hf_encoder(path, scan_layers=scan)
        module = module.clone(config=type(module.config)(**{**module.config.__dict__, "hidden_dropout_prob": 0.2}))
        ids, mask = ragged_batch(np.random.default_rng(6), BASE["vocab_size"], LENGTHS)
        eval_out = module.apply({"params": params}, ids, mask)
        rngs = {"dropout": jax.random.PRNGKey(0)}
        train_a = module.apply({"params": params}, ids, mask, deterministic=False, rngs=rngs)
        train_b = module.apply({"params": params}, ids, mask, deterministic=False, rngs={"dropout": jax.random.PRNGKey(1)})
        assert np.isfinite(np.asarray(train_a)).all()
        assert not np.allclose(train_a, eval_out)
        assert not np.allclose(train_a, train_b)
