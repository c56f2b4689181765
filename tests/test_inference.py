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
from relex_jax.data.processor import split_words
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


def test_eight_devices_equal_one(parity, eight_devices):
    _, path, _, texts, (threshold, relation_threshold) = parity
    subset = texts[:48]
    results = []
    for devices in (eight_devices[:1], eight_devices):
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


def test_texts_that_fit_one_window_match_gliner_unwindowed(parity):
    model, _, relex, texts, thresholds = parity
    fitting = [t for t in texts if len(split_words(t)[0]) <= 48][:60]
    ours, theirs = both(model, relex, fitting, LABELS, RELATIONS, thresholds,
                        ours_only=dict(window_size=48, window_stride=32))
    assert_same_results(ours, theirs)
    assert sum(map(len, theirs[1])) > 0


def _merge_by_hand(windows, relation_order):
    """The windows' (start, end, label, score) entities and (head, label, tail, score) relations in
    text word positions -> one result: best score per span and label, flat greedy search, relations
    re-attached to the first kept span with their argument's bounds, best score, sorted."""
    best = {}
    for entities, _ in windows:
        for start, end, label, score in entities:
            if score > best.get((start, end, label), -1.0):
                best[(start, end, label)] = score
    kept = []
    for (start, end, label), score in sorted(best.items(), key=lambda item: -item[1]):
        if all(end < s or e < start for s, e, _, _ in kept):
            kept.append((start, end, label, score))
    kept.sort(key=lambda e: e[0])
    first = {}
    for i, (start, end, _, _) in enumerate(kept):
        first.setdefault((start, end), i)
    relations = {}
    for entities, rels in windows:
        for head, label, tail, score in rels:
            h, t = first.get(entities[head][:2]), first.get(entities[tail][:2])
            if h is not None and t is not None and score > relations.get((h, label, t), -1.0):
                relations[(h, label, t)] = score
    ordered = sorted(relations.items(), key=lambda item: (item[0][0], item[0][2], relation_order.index(item[0][1])))
    return kept, [(h, label, t, score) for (h, label, t), score in ordered]


def test_long_text_matches_gliner_run_on_each_window_and_merged_by_hand(parity):
    """Windows of a long text, each run by gliner as a text of its own, merged in this test: the
    same entities, relations and scores as our windowed inference."""
    model, _, relex, texts, (threshold, relation_threshold) = parity
    words = [w for t in texts[7:27] for w in split_words(t)[0]]
    size, stride = 48, 32
    assert len(words) > 4 * size
    starts = list(range(0, len(words) - size + 1, stride))
    starts += [len(words) - size] if starts[-1] + size < len(words) else []
    settings = dict(threshold=threshold, relation_threshold=relation_threshold)
    pieces = [" ".join(words[s : s + size]) for s in starts]
    ents, rels = model.inference(pieces, LABELS, relations=RELATIONS, **settings)
    windows = []
    for s, piece, piece_ents, piece_rels in zip(starts, pieces, ents, rels):
        word_at = {c: s + i for i, c in enumerate(split_words(piece)[1])}
        word_end = {c: s + i for i, c in enumerate(split_words(piece)[2])}
        spans = [(word_at[e["start"]], word_end[e["end"]], e["label"], e["score"]) for e in piece_ents]
        windows.append((spans, [(r["head"]["entity_idx"], r["relation"], r["tail"]["entity_idx"], r["score"])
                                for r in piece_rels]))
    expected_entities, expected_relations = _merge_by_hand(windows, RELATIONS)

    text = " ".join(words)
    _, starts_at, ends_at = split_words(text)
    ours_ents, ours_rels = relex.inference([text], LABELS, RELATIONS, window_size=size, window_stride=stride, **settings)
    ours = [(starts_at.index(e["start"]), ends_at.index(e["end"]), e["label"], e["score"]) for e in ours_ents[0]]
    assert [e[:3] for e in ours] == [e[:3] for e in expected_entities] and len(ours) > 2 * len(starts)
    np.testing.assert_allclose([e[3] for e in ours], [e[3] for e in expected_entities], atol=1e-4)
    ours_rel = [(r["head"]["entity_idx"], r["relation"], r["tail"]["entity_idx"], r["score"]) for r in ours_rels[0]]
    assert [r[:3] for r in ours_rel] == [r[:3] for r in expected_relations] and ours_rel
    np.testing.assert_allclose([r[3] for r in ours_rel], [r[3] for r in expected_relations], atol=1e-4)


