"""The host-side processor against gliner's own batch preparation."""

from __future__ import annotations

import json
from pathlib import Path

import jax
import numpy as np
import pytest

from gliner_fixtures import build_relex_model, reference_forward

from relex_jax import RelexModel
from relex_jax.data.processor import build_batch, split_words, word_mask

CONLL04_TEST = Path(__file__).resolve().parents[2] / "shared" / "data" / "conll04" / "test.jsonl"
TEXTS = [
    "Alice Smith works at Google in Paris.",
    "Bob's start-up, Quixotic_Widgets, moved to Reykjavik on 3/4/2021 -- see e-mail.",
    "Zygmunt Kowalczyk met Hiroshi Tanaka.",
    "Tokyo",
]


def test_split_words_offsets():
    words, starts, ends = split_words("Bob's start-up, e_mail!")
    assert words == ["Bob", "'", "s", "start-up", ",", "e_mail", "!"]
    assert all("Bob's start-up, e_mail!"[s:e] == w for w, s, e in zip(words, starts, ends))


def test_word_mask_counts_transitions():
    ids = [None, 0, 1, 1, 2, 3, 3, None, None]
    assert word_mask(ids, skip=1, pooling="first") == [0, 0, 1, 0, 2, 3, 0, 0, 0]
    assert word_mask(ids, skip=1, pooling="last") == [0, 0, 0, 1, 2, 0, 3, 0, 0]
    assert word_mask(ids, skip=1, pooling="mean") == [0, 0, 1, 1, 2, 3, 3, 0, 0]


@pytest.fixture(scope="module", params=["first", "mean"])
def model(request, tmp_path_factory):
    gliner_model, path = build_relex_model(tmp_path_factory.mktemp("m") / "model", seed=0, subtoken_pooling=request.param)
    return gliner_model, RelexModel.from_pretrained(path, devices=jax.devices()[:1])  # batches of any row count


def _texts():
    texts = list(TEXTS)
    if CONLL04_TEST.is_file():
        lines = CONLL04_TEST.read_text().splitlines()[:40]
        texts += [" ".join(json.loads(line)["tokens"]) for line in lines]
    return texts


@pytest.mark.parametrize("per_text", [False, True])
def test_batch_equals_gliner(model, per_text):
    gliner_model, relex = model
    texts = _texts()
    if per_text:
        labels = [["person", "organization", "location"][: 1 + i % 3] + ([""] if i % 4 == 0 else []) for i in range(len(texts))]
        relations = [["works at", "located in"][: i % 3] for i in range(len(texts))]
    else:
        labels, relations = ["person", "organization", "location"], ["works at", "located in"]
    ref = reference_forward(gliner_model, texts, labels, relations, threshold=1.0)
    per_labels = labels if per_text else [labels] * len(texts)
    per_relations = relations if per_text else [relations] * len(texts)
    cfg = relex.config
    batch = build_batch(
        relex.tokenizer, [split_words(t)[0] for t in texts], per_labels, per_relations,
        ent_token=cfg.ent_token, sep_token=cfg.sep_token, rel_token=cfg.rel_token, max_width=cfg.max_width,
        pad_id=cfg.encoder.pad_token_id, pooling=cfg.subtoken_pooling,
    )
    for name in ("input_ids", "attention_mask", "words_mask"):
        np.testing.assert_array_equal(getattr(batch, name), ref[name], err_msg=name)
    np.testing.assert_array_equal(batch.text_lengths, ref["text_lengths"][:, 0])
    np.testing.assert_array_equal(batch.span_mask.reshape(len(texts), -1), ref["span_mask"])
    out = relex.forward(batch.model_inputs(), threshold=0.5)
    np.testing.assert_allclose(np.asarray(out.entity_logits), ref["logits"], rtol=0, atol=1e-5 * np.abs(ref["logits"]).max())


def test_buckets_pad_without_changing_real_outputs(model):
    _, relex = model
    cfg = relex.config
    args = ([split_words(t)[0] for t in TEXTS], [["person", "location"]] * 4, [["works at"]] * 4)
    kwargs = dict(ent_token=cfg.ent_token, sep_token=cfg.sep_token, rel_token=cfg.rel_token, max_width=cfg.max_width,
                  pad_id=cfg.encoder.pad_token_id, pooling=cfg.subtoken_pooling)
    tight = build_batch(relex.tokenizer, *args, **kwargs)
    padded = build_batch(relex.tokenizer, *args, buckets={"tokens": (96, 160), "words": (32,), "entities": (4,), "relations": (4,)}, **kwargs)
    assert padded.input_ids.shape[1] in (96, 160) and padded.input_ids.shape[1] > tight.input_ids.shape[1] and padded.span_mask.shape[1] == 32 and padded.entity_prompt_index.shape[1] == 4
    a = np.asarray(relex.forward(tight.model_inputs(), 0.5).entity_logits)
    b = np.asarray(relex.forward(padded.model_inputs(), 0.5).entity_logits)
    words, classes = a.shape[1], a.shape[3]
    np.testing.assert_allclose(b[:, :words, :, :classes][tight.span_mask], a[tight.span_mask], rtol=0, atol=1e-5 * np.abs(a).max())


def test_bad_batches_fail_early(model):
    _, relex = model
    cfg = relex.config
    kwargs = dict(ent_token=cfg.ent_token, sep_token=cfg.sep_token, rel_token=cfg.rel_token, max_width=cfg.max_width)
    with pytest.raises(ValueError, match="at least one text"):
        build_batch(relex.tokenizer, [], [], [], **kwargs)
    with pytest.raises(ValueError, match=r"texts \[1\] have no words"):
        build_batch(relex.tokenizer, [["Tokyo"], []], [["location"]] * 2, [[]] * 2, **kwargs)
    with pytest.raises(ValueError, match="2 texts but 1 entity label lists"):
        build_batch(relex.tokenizer, [["a"], ["b"]], [["x"]], [[], []], **kwargs)
