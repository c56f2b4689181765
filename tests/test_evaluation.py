"""Evaluation metrics (hand-computed cases) and `RelexModel.inference_words` / `evaluate` on a tiny
model: word-level inference equals string inference on the same words, and the report equals the
metrics of the predictions it was made from."""

from __future__ import annotations

import json
from fractions import Fraction

import jax
import pytest

from relex_jax.data.processor import split_words
from relex_jax.data.readers import Example
from relex_jax.evaluation import entity_metrics, evaluate, prf, relation_metrics, score_examples
from relex_jax.inference import WordEntity, WordRelation


def expect(p, r, tp, fp, fn):
    """The prf dict for hand-computed precision and recall (fractions), with F1 from them."""
    p, r = Fraction(p), Fraction(r)
    f1 = 2 * p * r / (p + r) if p + r else 0
    return {"precision": pytest.approx(float(p)), "recall": pytest.approx(float(r)), "f1": pytest.approx(float(f1)),
            "tp": tp, "fp": fp, "fn": fn}


def test_prf_and_zero_denominators():
    assert prf(3, 1, 2) == expect("3/4", "3/5", 3, 1, 2)  # F1 = 2 * 0.45 / 1.35 = 2/3
    assert prf(3, 1, 2)["f1"] == pytest.approx(2 / 3)
    assert prf(0, 0, 4) == expect(0, 0, 0, 0, 4)  # no predictions: precision 0
    assert prf(0, 2, 0) == expect(0, 0, 0, 2, 0)  # no gold: recall 0
    assert prf(0, 0, 0) == expect(0, 0, 0, 0, 0)  # nothing at all: 0, not 1
    assert prf(0, 3, 5) == expect(0, 0, 0, 3, 5)  # P + R = 0: F1 0
    assert prf(2, 0, 0) == expect(1, 1, 2, 0, 0)


def test_entity_metrics_strict_boundaries_and_per_type():
    gold = [[(0, 1, "per"), (3, 3, "org"), (5, 6, "loc")], [(2, 2, "org")]]
    predicted = [
        [(0, 1, "per"), (3, 3, "loc"), (8, 8, "per")],  # exact hit; right span, wrong type; spurious
        [(2, 3, "org")],  # wrong span
    ]
    m = entity_metrics(gold, predicted, types=["misc"])
    # strict: tp (0,1,per); fp (3,3,loc) (8,8,per) (2,3,org); fn (3,3,org) (5,6,loc) (2,2,org)
    assert m["strict"] == expect("1/4", "1/4", 1, 3, 3)
    # boundaries: tp (0,1) (3,3); fp (8,8) (2,3); fn (5,6) (2,2)
    assert m["boundaries"] == expect("1/2", "1/2", 2, 2, 2)
    assert m["per_type"] == {
        "loc": expect(0, 0, 0, 1, 1),
        "misc": expect(0, 0, 0, 0, 0),  # requested, absent on both sides
        "org": expect(0, 0, 0, 1, 2),
        "per": expect("1/2", 1, 1, 1, 0),
    }
    assert list(m["per_type"]) == sorted(m["per_type"])
    json.dumps(m)


def test_entity_metrics_duplicates_and_empty_sides():
    # Duplicates count once on either side; extra tuple items (a score) are ignored.
    dup = entity_metrics([[(0, 0, "per"), (0, 0, "per")]], [[(0, 0, "per", 0.9), WordEntity(0, 0, "per", 0.4)]])
    assert dup["strict"] == dup["boundaries"] == expect(1, 1, 1, 0, 0)
    no_gold = entity_metrics([[]], [[(0, 0, "per")]])
    assert no_gold["strict"] == no_gold["boundaries"] == expect(0, 0, 0, 1, 0)
    no_predictions = entity_metrics([[(0, 0, "per")], []], [[], []])
    assert no_predictions["strict"] == expect(0, 0, 0, 0, 1)
    assert no_predictions["per_type"] == {"per": expect(0, 0, 0, 0, 1)}
    assert entity_metrics([], [])["strict"] == expect(0, 0, 0, 0, 0)