def test_window_stride_must_leave_room_for_the_widest_span(parity):
    _, _, relex, texts, _ = parity
    long_text = " ".join(texts[7:12])
    k = relex.config.max_width
    assert k > 2
    with pytest.raises(ValueError, match=f"overlap by {k - 2} words, fewer than the {k - 1}"):
        relex.inference([long_text], LABELS, window_size=24, window_stride=24 - (k - 2))
    # Refused before any text runs, even when no text needs a window.
    with pytest.raises(ValueError, match=f"overlap by {k - 2} words"):
        relex.inference(["A short text."], LABELS, window_size=24, window_stride=24 - (k - 2))
    relex.inference([long_text], LABELS, window_size=24, window_stride=24 - (k - 1))  # just enough
    with pytest.raises(ValueError, match="long_texts"):
        relex.inference([long_text], LABELS, long_texts="split")


# ---------------------------------------------------------------------------------------------
# gliner's span filter (`input_spans`) and class probabilities (`return_class_probs`).


def test_input_spans_and_class_probs_match_gliner(parity, caplog):
    model, _, relex, texts, thresholds = parity
    texts = [t for t in texts if t.strip()][:40]
    threshold, relation_threshold = thresholds
    found = relex.inference(texts, LABELS, RELATIONS, threshold=threshold / 4, relation_threshold=relation_threshold)[0]
    rng = random.Random(1)
    spans = []  # per text: about half of its low-threshold entities and an unaligned span
    for text, row in zip(texts, found):
        chosen = [{"start": e["start"], "end": e["end"]} for e in row if rng.random() < 0.5]
        spans.append(chosen + [{"start": 1, "end": 2}] if len(text) > 3 and text[1:2].isalnum() else chosen)
    with caplog.at_level(logging.WARNING, logger="relex_jax"):
        ours, theirs = both(model, relex, texts, LABELS, RELATIONS, thresholds, input_spans=spans,
                            return_class_probs=True)
    assert_same_results(ours, theirs)
    for our_row, their_row in zip(ours[0], theirs[0]):
        for ent, ref in zip(our_row, their_row):
            assert list(ent["class_probs"]) == list(ref["class_probs"])
            assert len(ent["class_probs"]) == min(5, len(LABELS))
            np.testing.assert_allclose(list(ent["class_probs"].values()), list(ref["class_probs"].values()), atol=1e-4)
    unfiltered = both(model, relex, texts, LABELS, RELATIONS, thresholds)[0]
    for row, allowed in zip(ours[0], spans):
        assert {(e["start"], e["end"]) for e in row} <= {(s["start"], s["end"]) for s in allowed}
    assert sum(map(len, ours[0])) < sum(map(len, unfiltered[0])), "the filter leaves entities out"
    assert sum(map(len, ours[1])) > 0, "relations between the spans let through"
    assert any("do not start and end on word boundaries" in r.getMessage() for r in caplog.records)
    # Our extension: None for a text filters nothing (gliner needs a list for every text).
    mixed = relex.inference(texts, LABELS, RELATIONS, threshold=threshold, relation_threshold=relation_threshold,
                            input_spans=[None] + spans[1:], return_class_probs=True)
    assert_same_dicts([[{k: v for k, v in e.items() if k != "class_probs"} for e in mixed[0][0]]],
                      [unfiltered[0][0]], tol=1e-5)
    assert_same_dicts(mixed[0][1:], ours[0][1:], tol=1e-5)
    assert unfiltered[0][0], "the unfiltered text has entities to compare"


