"""Decoding parity with gliner's `SpanRelexDecoder` and its text mapping (spec §11).

Two levels:
- decoder level, exact: our decoder on gliner's own raw outputs (converted to our layout) against
  gliner's decoder object on the same outputs;
- end to end: our model's outputs + our decoder + text mapping against gliner's `inference` dicts.
"""

from __future__ import annotations

import numpy as np
import pytest

from gliner_fixtures import build_relex_model, reference_forward
from test_relex_parity import LABELS, RELATIONS, TEXTS, moderate_threshold, our_forward

from relex_jax.decoding import (
    EntitySpan,
    decode_entities,
    decode_relations,
    entities_to_dicts,
    relations_to_dicts,
)

torch = pytest.importorskip("torch")

PER_TEXT_LABELS = [["person", "organization", "location"], ["person"], ["location", "person"], ["organization"], ["date"]]
LABEL_SETS = {"shared": LABELS, "per_text": PER_TEXT_LABELS}
MODES = [(True, False), (True, True), (False, False), (False, True)]
MODE_IDS = ["flat", "flat_multi", "nested", "nested_multi"]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    model, path = build_relex_model(tmp_path_factory.mktemp("decoding") / "model", seed=0)
    cases = {}
    for name, labels in LABEL_SETS.items():
        threshold = moderate_threshold(reference_forward(model, TEXTS, labels, RELATIONS))
        ref = reference_forward(model, TEXTS, labels, RELATIONS, threshold=threshold)
        # A low decoding threshold (midway between observed probabilities) where many
        # overlapping candidates compete; the forward's own selection stays at `threshold`.
        probs = np.unique(1 / (1 + np.exp(-ref["logits"].astype(np.float64))))
        i = int(0.5 * len(probs))
        low = float(probs[i - 1] + probs[i]) / 2
        cases[name] = (labels, threshold, low, ref)
    return model, path, cases


def gliner_batch(model, labels):
    """The decoder-facing fields of gliner's collated batch, as `inference` builds them."""
    prepared = model.prepare_batch(TEXTS, labels, relations=RELATIONS)
    batch = model.collate_batch(
        prepared["input_x"],
        prepared["entity_types"],
        model.create_collator(),
        relation_types=prepared["relation_types"],
        label_names=prepared.get("label_names"),
    )
    return prepared, batch


def names_per_row(labels):
    return labels if isinstance(labels[0], list) else [labels] * len(TEXTS)


def ref_as_our_layout(ref, k):
    """gliner's packed entities / pair list as (entity_index, entity_mask, pair_mask, relation_logits)."""
    spans, emask = ref["entity_spans"], ref["entity_mask"].astype(bool)
    b, e = emask.shape
    entity_index = spans[..., 0] * k + (spans[..., 1] - spans[..., 0])
    pair_mask = np.zeros((b, e, e), bool)
    logits = np.zeros((b, e, e, ref["rel_logits"].shape[-1]), np.float32)
    for row in range(b):
        idx = ref["rel_idx"][row][ref["rel_mask"][row]]
        pair_mask[row, idx[:, 0], idx[:, 1]] = True
        logits[row, idx[:, 0], idx[:, 1]] = ref["rel_logits"][row][ref["rel_mask"][row]]
    return entity_index, emask, pair_mask, logits


def assert_same_spans(ours, theirs, tol):
    assert len(ours) == len(theirs)
    for row_ours, row_theirs in zip(ours, theirs):
        assert [(s.start, s.end, s.label, s.span_index, s.class_index) for s in row_ours] == [
            (s.start, s.end, s.entity_type, s.span_index, s.class_index) for s in row_theirs
        ]
        for s, t in zip(row_ours, row_theirs):
            assert type(s.score) is float and abs(s.score - t.score) <= tol


def assert_same_relations(ours, theirs, tol):
    assert len(ours) == len(theirs)
    for row_ours, row_theirs in zip(ours, theirs):
        assert [(r.head, r.label, r.tail) for r in row_ours] == [(r[0], r[1], r[2]) for r in row_theirs]
        for r, t in zip(row_ours, row_theirs):
            assert type(r.score) is float and abs(r.score - t[3]) <= tol


def strip_scores(items):
    return [[{k: v for k, v in d.items() if k not in ("score", "class_probs")} for d in row] for row in items]


def assert_same_dicts(ours, theirs, tol):
    assert strip_scores(ours) == strip_scores(theirs)
    for row_ours, row_theirs in zip(ours, theirs):
        for a, b in zip(row_ours, row_theirs):
            assert list(a) == list(b)  # key order
            assert type(a["score"]) is float and abs(a["score"] - b["score"]) <= tol