def test_relation_metrics_strict_boundaries_and_per_type():
    gold_entities = [
        [(0, 1, "per"), (3, 3, "org"), (5, 5, "loc"), (0, 1, "per")],  # the last repeats the first
        [(0, 0, "per"), (2, 2, "org")],
        [(0, 0, "per"), (1, 1, "org")],
    ]
    gold_relations = [
        [(0, 1, "works at"), (1, 2, "located in"), (3, 1, "works at")],  # the third equals the first
        [(0, 1, "works at")],
        [(0, 1, "works at")],
    ]
    predicted_entities = [
        [(0, 1, "per"), (3, 3, "loc"), (5, 5, "loc"), (7, 7, "per")],  # (3, 3) has the wrong type
        [(2, 2, "org"), (0, 0, "per")],  # other order: relations match through spans, not indices
        [(0, 0, "per"), (1, 1, "org")],
    ]
    predicted_relations = [
        # tail type wrong; head type wrong; no such gold relation; a duplicate of the first (score ignored)
        [(0, 1, "works at"), (1, 2, "located in"), (0, 2, "works at"), WordRelation(0, 1, "works at", 0.7)],
        [(1, 0, "works at")],  # = gold (0, 1) of text 1
        [(1, 0, "works at")],  # reversed: wrong in both modes
    ]
    m = relation_metrics(gold_entities, gold_relations, predicted_entities, predicted_relations, types=["born in"])
    # strict: tp = text 1; fp = text 0's three distinct + text 2's reversed; fn = text 0's two + text 2's one
    assert m["strict"] == expect("1/5", "1/4", 1, 4, 3)
    # boundaries: text 0's two type errors now match, (0,1)->(5,5) stays fp; text 2 still fp + fn
    assert m["boundaries"] == expect("3/5", "3/4", 3, 2, 1)
    assert m["per_type"] == {
        "born in": expect(0, 0, 0, 0, 0),
        "located in": expect(0, 0, 0, 1, 1),
        "works at": expect("1/4", "1/3", 1, 3, 2),
    }
    # Entities alone: text 0 strict tp 2 of 3 distinct gold spans, boundaries all 3.
    e = entity_metrics(gold_entities[:1], predicted_entities[:1])
    assert e["strict"] == expect("2/4", "2/3", 2, 2, 1) and e["boundaries"] == expect("3/4", 1, 3, 1, 0)


def test_relation_metrics_empty_sides_and_bad_input():
    ents = [[(0, 0, "per"), (1, 1, "org")]]
    assert relation_metrics(ents, [[]], ents, [[(0, 1, "r")]])["strict"] == expect(0, 0, 0, 1, 0)
    assert relation_metrics(ents, [[(0, 1, "r")]], ents, [[]])["boundaries"] == expect(0, 0, 0, 0, 1)
    assert relation_metrics(ents, [[(0, 1, "r")]], [[]], [[]])["per_type"] == {"r": expect(0, 0, 0, 0, 1)}
    with pytest.raises(ValueError, match="text 0: gold relation 0 .* outside the text's 2 entities"):
        relation_metrics(ents, [[(0, 2, "r")]], ents, [[]])
    with pytest.raises(ValueError, match="one list per text"):
        relation_metrics(ents, [[], []], ents, [[]])
    with pytest.raises(ValueError, match="one list per text"):
        entity_metrics(ents, [])
    with pytest.raises(ValueError, match="text 0: predicted entity 1 .* non-integer"):
        entity_metrics([[]], [[(0, 0, "a"), (0.5, 1, "b")]])


