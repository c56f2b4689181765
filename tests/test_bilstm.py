"""`BiLSTM` against PyTorch's packed bidirectional `nn.LSTM`, converted through `BILSTM_RULES`."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from relex_jax.checkpoint.torch_mapping import (
    BILSTM_RULES,
    CheckpointMismatchError,
    convert_state_dict,
    flatten_params,
)
from relex_jax.modeling.layers import BiLSTM

torch = pytest.importorskip("torch")

# Ragged: full length, length 1, length 0 (torch cannot pack it), and two in between.
LENGTHS = np.array([11, 1, 0, 6, 9])
WIDTH = 11


def torch_lstm(input_size, hidden, num_layers, seed):
    """A bidirectional nn.LSTM with weights re-drawn at std 0.5, so every gate is far from trivial."""
    torch.manual_seed(seed)
    lstm = torch.nn.LSTM(input_size, hidden, num_layers=num_layers, bidirectional=True, batch_first=True)
    with torch.no_grad():
        for p in lstm.parameters():
            p.normal_(0.0, 0.5)
    return lstm.eval()


def torch_packed(lstm, x, lengths):
    """gliner's LstmSeq2SeqEncoder path; rows of length 0 are left out and expected to be zeros."""
    out = np.zeros(x.shape[:2] + (2 * lstm.hidden_size,), np.float32)
    rows = np.flatnonzero(lengths > 0)
    packed = torch.nn.utils.rnn.pack_padded_sequence(
        torch.from_numpy(x[rows]), torch.from_numpy(lengths[rows]), batch_first=True, enforce_sorted=False
    )
    with torch.no_grad():
        y, _ = torch.nn.utils.rnn.pad_packed_sequence(lstm(packed)[0], batch_first=True, total_length=x.shape[1])
    out[rows] = y.numpy()
    return out


def convert(lstm, module, x):
    """Torch state dict, named as in a gliner checkpoint, -> Flax params checked against `module.init`."""
    state = {f"rnn.lstm.{k}": v.numpy() for k, v in lstm.state_dict().items()}
    shapes = jax.eval_shape(module.init, jax.random.key(0), x, jnp.asarray(LENGTHS))
    expected = {k: v.shape for k, v in flatten_params(nn.meta.unbox(shapes["params"])).items()}
    return convert_state_dict(state, BILSTM_RULES, {f"rnn/{k}": s for k, s in expected.items()})["rnn"]


@pytest.mark.parametrize(
    "input_size,hidden,num_layers,seed",
    [(8, 4, 1, 0), (16, 8, 1, 1), (8, 4, 2, 2), (16, 8, 2, 3), (9, 4, 1, 4), (9, 4, 2, 5)],
)
def test_matches_packed_torch_lstm(input_size, hidden, num_layers, seed):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(len(LENGTHS), WIDTH, input_size)).astype(np.float32)
    lstm = torch_lstm(input_size, hidden, num_layers, seed)
    ref = torch_packed(lstm, x, LENGTHS)

    module = BiLSTM(hidden, num_layers)
    params = convert(lstm, module, x)
    apply = jax.jit(module.apply)
    out = np.asarray(apply({"params": params}, x, LENGTHS))

    assert out.shape == (len(LENGTHS), WIDTH, 2 * hidden)
    assert np.abs(out - ref).max() <= 1e-5 * np.abs(ref).max()
    padded = np.arange(WIDTH)[None, :] >= LENGTHS[:, None]
    assert np.all(out[padded] == 0)
    # Outputs must move with the input: the backward half of position 0 sees the whole row.
    assert np.abs(out[0, 0, hidden:]).min() > 0

    # Padded input values (even inf / nan) must not reach any output.
    noisy = np.where(padded[..., None], rng.normal(size=x.shape) * 100, x).astype(np.float32)
    noisy[2, 0, 0], noisy[1, 5, 1] = np.inf, np.nan
    np.testing.assert_array_equal(np.asarray(apply({"params": params}, noisy, LENGTHS)), out)


def test_backward_starts_at_each_rows_last_word():
    """A row's outputs depend only on its own length, not on W: a wider pad changes nothing."""
    lstm = torch_lstm(8, 4, 1, seed=7)
    x = np.random.default_rng(7).normal(size=(len(LENGTHS), WIDTH, 8)).astype(np.float32)
    module = BiLSTM(4)
    params = convert(lstm, module, x)
    wide = np.concatenate([x, np.ones((len(LENGTHS), 5, 8), np.float32)], axis=1)
    narrow_out = module.apply({"params": params}, x, LENGTHS)
    wide_out = module.apply({"params": params}, wide, LENGTHS)
    # Equal up to float rounding (XLA blocks the two matmul shapes differently); starting the
    # backward pass at W-1 instead would change the outputs by O(0.1).
    np.testing.assert_allclose(np.asarray(wide_out[:, :WIDTH]), np.asarray(narrow_out), rtol=0, atol=1e-6)
    assert np.all(np.asarray(wide_out[:, WIDTH:]) == 0)


def test_gradients_are_finite_with_nan_padding_and_empty_rows():
    module = BiLSTM(4, num_layers=2)
    x = np.random.default_rng(0).normal(size=(len(LENGTHS), WIDTH, 8)).astype(np.float32)
    x[1, 3:] = np.nan
    params = module.init(jax.random.key(0), x, LENGTHS)
    grads = jax.grad(lambda p, x: module.apply(p, x, LENGTHS).sum(), argnums=(0, 1))(params, x)
    leaves = jax.tree_util.tree_leaves(nn.meta.unbox(grads))
    assert all(np.all(np.isfinite(g)) for g in leaves)
    assert np.all(np.asarray(grads[1])[2] == 0)  # the empty row gets no gradient


def test_param_layout_and_exact_round_trip():
    lstm = torch_lstm(9, 4, 2, seed=0)
    module = BiLSTM(4, num_layers=2)
    params = convert(lstm, module, np.zeros((len(LENGTHS), WIDTH, 9), np.float32))
    flat = flatten_params(params)
    assert flat["layer_1/backward/input_kernel"].shape == (8, 16)
    state = lstm.state_dict()
    for layer in range(2):
        for suffix, direction in (("", "forward"), ("_reverse", "backward")):
            p = f"layer_{layer}/{direction}/"
            np.testing.assert_array_equal(flat[p + "input_kernel"].T, state[f"weight_ih_l{layer}{suffix}"].numpy())
            np.testing.assert_array_equal(flat[p + "hidden_kernel"].T, state[f"weight_hh_l{layer}{suffix}"].numpy())
            np.testing.assert_array_equal(flat[p + "input_bias"], state[f"bias_ih_l{layer}{suffix}"].numpy())
            np.testing.assert_array_equal(flat[p + "hidden_bias"], state[f"bias_hh_l{layer}{suffix}"].numpy())


def test_conversion_rejects_a_layer_the_model_lacks():
    lstm = torch_lstm(8, 4, 2, seed=0)
    with pytest.raises(CheckpointMismatchError, match="weight_ih_l1_reverse"):
        convert(lstm, BiLSTM(4, num_layers=1), np.zeros((len(LENGTHS), WIDTH, 8), np.float32))