@pytest.mark.parametrize("label_set", sorted(LABEL_SETS))
@pytest.mark.parametrize("level", ["moderate", "low"])
@pytest.mark.parametrize("flat_ner,multi_label", MODES, ids=MODE_IDS)
def test_decoder_on_reference_outputs(setup, label_set, level, flat_ner, multi_label):
    model, _, cases = setup
    labels, threshold, low, ref = cases[label_set]
    thr = threshold if level == "moderate" else low
    _, batch = gliner_batch(model, labels)
    k = ref["logits"].shape[2]
    theirs_e, theirs_r = model.decoder.decode(
        batch["tokens"],
        batch["id_to_classes"],
        torch.from_numpy(ref["logits"]),
        rel_idx=torch.from_numpy(ref["rel_idx"]),
        rel_logits=torch.from_numpy(ref["rel_logits"]),
        rel_mask=torch.from_numpy(ref["rel_mask"]),
        flat_ner=flat_ner,
        threshold=thr,
        relation_threshold=thr,
        multi_label=multi_label,
        rel_id_to_classes=batch["rel_id_to_classes"],
        entity_spans=torch.from_numpy(ref["entity_spans"]),
    )
    ours_e = decode_entities(
        ref["logits"], [len(t) for t in batch["tokens"]], None, names_per_row(labels), thr, flat_ner, multi_label
    )
    assert_same_spans(ours_e, theirs_e, tol=1e-6)
    ours_r = decode_relations(ours_e, *ref_as_our_layout(ref, k), RELATIONS, thr, max_width=k)
    assert_same_relations(ours_r, theirs_r, tol=1e-6)
    assert sum(map(len, theirs_e)) > len(TEXTS)
    if level == "low" and not multi_label:
        # The low threshold must make spans compete: more candidates than survivors.
        candidates = (1 / (1 + np.exp(-ref["logits"])) > thr).sum()
        assert candidates > 2 * sum(map(len, theirs_e))
    if level == "moderate" and flat_ner:
        assert sum(map(len, theirs_r)) > 0, "fixture should decode relations"


@pytest.mark.parametrize("label_set", sorted(LABEL_SETS))
@pytest.mark.parametrize("flat_ner,multi_label", MODES, ids=MODE_IDS)
def test_end_to_end_against_gliner_inference(setup, label_set, flat_ner, multi_label):
    model, path, cases = setup
    labels, threshold, _, ref = cases[label_set]
    theirs_ents, theirs_rels = model.inference(
        TEXTS, labels, relations=RELATIONS, threshold=threshold, flat_ner=flat_ner, multi_label=multi_label
    )
    config, out, _ = our_forward(path, ref, threshold=threshold)
    prepared, batch = gliner_batch(model, labels)
    spans = decode_entities(
        np.asarray(out.entity_logits), [len(t) for t in batch["tokens"]], None, names_per_row(labels),
        threshold, flat_ner, multi_label,
    )
    rels = decode_relations(
        spans, np.asarray(out.entity_index), np.asarray(out.entity_mask), np.asarray(out.pair_mask),
        np.asarray(out.relation_logits), RELATIONS, threshold, max_width=config.max_width,
    )
    ours_ents, ours_rels = [], []
    for row, text in enumerate(TEXTS):
        ents = entities_to_dicts(spans[row], text, prepared["start_token_map"][row], prepared["end_token_map"][row])
        ours_ents.append(ents)
        ours_rels.append(relations_to_dicts(rels[row], ents))
    assert sum(map(len, theirs_ents)) > len(TEXTS)
    assert_same_dicts(ours_ents, theirs_ents, tol=1e-4)
    assert_same_dicts(ours_rels, theirs_rels, tol=1e-4)
    if flat_ner:
        assert sum(map(len, theirs_rels)) > 0, "fixture should decode relations"


def test_relation_threshold_is_compared_in_double_precision():
    """gliner converts the float32 probability to a Python float before `prob <= threshold`."""
    logit = np.float32(0.1)
    prob32 = 1 / (1 + np.exp(-logit))
    threshold = float(np.float32(prob32)) - 1e-12  # rounds to prob32 in float32, below it in float64
    assert np.float32(threshold) == np.float32(prob32)
    spans = [[EntitySpan(0, 0, "a", 0.9, 0, 0), EntitySpan(1, 1, "a", 0.9, 4, 0)]]
    rels = decode_relations(
        spans, np.array([[0, 4]]), np.ones((1, 2), bool), ~np.eye(2, dtype=bool)[None],
        np.full((1, 2, 2, 1), logit, np.float32), ["r"], threshold, max_width=4,
    )
    assert [(r.head, r.label, r.tail) for r in rels[0]] == [(0, "r", 1), (1, "r", 0)]


def test_padded_classes_and_words_never_decode():
    logits = np.full((2, 3, 2, 2), 5.0, np.float32)  # every cell passes
    spans = decode_entities(logits, [2, 3], [1, 2], [["x"], ["x", "y"]], 0.5, flat_ner=False, multi_label=True)
    assert {(s.start, s.end, s.label) for s in spans[0]} == {(0, 0, "x"), (0, 1, "x"), (1, 1, "x")}
    # Nested mode, equal scores: candidate order decides; (1, 2) crosses the accepted (0, 1).
    assert {(s.start, s.end) for s in spans[1]} == {(0, 0), (0, 1), (1, 1), (2, 2)}
    assert len(spans[1]) == 8
    assert [s.start for s in spans[1]] == sorted(s.start for s in spans[1])