EXAMPLES = [
    Example(("Alice", "Smith", "works", "at", "the", "U.S.", "Department", "of", "State", "."),
            ((0, 1, "person"), (4, 8, "organization"), (5, 5, "location")),  # 5 words: wider than max_width 4
            ((0, 1, "works at"), (1, 2, "located in"))),
    Example(("Bob", "lives", "in", "Paris", "."), ((0, 0, "person"), (3, 3, "location"))),
    Example(("Nothing", "here", ".")),
]


def test_gold_scored_against_itself_is_perfect():
    report = score_examples(EXAMPLES, [e.entities for e in EXAMPLES], [e.relations for e in EXAMPLES])
    for kind in ("entities", "relations"):
        for mode in ("strict", "boundaries"):
            assert report[kind][mode]["f1"] == 1.0 and report[kind][mode]["fp"] == report[kind][mode]["fn"] == 0
    assert report["entities"]["strict"]["tp"] == 5 and report["relations"]["strict"]["tp"] == 2
    assert set(report["entities"]["per_type"]) == {"person", "organization", "location"}


class FakeModel:
    """Stands in for `RelexModel`: returns fixed word-level predictions and records the call."""

    def __init__(self, entities, relations):
        self.outputs, self.calls = (entities, relations), []

    def inference_words(self, words, labels, relations=None, *args, **kwargs):
        self.calls.append((words, labels, relations, args, kwargs))
        return self.outputs


def test_evaluate_defaults_pass_through_and_report():
    predicted = [[WordEntity(0, 1, "person", 0.9), WordEntity(5, 5, "location", 0.8)],
                 [WordEntity(0, 0, "person", 0.7)], []]
    relations = [[WordRelation(0, 1, "located in", 0.6)], [], []]
    model = FakeModel(predicted, relations)
    report = evaluate(model, EXAMPLES, threshold=0.3, relation_threshold=0.2, batch_size=4, window_size=32)
    words, labels, rels, args, kwargs = model.calls[0]
    assert words == [list(e.tokens) for e in EXAMPLES]  # the examples' own tokens, unsplit
    assert labels == ["location", "organization", "person"] and rels == ["located in", "works at"]
    assert args == () and {k: kwargs[k] for k in ("threshold", "adjacency_threshold", "relation_threshold", "flat_ner",
                                                  "multi_label", "batch_size", "window_size")} == dict(
        threshold=0.3, adjacency_threshold=None, relation_threshold=0.2, flat_ner=True, multi_label=False, batch_size=4,
        window_size=32)
    # Gold: 5 entities, among them the 5-word span no model of max_width 4 can find; it counts as missed.
    assert report["entities"]["strict"] == expect(1, "3/5", 3, 0, 2)
    assert report["entities"]["per_type"]["organization"] == expect(0, 0, 0, 0, 1)
    # Gold relations: person->org (missed), org->location (missed); predicted person->location: fp.
    assert report["relations"]["strict"] == expect(0, 0, 0, 1, 2)
    assert report["texts"] == 3 and report["seconds"] >= 0 and report["settings"]["threshold"] == 0.3
    assert report["entity_types"] == labels and report["relation_types"] == rels
    assert json.loads(json.dumps(report)) == report

    # No gold relations: entities only (relations=None); explicit label sets are used as given.
    model = FakeModel([[], [], []], [[], [], []])
    entity_only = [Example(e.tokens, e.entities) for e in EXAMPLES]
    report = evaluate(model, entity_only, entity_labels={"person": "human being"})
    assert model.calls[0][1:3] == ({"person": "human being"}, None)
    assert report["entity_types"] == ["person"] and report["relations"]["strict"] == expect(0, 0, 0, 0, 0)
    with pytest.raises(ValueError, match="no examples"):
        evaluate(model, [])
    with pytest.raises(ValueError, match="no gold entities"):
        evaluate(model, EXAMPLES[2:])
    with pytest.raises(TypeError, match="one label set for all examples"):
        evaluate(model, EXAMPLES, entity_labels=[["person"], ["location"], ["person"]])
    with pytest.raises(ValueError, match="relation_threshold must be a probability"):
        evaluate(model, EXAMPLES, relation_threshold=2)
    with pytest.raises(TypeError, match="unexpected keyword argument 'treshold'"):
        evaluate(model, EXAMPLES, treshold=0.2)


