"""Drop-in for gliner users: gliner 0.2.29's relex entry points, called in gliner's own positional and
keyword forms, run unchanged on `RelexModel` with gliner's results (one converted checkpoint)."""

from __future__ import annotations

import inspect

import jax
import numpy as np
import pytest

from gliner_fixtures import build_relex_model, reference_forward
from test_decoding import assert_same_dicts
from test_relex_parity import LABELS, RELATIONS, TEXTS, moderate_threshold

from relex_jax import RelexModel
from relex_jax.data.processor import split_words, window_starts

torch = pytest.importorskip("torch")
gliner_model = pytest.importorskip("gliner.model")
infer_packing = pytest.importorskip("gliner.infer_packing")

ENTRY_POINTS = ("inference", "predict_entities", "predict_relations", "batch_predict_entities", "evaluate")


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    model, path = build_relex_model(tmp_path_factory.mktemp("compat") / "model", seed=0)
    threshold = moderate_threshold(reference_forward(model, TEXTS, LABELS, RELATIONS))
    return model, RelexModel.from_pretrained(path, devices=jax.devices()[:1]), threshold


@pytest.mark.parametrize("name", ENTRY_POINTS)
def test_gliner_parameters_are_a_prefix_of_ours(name):
    """Same names, order, kinds and defaults: a positional or keyword call written for gliner binds
    the same way here. Our own options come after, keyword-only."""
    theirs = [p for p in inspect.signature(getattr(gliner_model.UniEncoderSpanRelexGLiNER, name)).parameters.values()
              if p.kind is not p.VAR_KEYWORD]
    ours = list(inspect.signature(getattr(RelexModel, name)).parameters.values())
    assert [(p.name, p.kind, p.default) for p in ours[: len(theirs)]] == [(p.name, p.kind, p.default) for p in theirs]
    assert all(p.kind in (p.KEYWORD_ONLY, p.VAR_KEYWORD) for p in ours[len(theirs):])


def test_positional_and_keyword_forms_give_gliner_results(pair):
    model, relex, threshold = pair
    text = TEXTS[0]
    # inference(texts, labels, relations, flat_ner, threshold): True was read as the threshold once
    ours, theirs = (m.inference([text], LABELS, RELATIONS, True, threshold) for m in (relex, model))
    assert ours[0][0], "entities found"
    assert_same_dicts(ours[0], theirs[0], tol=1e-5)
    assert_same_dicts(ours[1], theirs[1], tol=1e-5)
    # the documented three-threshold call (relation_threshold reaches inference through **kwargs)
    call = dict(relations=RELATIONS, threshold=threshold, adjacency_threshold=threshold / 2, relation_threshold=0.3)
    assert_same_dicts([relex.predict_entities(text, LABELS, **call)], [model.predict_entities(text, LABELS, **call)],
                      tol=1e-5)
    # predict_entities(text, labels, relations, flat_ner, threshold, adjacency_threshold, multi_label,
    # return_class_probs), all positional
    ours, theirs = (m.predict_entities(text, LABELS, RELATIONS, False, threshold, None, True, True)
                    for m in (relex, model))
    assert_same_dicts([ours], [theirs], tol=1e-5)
    assert [list(e["class_probs"]) for e in ours] == [list(e["class_probs"]) for e in theirs] and ours
    ours, theirs = (m.predict_relations(text, LABELS, RELATIONS, True, threshold, None, 0.3) for m in (relex, model))
    assert_same_dicts([ours[0]], [theirs[0]], tol=1e-5)
    assert_same_dicts([ours[1]], [theirs[1]], tol=1e-5)
    # batch_predict_entities: deprecated in gliner, and for relex models it returns (entities, relations)
    with pytest.warns(FutureWarning):
        theirs = model.batch_predict_entities(TEXTS, LABELS, True, threshold, relations=RELATIONS)
    ours = relex.batch_predict_entities(TEXTS, LABELS, True, threshold, relations=RELATIONS)
    assert_same_dicts(ours[0], theirs[0], tol=1e-5)
    assert_same_dicts(ours[1], theirs[1], tol=1e-5)


