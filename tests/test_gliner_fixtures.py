"""Smoke test of the offline GLiNER-Relex reference fixtures (tests/gliner_fixtures.py)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from gliner_fixtures import (
    GLiNER,
    build_relex_model,
    build_tokenizer_dir,
    reference_forward,
    state_dicts_equal,
    transformers,
)

TEXTS = [
    "Alice Smith works at Google in Paris.",
    "Bob founded Siemens in Berlin in 1990.",
    "Maria Garcia met John Novak in Tokyo on Monday.",
    "Apple hired Wei Chen.",
]
LABELS = ["person", "organization", "location"]
RELATIONS = ["works at", "located in"]


@pytest.fixture(scope="module")
def relex(tmp_path_factory):
    model, path = build_relex_model(tmp_path_factory.mktemp("relex") / "model", seed=0)
    return model, path


def test_tokenizer_dir_splits_real_words(tmp_path):
    path = build_tokenizer_dir(tmp_path / "tok")
    tok = transformers.AutoTokenizer.from_pretrained(path)
    assert type(tok).__name__ == "DebertaV2Tokenizer"
    assert 400 <= len(tok) <= 1000
    assert tok.convert_ids_to_tokens([0, 1, 2, 3]) == ["[PAD]", "[CLS]", "[SEP]", "[UNK]"]
    ids = tok("Zygmunt Kowalczyk joined Quixotic Widgets in Reykjavik.")["input_ids"]
    pieces = tok.convert_ids_to_tokens(ids)
    assert pieces[0] == "[CLS]" and pieces[-1] == "[SEP]"
    body = ids[1:-1]
    assert tok.unk_token_id not in body, pieces
    assert len(body) > 8 and len(set(body)) > 8, pieces  # several different pieces, not one per word


def test_checkpoint_files_and_strict_reload(relex):
    model, path = relex
    names = {p.name for p in path.iterdir()}
    assert {"gliner_config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"} <= names
    assert "pytorch_model.bin" not in names
    config = json.loads((path / "gliner_config.json").read_text())
    assert config["relations_layer"] == "none" and config["span_mode"] == "markerV0"
    assert (config["hidden_size"], config["max_width"], config["num_rnn_layers"]) == (64, 4, 1)
    enc = config["encoder_config"]
    assert (enc["hidden_size"], enc["num_hidden_layers"], enc["position_buckets"]) == (64, 2, 256)
    assert enc["vocab_size"] == config["vocab_size"] == config["rel_token_index"] + 1

    again = GLiNER.from_pretrained(str(path), local_files_only=True, strict=True)
    assert state_dicts_equal(model.model.state_dict(), again.model.state_dict()) == []
    # The weights are the re-drawn ones (std 0.3), not transformers' default init (std 0.02).
    q = model.model.state_dict()["token_rep_layer.bert_layer.model.encoder.layer.0.attention.self.query_proj.weight"]
    assert 0.25 < float(q.std()) < 0.35


def test_reference_forward_shapes_and_selection(relex):
    model, _ = relex
    out = reference_forward(model, TEXTS, LABELS, RELATIONS, threshold=0.5)
    B, K, C, R, D = len(TEXTS), 4, len(LABELS), len(RELATIONS), 64
    lengths = out["text_lengths"][:, 0]
    W = int(lengths.max())
    assert list(lengths) == [len(list(model.data_processor.words_splitter(t))) for t in TEXTS]
    assert out["logits"].shape == (B, W, K, C)
    assert out["span_idx"].shape == (B, W * K, 2) and out["span_mask"].shape == (B, W * K)
    assert out["prompts_embedding"].shape == (B, C, D)
    assert out["rel_prompts_embedding"].shape == (B, R, D)
    assert out["words_embedding"].shape == (B, W, D)
    assert out["input_ids"].shape == out["attention_mask"].shape == out["words_mask"].shape
    assert list(out["words_mask"].max(1)) == list(lengths)
    # Row l*K + k is the span (l, l+k) for l < L, in-text iff l + k < L; rows past L*K are (0, 0) padding.
    for b, L in enumerate(lengths):
        table = np.array([(l, l + k) for l in range(L) for k in range(K)])
        assert np.array_equal(out["span_idx"][b, : L * K], table)
        assert np.array_equal(out["span_mask"][b, : L * K], table[:, 1] < L)
        assert not out["span_mask"][b, L * K :].any() and (out["span_idx"][b, L * K :] == 0).all()

    logits = out["logits"]
    assert np.isfinite(logits).all() and logits.std() > 1.0
    assert np.isfinite(out["rel_logits"]).all()

    # Entity selection: sigmoid(max_c logit) > threshold on in-text spans, packed left in span order.
    prob = 1 / (1 + np.exp(-logits.reshape(B, W * K, C).max(-1).astype(np.float64)))
    keep = (prob > 0.5) & out["span_mask"]
    n = keep.sum(1)
    E = out["entity_spans"].shape[1]
    assert E == n.max() > 0 and np.array_equal(out["entity_mask"].sum(1), n)
    for b in range(B):
        assert np.array_equal(out["entity_spans"][b, : n[b]], out["span_idx"][b][keep[b]])
        assert (out["entity_spans"][b, n[b]:] == 0).all()
    # All ordered pairs (i, j), i != j, row-major; padding -1.
    N = out["rel_idx"].shape[1]
    assert N == max((n * (n - 1)).max(), 1) and out["rel_logits"].shape == (B, N, R)
    for b in range(B):
        expected = [(i, j) for i in range(n[b]) for j in range(n[b]) if i != j]
        assert out["rel_mask"][b].sum() == len(expected)
        assert out["rel_idx"][b, : len(expected)].tolist() == [list(p) for p in expected]
        assert (out["rel_idx"][b, len(expected):] == -1).all()
    assert "pred_adj_matrix" not in out


def test_threshold_gives_moderate_selection(relex):
    """Logits spread out: threshold 0.5 keeps some spans (not none, not all) and gives pairs."""
    model, _ = relex
    out = reference_forward(model, TEXTS, LABELS, RELATIONS, threshold=0.5)
    B, W, K, C = out["logits"].shape
    valid = out["span_mask"]
    logits = out["logits"].reshape(B, W * K, C)[valid]
    prob = 1 / (1 + np.exp(-logits.max(-1).astype(np.float64)))
    selected, pairs = out["entity_mask"].sum(1), out["rel_mask"].sum(1)
    rel = out["rel_logits"][out["rel_mask"]]
    higher = reference_forward(model, TEXTS, LABELS, RELATIONS, threshold=0.8)
    print(
        f"\nentity logits min/median/max {np.percentile(logits, [0, 50, 100]).round(2)},"
        f" max-prob quartiles {np.percentile(prob, [25, 50, 75]).round(3)}"
        f"\nthreshold 0.5: selected {selected} of {valid.sum(1)} spans, pairs {pairs},"
        f" relation logits min/median/max {np.percentile(rel, [0, 50, 100]).round(2)}"
        f"\nthreshold 0.8: selected {higher['entity_mask'].sum(1)}, pairs {higher['rel_mask'].sum(1)}"
    )
    assert 0.05 < prob.mean() < 0.8 and prob.std() > 0.1  # not saturated at 0 or 1
    assert 2 <= selected.sum() < 0.6 * valid.sum() and (selected > 0).sum() >= 2
    assert pairs.sum() > 0 and rel.std() > 0.5
    assert (higher["entity_mask"].sum(1) <= selected).all() and higher["entity_mask"].sum() < selected.sum()


def test_overrides_reach_both_configs(tmp_path):
    model, path = build_relex_model(
        tmp_path / "m", seed=3, hidden_size=48, relations_layer="dot", position_buckets=32, max_width=3
    )
    config = json.loads((path / "gliner_config.json").read_text())
    assert (config["hidden_size"], config["relations_layer"], config["max_width"]) == (48, "dot", 3)
    assert (config["encoder_config"]["hidden_size"], config["encoder_config"]["position_buckets"]) == (64, 32)
    assert "token_rep_layer.projection.weight" in model.model.state_dict()  # D != H
    out = reference_forward(model, TEXTS[:2], LABELS[:2], RELATIONS, threshold=0.5, adjacency_threshold=0.9)
    E = out["entity_spans"].shape[1]
    assert out["logits"].shape[2:] == (3, 2) and out["pred_adj_matrix"].shape == (2, E, E)
    adj = out["pred_adj_matrix"]
    for b in range(2):
        n = int(out["entity_mask"][b].sum())
        chosen = [(i, j) for i in range(n) for j in range(n) if i != j and adj[b, i, j] > 0.9]
        assert out["rel_idx"][b, : len(chosen)].tolist() == [list(p) for p in chosen]
        assert out["rel_mask"][b].sum() == len(chosen)
    with pytest.raises(TypeError, match="unknown config override"):
        build_relex_model(tmp_path / "bad", hidden_sise=32)