# ---------------------------------------------------------------------------------------------
# A tiny real model.

TEXTS = [
    "Alice Smith works at Google in Paris .",
    "Bob founded Siemens in Berlin in 1990 , and later moved to Rome with Maria Garcia .",
    "Maria Garcia met John Novak in Tokyo on Monday .",
    "Apple hired Wei Chen .",
    "Tokyo .",
    "Quentin Walker , a director at Airbus , visited Oslo and Lisbon with Emma Dubois in May .",
]
LABELS = ["location", "organization", "person"]  # sorted: the default of `evaluate` on gold with these types
RELATIONS = ["located in", "works at"]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    pytest.importorskip("torch")
    from gliner_fixtures import build_relex_model, reference_forward
    from test_relex_parity import moderate_threshold

    from relex_jax import RelexModel

    model, path = build_relex_model(tmp_path_factory.mktemp("evaluation") / "model", seed=0)
    threshold = moderate_threshold(reference_forward(model, TEXTS, LABELS, RELATIONS))
    return RelexModel.from_pretrained(path, devices=jax.devices()[:1]), threshold


def as_words(entities, relations, text):
    """`inference`'s dicts -> word positions (the regex splitter's words of `text`)."""
    _, starts, ends = split_words(text)
    ents = [WordEntity(starts.index(e["start"]), ends.index(e["end"]), e["label"], e["score"]) for e in entities]
    rels = [WordRelation(r["head"]["entity_idx"], r["tail"]["entity_idx"], r["relation"], r["score"]) for r in relations]
    return ents, rels


def test_inference_words_equals_inference_on_joined_text(tiny):
    relex, threshold = tiny
    words = [t.split() for t in TEXTS]
    assert all(split_words(t)[0] == w for t, w in zip(TEXTS, words)), "whitespace tokens = splitter words"
    long_words = [w for text in words for w in text] * 2  # 100+ words, read as windows below
    cases = [(words + [[]], dict(relation_threshold=threshold / 2)),
             ([long_words], dict(window_size=32, window_stride=24))]
    for text_words, settings in cases:
        texts = [" ".join(w) for w in text_words]
        ents, rels = relex.inference_words(text_words, LABELS, RELATIONS, threshold=threshold, **settings)
        ref_ents, ref_rels = relex.inference(texts, LABELS, RELATIONS, threshold=threshold, **settings)
        expected = [as_words(e, r, t) for e, r, t in zip(ref_ents, ref_rels, texts)]
        assert ents == [e for e, _ in expected] and rels == [r for _, r in expected]  # scores exactly equal
        assert sum(map(len, ents)) > len(text_words) and sum(map(len, rels)) > 0, "not vacuous"
        assert all(isinstance(e, WordEntity) and isinstance(e.score, float) for row in ents for e in row)
    assert ents[0] and max(e.end for e in ents[0]) >= len(long_words) - 32, "windows reach the end"