def test_gliner_packing_config_maps_onto_our_packing(pair):
    model, relex, threshold = pair
    config = infer_packing.InferencePackingConfig(max_length=256)
    ours = relex.inference(TEXTS, LABELS, RELATIONS, threshold=threshold, packing_config=config)
    theirs = model.inference(TEXTS, LABELS, RELATIONS, threshold=threshold, packing_config=config)
    assert_same_dicts(ours[0], theirs[0], tol=1e-5)
    assert_same_dicts(ours[1], theirs[1], tol=1e-5)
    assert ours == relex.inference(TEXTS, LABELS, RELATIONS, threshold=threshold, packing=256)
    with pytest.raises(ValueError, match="not both"):
        relex.inference(TEXTS, LABELS, packing=True, packing_config=config)


# gliner's relex training-data example (docs/training.md, "Relation Extraction Dataset Format")
DOCS_RECORD = {
    "tokenized_text": ["John", "Smith", "works", "at", "Microsoft", "in", "Seattle"],
    "ner": [[0, 1, "person"], [4, 4, "organization"], [6, 6, "location"]],
    "relations": [[0, 1, "works_at"], [1, 2, "located_in"]],
    "rel_labels": ["works_at", "located_in", "founded_by"],
    "rel_negatives": ["competitor_of", "subsidiary_of"],
}


def gold_records(relex, threshold):
    """gliner-format records whose gold is the model's own prediction, changed so that precision
    and recall both fall strictly between 0 and 1: the first entity relabelled (entities: one
    false positive, one miss), the last relation dropped and one made up (relations: one of each),
    and in the first record an entity past the text's end (a miss in both libraries)."""
    words = [text.split() for text in TEXTS[:4]]
    records = []
    for tokens, entities, relations in zip(words, *relex.inference_words(words, LABELS, RELATIONS, flat_ner=False,
                                                                        threshold=threshold)):
        ner = [[e.start, e.end, e.label] for e in entities]
        if ner:
            ner[0][2] = next(label for label in LABELS if label != ner[0][2])
        gold = [[r.head, r.tail, r.label] for r in relations][:-1]
        if len(ner) > 1:
            gold.append([len(ner) - 1, 0, RELATIONS[0]])
        records.append({"tokenized_text": tokens, "ner": ner, "relations": gold})
    records[0]["ner"].append([len(words[0]), len(words[0]), LABELS[0]])
    return records


def test_evaluate_gives_gliner_results(pair, monkeypatch):
    """gliner's `evaluate` (positional and keyword forms, types given or taken from the records)
    returns the same texts and F1s here."""
    model, relex, threshold = pair
    records = gold_records(relex, threshold) + [DOCS_RECORD]
    ours, theirs = (m.evaluate(records, False, False, threshold, None, None, 12, LABELS, RELATIONS)
                    for m in (relex, model))
    assert ours == theirs
    assert all(0 < f1 < 1 for _, f1 in theirs), theirs  # neither trivially perfect nor empty
    assert ours[0][0].startswith("P: ") and ours[0][0].endswith("%\n")
    call = dict(flat_ner=True, threshold=threshold, relation_threshold=0.3, batch_size=2, entity_types=LABELS,
                relation_types=RELATIONS)
    assert relex.evaluate(records, **call) == model.evaluate(records, **call)
    # No types given: gliner asks each record for its own ner_labels / rel_labels, else its gold
    # types, after its training augmentation and random negative types (switched off here: they
    # make gliner's own result random; relex-jax has neither).
    monkeypatch.setattr(model.config, "augment_data_prob", 0.0)
    monkeypatch.setattr(model.config, "max_neg_type_ratio", 0)
    fixed = [{**r, "ner_labels": LABELS[::-1] if i % 2 else LABELS, "rel_labels": RELATIONS}  # order is kept
             for i, r in enumerate(records[:4])]
    one_type = {"tokenized_text": "Maria Garcia met John Novak in Tokyo .".split(),
                "ner": [[0, 1, "person"], [3, 4, "person"]], "relations": [[0, 1, "met"]]}
    ours, theirs = (m.evaluate(fixed + [one_type], threshold=threshold) for m in (relex, model))
    assert ours == theirs and theirs[0][1] > 0 and theirs[1][1] > 0


