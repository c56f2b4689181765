"""`RelexModel.inference` end to end (strings in, dicts out) against `gliner.inference`, plus
our own behaviour where gliner has none: windows over long texts, bad input, several devices.

The parity corpus is every CoNLL04 test sentence (when `../shared/data` is present) plus
generated sentences and the parity texts: always at least 200 texts. Thresholds sit in wide
gaps between the reference's probabilities, so float noise (~1e-6) cannot flip a decision.
"""

from __future__ import annotations

import json
import logging
import os
import random
from pathlib import Path

import jax
import numpy as np
import pytest

from gliner_fixtures import build_relex_model, generate_corpus, reference_forward
from test_decoding import assert_same_dicts
from test_relex_parity import LABELS, RELATIONS, TEXTS

from relex_jax import RelexModel
from relex_jax.data.labels import MAX_LABELS
from relex_jax.decoding import EntitySpan, Relation, merge_windows

torch = pytest.importorskip("torch")

DATA_DIR = Path(os.environ.get("RELEX_JAX_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
CONLL04_TEST = DATA_DIR / "conll04" / "test.jsonl"


def conll04_test_texts() -> list[str]:
    if not CONLL04_TEST.is_file():
        return []
    with CONLL04_TEST.open() as f:
        return [" ".join(json.loads(line)["tokens"]) for line in f if line.strip()]


def corpus() -> list[str]:
    conll = conll04_test_texts()
    generated = generate_corpus(n_sentences=40 if conll else 240, seed=7)
    return TEXTS + ["", "   \n"] + conll + generated


def gap_threshold(probs: np.ndarray, quantile: float) -> tuple[float, float]:
    """Midpoint of the widest gap between sorted probabilities near `quantile`, and its half-width."""
    values = np.unique(np.asarray(probs, np.float64))
    lo, hi = int((quantile - 0.05) * len(values)), int((quantile + 0.05) * len(values))
    gaps = np.diff(values[lo:hi])
    i = lo + int(np.argmax(gaps))
    return float(values[i] + values[i + 1]) / 2, float(values[i + 1] - values[i]) / 2


def calibrate(model, texts, labels, relations, chunk: int = 32):
    """Entity and relation thresholds at which many spans and some relations pass, far from any
    reference probability. The reference runs on chunks of similar length (one padded batch of
    every text would be slow)."""
    texts = sorted((t for t in texts if t.strip()), key=len)
    chunks = [texts[i : i + chunk] for i in range(0, len(texts), chunk)]

    def probabilities(threshold):
        spans, pairs = [], []
        for part in chunks:
            ref = reference_forward(model, part, labels, relations, threshold=threshold)
            logits = ref["logits"].astype(np.float64)
            spans.append((1 / (1 + np.exp(-logits)))[ref["span_mask"].reshape(logits.shape[:3])].ravel())
            pairs.append((1 / (1 + np.exp(-ref["rel_logits"].astype(np.float64))))[ref["rel_mask"]].ravel())
        return np.concatenate(spans), np.concatenate(pairs)

    threshold, margin = gap_threshold(probabilities(0.5)[0], 0.97)
    relation_threshold, rel_margin = gap_threshold(probabilities(threshold)[1], 0.9)
    assert min(margin, rel_margin) > 2e-6, "no safe threshold gap in this corpus"
    return threshold, relation_threshold


@pytest.fixture(scope="module")
def parity(tmp_path_factory):
    model, path = build_relex_model(tmp_path_factory.mktemp("inference") / "model", seed=0)
    texts = corpus()
    assert len([t for t in texts if t.strip()]) >= 200
    thresholds = calibrate(model, texts, LABELS, RELATIONS)
    return model, path, RelexModel.from_pretrained(path), texts, thresholds


def both(model, relex, texts, labels, relations, thresholds, ours_only=None, **kwargs):
    threshold, relation_threshold = thresholds
    settings = dict(threshold=threshold, relation_threshold=relation_threshold, **kwargs)
    theirs = model.inference(texts, labels, relations=relations, **settings)
    ours = relex.inference(texts, labels, relations, **settings, **(ours_only or {}))
    return ours, theirs


def assert_same_results(ours, theirs):
    assert len(ours[0]) == len(theirs[0])
    assert_same_dicts(ours[0], theirs[0], tol=1e-4)
    assert_same_dicts(ours[1], theirs[1], tol=1e-4)


# Every text for the two extreme modes; the first 80 (parity texts, blanks, CoNLL04) for the others.
@pytest.mark.parametrize("flat_ner,multi_label,count", [(True, False, None), (False, True, None),
                                                        (True, True, 80), (False, False, 80)],
                         ids=["flat", "nested_multi", "flat_multi", "nested"])
def test_inference_matches_gliner(parity, flat_ner, multi_label, count):
    model, _, relex, texts, thresholds = parity
    texts = texts[:count]
    ours, theirs = both(model, relex, texts, LABELS, RELATIONS, thresholds, flat_ner=flat_ner, multi_label=multi_label)
    assert_same_results(ours, theirs)
    assert ours[0][5] == ours[0][6] == ours[1][5] == [], "empty and whitespace-only texts give []"
    assert sum(map(len, theirs[0])) > len(texts) and sum(map(len, theirs[1])) > len(texts) / 4


def test_per_text_labels_and_descriptions_match_gliner(parity):
    model, _, relex, texts, thresholds = parity
    rng = random.Random(0)
    labels = [rng.sample(LABELS, rng.randint(1, len(LABELS))) for _ in texts]
    relations = [rng.sample(RELATIONS, rng.randint(1, len(RELATIONS))) for _ in texts]
    ours, theirs = both(model, relex, texts, labels, relations, thresholds, batch_size=16)
    assert_same_results(ours, theirs)
    assert sum(map(len, theirs[1])) > 0
    described = {"human": "person", "company": "organization", "place": "location"}
    ours, theirs = both(model, relex, texts[:60], described, RELATIONS, thresholds)
    assert_same_results(ours, theirs)
    assert {e["label"] for row in ours[0] for e in row} == set(described)


def test_single_text_helpers_match_gliner(parity):
    model, _, relex, texts, (threshold, relation_threshold) = parity
    for text in texts[:3]:
        assert_same_dicts(
            [relex.predict_entities(text, LABELS, threshold=threshold)],
            [model.predict_entities(text, LABELS, threshold=threshold)], tol=1e-4,
        )
        ours = relex.predict_relations(text, LABELS, RELATIONS, threshold=threshold, relation_threshold=relation_threshold)
        theirs = model.predict_relations(text, LABELS, RELATIONS, threshold=threshold, relation_threshold=relation_threshold)
        assert_same_dicts([ours[0]], [theirs[0]], tol=1e-4)
        assert_same_dicts([ours[1]], [theirs[1]], tol=1e-4)


def test_truncation_mode_matches_gliner(tmp_path, parity, caplog):
    *_, texts, _ = parity
    model, path = build_relex_model(tmp_path / "short", seed=0, max_len=16)
    texts = [t for t in texts if t.strip()]
    # Texts well past max_len whether or not CoNLL04 is present: some sentences, and pairs of them.
    texts = texts[:80] + [" ".join(texts[i : i + 2]) for i in range(80, 120, 2)]
    long_rows = [i for i, t in enumerate(texts) if len(t.split()) > 16]  # split() undercounts words
    assert len(long_rows) >= 20
    thresholds = calibrate(model, texts, LABELS, RELATIONS)
    relex = RelexModel.from_pretrained(path)
    with caplog.at_level(logging.WARNING, logger="relex_jax"):
        ours, theirs = both(model, relex, texts, LABELS, RELATIONS, thresholds, ours_only=dict(long_texts="truncate"))
    assert_same_results(ours, theirs)
    warned = [r.getMessage() for r in caplog.records if "truncated" in r.getMessage()]
    assert any(msg.startswith(f"text {long_rows[0]} has") for msg in warned)
    assert max(e["end"] for row in ours[0] for e in row) <= max(map(len, texts))


def test_compiled_shapes_stay_few(parity):
    *_, path, _, texts, (threshold, _) = parity
    relex = RelexModel.from_pretrained(path)
    relex.inference(texts, LABELS, RELATIONS, threshold=threshold, batch_size=8)
    batches = -(-len(texts) // 8)
    # The span stage compiles once per input shape, the relation stage once per (shape, cap).
    input_shapes = {shapes for shapes, _ in relex.compiled_shapes}
    assert 1 <= len(input_shapes) <= 8 and len(relex.compiled_shapes) < batches


def test_eight_devices_equal_one(parity):
    _, path, _, texts, (threshold, relation_threshold) = parity
    assert len(jax.devices()) == 8
    subset = texts[:48]
    results = []
    for devices in (jax.devices()[:1], jax.devices()):
        relex = RelexModel.from_pretrained(path, devices=devices)
        results.append(relex.inference(subset, LABELS, RELATIONS, threshold=threshold,
                                       relation_threshold=relation_threshold, batch_size=16))
        assert all(len(leaf.sharding.device_set) == len(devices) for leaf in jax.tree.leaves(relex.variables))
    one, eight = results
    # Same entities, relations, offsets and order; scores agree to float32 reduction order (XLA
    # picks matmul blockings per shape, and a device's share of a batch has fewer rows).
    assert_same_dicts(eight[0], one[0], tol=1e-5)
    assert_same_dicts(eight[1], one[1], tol=1e-5)
    assert sum(map(len, one[0])) > 0 and sum(map(len, one[1])) > 0


# ---------------------------------------------------------------------------------------------
# Long texts: overlapping windows.


def test_windows_cover_long_texts_with_right_offsets(parity):
    _, _, relex, texts, (threshold, relation_threshold) = parity
    long_text = " ".join(t for t in texts[7:37])  # 300+ words
    assert len(long_text.split()) > 300
    settings = dict(threshold=threshold, relation_threshold=relation_threshold, window_size=48, window_stride=32)
    entities, relations = relex.inference([long_text], LABELS, RELATIONS, **settings)
    entities, relations = entities[0], relations[0]
    truncated = relex.inference([long_text], LABELS, RELATIONS, long_texts="truncate", **settings)[0][0]
    assert max(e["end"] for e in entities) > max(e["end"] for e in truncated) + 300, "windows reach the end"
    assert all(long_text[e["start"] : e["end"]] == e["text"] for e in entities)
    assert [e["start"] for e in entities] == sorted(e["start"] for e in entities)
    for a, b in zip(entities, entities[1:]):
        assert a["end"] <= b["start"], "flat_ner: no overlaps across windows either"
    for rel in relations:
        head, tail = entities[rel["head"]["entity_idx"]], entities[rel["tail"]["entity_idx"]]
        assert (head["start"], head["end"]) == (rel["head"]["start"], rel["head"]["end"])
        assert (tail["start"], tail["end"]) == (rel["tail"]["start"], rel["tail"]["end"])
    assert relations, "relations are found inside windows"
    # A text no longer than one window is one window: identical to truncation mode.
    short = relex.inference(texts[:20], LABELS, RELATIONS, threshold=threshold, relation_threshold=relation_threshold)
    assert short == relex.inference(texts[:20], LABELS, RELATIONS, threshold=threshold,
                                    relation_threshold=relation_threshold, long_texts="truncate")


def test_window_stride_must_leave_room_for_the_widest_span(parity):
    _, _, relex, texts, _ = parity
    long_text = " ".join(texts[7:12])
    k = relex.config.max_width
    assert k > 2
    with pytest.raises(ValueError, match=f"overlap by {k - 2} words, fewer than the {k - 1}"):
        relex.inference([long_text], LABELS, window_size=24, window_stride=24 - (k - 2))
    relex.inference([long_text], LABELS, window_size=24, window_stride=24 - (k - 1))  # just enough
    with pytest.raises(ValueError, match="long_texts"):
        relex.inference([long_text], LABELS, long_texts="split")


def span(start, end, label, score):
    return EntitySpan(start, end, label, score, 0, 0)


def test_merge_windows_keeps_best_scores_and_reattaches_relations():
    window_a = ([span(0, 1, "per", 0.6), span(5, 5, "org", 0.7), span(8, 9, "loc", 0.9)],
                [Relation(0, "works at", 1, 0.8), Relation(1, "in", 2, 0.55)])
    # The second window sees the overlap again: a better "org" score, a competing span (8, 8)
    # losing to (8, 9), and a relation to it that must be dropped with it.
    window_b = ([span(5, 5, "org", 0.75), span(8, 8, "per", 0.5), span(12, 13, "loc", 0.8)],
                [Relation(0, "in", 2, 0.9), Relation(1, "in", 2, 0.95), Relation(0, "works at", 1, 0.3)])
    spans, rels = merge_windows([window_a, window_b], flat_ner=True, multi_label=False,
                                relation_names=["works at", "in"])
    assert [(s.start, s.end, s.label, s.score) for s in spans] == [
        (0, 1, "per", 0.6), (5, 5, "org", 0.75), (8, 9, "loc", 0.9), (12, 13, "loc", 0.8)]
    assert rels == [Relation(0, "works at", 1, 0.8), Relation(1, "in", 2, 0.55), Relation(1, "in", 3, 0.9)]


# ---------------------------------------------------------------------------------------------
# Bad input: clear early errors or documented handling.


def test_bad_input(parity):
    _, _, relex, texts, (threshold, _) = parity
    assert relex.inference(["", " \t"], LABELS, RELATIONS) == ([[], []], [[], []])
    assert relex.inference([], LABELS) == ([], [])
    with pytest.raises(TypeError, match="text 1 is a int"):
        relex.inference(["fine", 3], LABELS)
    with pytest.raises(ValueError, match="labels is empty"):
        relex.inference(texts[:2], [])
    with pytest.raises(ValueError, match="entry 1 .* is empty"):
        relex.inference(texts[:2], ["person", " "])
    with pytest.raises(TypeError, match="entry 0 is a int"):
        relex.inference(texts[:2], [1, 2])
    with pytest.raises(ValueError, match="one entry per text: 1 sets for 2 texts"):
        relex.inference(texts[:2], [["person"]])
    with pytest.raises(ValueError, match="text 1 has no entity labels"):
        relex.inference(texts[:2], [["person"], []])
    assert relex.inference(["", texts[0]], [[], ["person"]])[0][0] == []  # an empty text needs no labels
    with pytest.raises(ValueError, match=f"more than {MAX_LABELS}"):
        relex.inference(texts[:1], [f"type {i}" for i in range(MAX_LABELS + 1)])
    with pytest.raises(ValueError, match="threshold must be a probability"):
        relex.inference(texts[:1], LABELS, threshold=1.5)
    with pytest.raises(ValueError, match="batch_size"):
        relex.inference(texts[:1], LABELS, batch_size=0)
    with pytest.raises(ValueError, match="share a description"):
        relex.inference(texts[:1], {"a": "person", "b": "person"})
    # Duplicates are dropped keeping the first occurrence, as gliner; None relations == [].
    assert relex.inference(texts[:4], LABELS + LABELS[:1], None, threshold=threshold) == relex.inference(
        texts[:4], LABELS, [], threshold=threshold)
    single = relex.inference(texts[0], "person", threshold=threshold)
    assert single == relex.inference([texts[0]], ["person"], threshold=threshold) and len(single[0]) == 1