def test_inference_words_bad_input(tiny):
    import dataclasses

    from tokenizers import Tokenizer, normalizers

    relex, _ = tiny
    assert relex.inference_words([], LABELS) == ([], [])
    assert relex.inference_words([[], ()], LABELS, RELATIONS) == ([[], []], [[], []])
    with pytest.raises(TypeError, match="got a string"):
        relex.inference_words("Alice works", LABELS)
    with pytest.raises(TypeError, match=r"text 0 is a str, not a list or tuple of words \(one text is passed as \[words\]\)"):
        relex.inference_words(["Alice", "works"], LABELS)
    with pytest.raises(TypeError, match="text 1: word 1 is a int"):
        relex.inference_words([["Alice"], ["Bob", 3]], LABELS)
    with pytest.raises(ValueError, match="text 0: word 1 .* is empty or whitespace"):
        relex.inference_words([["Alice", " ", "works"]], LABELS)
    with pytest.raises(ValueError, match="text 0 has no entity labels"):
        relex.inference_words([["Alice"]], [[]])
    with pytest.raises(ValueError, match="threshold must be a probability"):
        relex.inference_words([["Alice"]], LABELS, threshold=2.0)
    # A word the tokenizer maps to nothing would shift every later word: refused, naming it.
    tokenizer = Tokenizer.from_str(relex.tokenizer.to_str())
    tokenizer.normalizer = normalizers.Sequence([normalizers.Replace("§", ""), tokenizer.normalizer])
    stripping = dataclasses.replace(relex, tokenizer=tokenizer)
    with pytest.raises(ValueError, match=r"text 1: word 2 \('§'\) has no tokens"):
        stripping.inference_words([["Alice"], ["Bob", "in", "§", "Paris"]], LABELS)


def test_evaluate_report_equals_metrics_of_the_predictions(tiny):
    relex, threshold = tiny
    # Dataset tokens are kept as given: "U.S." stays one word (the splitter makes it four).
    tokens = ["The", "U.S.", "Department", "of", "State", "hired", "Alice", "Smith", "in", "Paris", "."]
    assert len(split_words(" ".join(tokens))[0]) > len(tokens)
    words = [t.split() for t in TEXTS] + [tokens]
    entities, relations = relex.inference_words(words, LABELS, RELATIONS, threshold=threshold)
    assert sum(map(len, entities)) > len(words) and sum(map(len, relations)) > 0
    assert entities[-1] and max(e.end for e in entities[-1]) < len(tokens)

    # Gold built from the predictions so that some, not all, match: every other predicted entity
    # (and the relations among those), plus a spurious gold entity and relation per text.
    examples = []
    for text_words, ents, rels in zip(words, entities, relations):
        keep = {old: new for new, old in enumerate(range(0, len(ents), 2))}  # predicted index -> gold index
        gold_ents = [ents[i][:3] for i in keep] + [(len(text_words) - 1, len(text_words) - 1, "person")]
        gold_rels = [(keep[r.head], keep[r.tail], r.label) for r in rels if r.head in keep and r.tail in keep]
        if keep:  # spurious relations between the spurious entity and a kept one, of both types
            gold_rels += [(len(gold_ents) - 1, 0, "works at"), (0, len(gold_ents) - 1, "located in")]
        examples.append(Example(tuple(text_words), tuple(gold_ents), tuple(gold_rels)))
    assert {label for e in examples for *_, label in e.entities} == set(LABELS)
    assert {label for e in examples for *_, label in e.relations} == set(RELATIONS)

    report = evaluate(relex, examples, threshold=threshold)  # label sets default to the gold's (= ours)
    gold_ents = [e.entities for e in examples]
    assert report["entities"] == entity_metrics(gold_ents, entities)
    assert report["relations"] == relation_metrics(gold_ents, [e.relations for e in examples], entities, relations)
    assert 0 < report["entities"]["strict"]["f1"] < 1 and 0 < report["entities"]["strict"]["tp"]
    assert report["relations"]["strict"]["fn"] >= len(examples)
    assert report["texts"] == len(examples) and report["texts_per_second"] > 0

    # Gold = the model's own predictions: F1 1 everywhere.
    perfect = [Example(tuple(w), tuple(e[:3] for e in ents), tuple(r[:3] for r in rels))
               for w, ents, rels in zip(words, entities, relations)]
    report = evaluate(relex, perfect, LABELS, RELATIONS, threshold=threshold)
    for kind in ("entities", "relations"):
        for mode in ("strict", "boundaries"):
            assert report[kind][mode]["f1"] == 1.0, (kind, mode, report[kind][mode])