def test_evaluate_where_gliner_contradicts_its_docstring(pair):
    """Documented deviations (README, "Coming from gliner"): with `entity_types` alone the relation
    types come from the records (gliner asks for none, so its relation F1 is 0); a record with no
    entity type is not run (gliner prompts an unnamed type "" and counts what it finds)."""
    model, relex, threshold = pair
    records = gold_records(relex, threshold)
    labelled = [{**r, "rel_labels": RELATIONS} for r in records]
    ours = relex.evaluate(labelled, threshold=threshold, entity_types=LABELS)
    assert ours == relex.evaluate(records, threshold=threshold, entity_types=LABELS, relation_types=RELATIONS)
    assert model.evaluate(labelled, threshold=threshold, entity_types=LABELS)[1][1] == 0 < ours[1][1]
    empty = {"tokenized_text": ["Nothing", "to", "see", "."], "ner": [], "relations": []}
    assert relex.evaluate(records + [empty], threshold=threshold) == relex.evaluate(records, threshold=threshold)


# ---------------------------------------------------------------------------------------------
# Vector outputs (return_vectors, return_label_vectors).

VECTORS = dict(return_vectors=True, return_label_vectors=True)


def without_vectors(rows):
    return [[{k: v for k, v in d.items() if not isinstance(v, np.ndarray)} for d in row] for row in rows]


def assert_close_vector(ours, theirs, tol=1e-5):
    """A float32 vector of the reference's shape, within `tol` of the reference's scale."""
    assert isinstance(ours, np.ndarray) and ours.dtype == np.float32 and ours.shape == theirs.shape
    assert np.abs(ours - theirs).max() <= tol * np.abs(theirs).max()


def assert_same_with_vectors(ours, theirs, tol=1e-5):
    """gliner's dicts (scores within `tol`) with the same vector keys, in the same places and order,
    and every vector within `tol` of its scale. Returns how many vectors were compared."""
    assert_same_dicts(without_vectors(ours), without_vectors(theirs), tol=tol)
    compared = 0
    for row_ours, row_theirs in zip(ours, theirs):
        for a, b in zip(row_ours, row_theirs):
            assert list(a) == list(b)
            for key in a:
                if isinstance(b[key], np.ndarray):
                    assert_close_vector(a[key], b[key], tol)
                    compared += 1
    return compared


def test_vectors_equal_gliner(pair):
    """gliner's span, pair and label vectors in its keys and places, for `inference` (entities
    and relations) and `predict_entities`; without them, nothing is compiled or copied for vectors."""
    model, relex, threshold = pair
    call = dict(threshold=threshold, relation_threshold=0.1)
    plain = relex.inference(TEXTS, LABELS, RELATIONS, **call)
    ours = relex.inference(TEXTS, LABELS, RELATIONS, **call, **VECTORS)
    theirs = model.inference(TEXTS, LABELS, RELATIONS, **call, **VECTORS)
    assert {k for row in theirs[0] for e in row for k in e} >= {"vector", "label_vector"}
    assert {k for row in theirs[1] for r in row for k in r} >= {"vector", "label_vector"}
    assert assert_same_with_vectors(ours[0], theirs[0]) >= 10
    assert assert_same_with_vectors(ours[1], theirs[1]) >= 6
    assert without_vectors(ours[0]) == plain[0] and without_vectors(ours[1]) == plain[1]
    # vectors off again: the programs that ran before vectors, none traced or compiled (jit cache
    # sizes of the stages: score, score_packed, relate, vectors), no vector keys
    compiled = [stage._cache_size() for stage in relex._stages]
    assert relex.inference(TEXTS, LABELS, RELATIONS, **call) == plain
    assert [stage._cache_size() for stage in relex._stages] == compiled
    # entities only (return_relations=False), one flag at a time
    for flags in (dict(return_vectors=True), dict(return_label_vectors=True)):
        ours, theirs = (m.predict_entities(TEXTS[1], LABELS, RELATIONS, threshold=threshold, **flags)
                        for m in (relex, model))
        assert assert_same_with_vectors([ours], [theirs]) == len(theirs) > 0