def test_word_input_spans_equal_char_input_spans(parity, caplog):
    *_, relex, texts, _ = parity
    text = texts[0]
    words, starts, ends = split_words(text)
    word_spans = [(0, 1), (2, 2), (len(words) - 2, len(words) - 1)]
    chars = [{"start": starts[s], "end": ends[e]} for s, e in word_spans]
    by_chars = relex.inference([text], LABELS, threshold=0.0, input_spans=[chars], return_class_probs=True)
    by_words = relex.inference_words([words], LABELS, threshold=0.0, input_spans=[word_spans],
                                     return_class_probs=True)
    assert by_chars[0][0] and [(starts[e.start], ends[e.end], e.label, e.score, e.class_probs) for e in by_words[0][0]] \
        == [(e["start"], e["end"], e["label"], e["score"], e["class_probs"]) for e in by_chars[0][0]]
    k = relex.config.max_width
    long_words = words * (1 + k // len(words))
    with caplog.at_level(logging.WARNING, logger="relex_jax"):
        wide = relex.inference_words([long_words], LABELS, threshold=0.0, input_spans=[[(0, k), (1, k)]])[0][0]
    assert [(e.start, e.end) for e in wide] == [(1, k)], "the span wider than max_width is left out, with a warning"
    assert f"1 input span(s) wider than max_width={k} words cannot be scored" in caplog.text
    with pytest.raises(ValueError, match="one entry per text"):
        relex.inference([text, text], LABELS, input_spans=[chars])
    with pytest.raises(ValueError, match=r"\(0, 99\) is not a \(start, end\) pair"):
        relex.inference_words([words], LABELS, input_spans=[[(0, 99)]])


def test_relations_between_given_spans_equal_gliner_s_path_at_threshold_zero(parity):
    """`relate_input_spans` pairs only the given spans; gliner's path at entity threshold 0 pairs
    every span of the text and filters at decoding. Pair scores do not depend on other pairs, so
    both give the same entities and relations (ragged texts, overlapping spans, packed rows)."""
    *_, relex, texts, thresholds = parity
    words = [split_words(t)[0] for t in texts if t.strip()][:5]
    rng = random.Random(3)
    spans = []
    for text_words in words:
        n = len(text_words)
        chosen = {(s, min(n - 1, s + rng.randrange(3))) for s in rng.sample(range(n), min(n, 5))}
        spans.append(sorted(chosen | {(0, min(n - 1, 1)), (0, 0)}))  # (0, 0) and (0, 1) overlap
    options = dict(threshold=0.0, relation_threshold=thresholds[1], flat_ner=False, input_spans=spans)
    gliner_path = relex.inference_words(words, LABELS, RELATIONS, **options)
    given = relex.inference_words(words, LABELS, RELATIONS, relate_input_spans=True, **options)
    packed = relex.inference_words(words, LABELS, RELATIONS, relate_input_spans=True, packing=True, **options)
    for ours in (given, packed):
        for a, b in zip(ours[0], gliner_path[0]):
            assert [(e.start, e.end, e.label) for e in a] == [(e.start, e.end, e.label) for e in b]
        for a, b in zip(ours[1], gliner_path[1]):
            assert [(r.head, r.tail, r.label) for r in a] == [(r.head, r.tail, r.label) for r in b]
            np.testing.assert_allclose([r.score for r in a], [r.score for r in b], atol=1e-5)
    # decoding still drops a given span that crosses a better-scoring one (gliner's nested rule)
    assert all({(e.start, e.end) for e in row} <= set(s) for row, s in zip(given[0], spans))
    assert sum(map(len, given[0])) >= 3 * len(words)
    assert sum(map(len, given[1])) > 0, "some relations between the given spans"
    with pytest.raises(ValueError, match="relate_input_spans needs input_spans"):
        relex.inference_words(words[:1], LABELS, RELATIONS, relate_input_spans=True)
    with pytest.raises(ValueError, match="relate_input_spans needs input_spans"):
        relex.inference_words(words[:1], LABELS, RELATIONS, relate_input_spans=True, input_spans=[None])


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
    # numpy scalars are numbers too (gliner takes them): same results as Python floats and ints
    assert relex.inference(texts[:2], LABELS, threshold=np.float32(0.25), batch_size=np.int64(2)) == relex.inference(
        texts[:2], LABELS, threshold=float(np.float32(0.25)), batch_size=2)
    with pytest.raises(ValueError, match="share a description"):
        relex.inference(texts[:1], {"a": "person", "b": "person"})
    # Duplicates are dropped keeping the first occurrence, as gliner; None relations == [].
    assert relex.inference(texts[:4], LABELS + LABELS[:1], None, threshold=threshold) == relex.inference(
        texts[:4], LABELS, [], threshold=threshold)
    single = relex.inference(texts[0], "person", threshold=threshold)
    assert single == relex.inference([texts[0]], ["person"], threshold=threshold) and len(single[0]) == 1