def test_vectors_with_a_triples_scorer_equal_gliner(tmp_path):
    """A triples scorer has no pair representation: gliner returns the head's and the tail's span
    representations as "head_relation_vector" / "tail_relation_vector"."""
    model, path = build_relex_model(tmp_path / "model", seed=1, triples_layer="DistMult")
    threshold = moderate_threshold(reference_forward(model, TEXTS, LABELS, RELATIONS))
    relex = RelexModel.from_pretrained(path, devices=jax.devices()[:1])
    call = dict(threshold=threshold, relation_threshold=0.3, return_vectors=True, return_label_vectors=True)
    ours, theirs = (m.inference(TEXTS, LABELS, RELATIONS, **call) for m in (relex, model))
    assert_same_with_vectors(ours[0], theirs[0])
    assert {k for row in theirs[1] for r in row for k in r if "vector" in k} == {
        "label_vector", "head_relation_vector", "tail_relation_vector"}
    assert assert_same_with_vectors(ours[1], theirs[1]) >= 3 * 10


def test_vectors_come_from_the_window_kept_and_survive_packing(pair):
    """A long text read as windows: each merged entity and relation carries the vectors of the
    window its kept result came from (each window run alone as a text); packed rows give the same."""
    _, relex, threshold = pair
    words = split_words(" ".join(TEXTS))[0]
    size, stride = 16, 8
    starts = window_starts(len(words), size, stride)
    call = dict(threshold=threshold, relation_threshold=0.1, **VECTORS)
    (entities,), (relations,) = relex.inference_words([words], LABELS, RELATIONS, window_size=size,
                                                      window_stride=stride, **call)
    windows = relex.inference_words([words[s : s + size] for s in starts], LABELS, RELATIONS, **call)
    best = {}  # (start, end, label) -> the best-scoring window's entity, first window on ties
    best_relation = {}  # (head bounds, label, tail bounds) -> likewise
    for s, window_entities, window_relations in zip(starts, *windows):
        for e in window_entities:
            key = (e.start + s, e.end + s, e.label)
            if key not in best or e.score > best[key].score:
                best[key] = e
        for r in window_relations:
            head, tail = window_entities[r.head], window_entities[r.tail]
            key = (head.start + s, head.end + s, r.label, tail.start + s, tail.end + s)
            if key not in best_relation or r.score > best_relation[key].score:
                best_relation[key] = r
    assert len(starts) > 3 and entities and relations
    for e in entities:
        kept = best[(e.start, e.end, e.label)]
        assert e.score == kept.score and list(e.vectors) == ["vector", "label_vector"]
        for key in e.vectors:
            np.testing.assert_array_equal(e.vectors[key], kept.vectors[key])
    for r in relations:
        head, tail = entities[r.head], entities[r.tail]
        kept = best_relation[(head.start, head.end, r.label, tail.start, tail.end)]
        assert r.score == kept.score and list(r.vectors) == ["vector", "label_vector"]
        for key in r.vectors:
            np.testing.assert_array_equal(r.vectors[key], kept.vectors[key])

    packed = relex.inference_words([words], LABELS, RELATIONS, window_size=size, window_stride=stride, packing=256,
                                   **call)
    assert [e[:3] for e in packed[0][0]] == [e[:3] for e in entities] and len(packed[1][0]) == len(relations)
    for ours, unpacked in zip([*packed[0][0], *packed[1][0]], [*entities, *relations]):
        assert abs(ours.score - unpacked.score) <= 1e-5
        for key in unpacked.vectors:
            assert_close_vector(ours.vectors[key], unpacked.vectors[key])
