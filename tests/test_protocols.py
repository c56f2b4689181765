"""Evaluation protocols (`relex_jax.protocols`, `relex-jax evaluate --protocol`): hand-built cases
run through a fake model whose `inference_words` returns fixed predictions, the expected numbers
worked out by hand in the comments; one real tiny model checks that given entities come back
exactly and with every (pair, label) score."""

from __future__ import annotations

import json
from fractions import Fraction

import jax
import pytest

from relex_jax import cli
from relex_jax.inference import WordEntity, WordRelation
from relex_jax.protocols import GIVEN_ENTITY_THRESHOLD, plan, read_records, run


def close(value):
    return pytest.approx(float(Fraction(value)))


def prf_of(p, r, tp, fp, fn):
    """The prf dict for hand-computed precision and recall (fractions), F1 from them."""
    p, r = Fraction(p), Fraction(r)
    f1 = 2 * p * r / (p + r) if p + r else 0
    return {"precision": close(p), "recall": close(r), "f1": close(f1), "tp": tp, "fp": fp, "fn": fn}


class FakeModel:
    """`inference_words` from a table: per text (its first word), predicted entities
    [(start, end, label)] and relations [(head span, tail span, label, score)]. Relations come
    back only for the offered labels, between returned entities; with `input_spans` only the
    given spans are returned (as the real decoder does). Every call's arguments are kept."""

    def __init__(self, table, extra_entities=None):
        self.table, self.extra, self.calls = table, extra_entities or {}, []

    def inference_words(self, words, labels, relations=(), input_spans=None, **settings):
        self.calls.append(dict(words=words, labels=labels, relations=relations, input_spans=input_spans, **settings))
        offered = list(relations or ())
        all_entities, all_relations = [], []
        for i, text in enumerate(words):
            spans, rels = self.table[text[0]]
            spans = list(spans) + [e for key, e in self.extra.items() if key not in offered and text[0] == "A"]
            if input_spans is not None:
                spans = [s for s in spans if s[:2] in input_spans[i]]
            index = {s[:2]: k for k, s in enumerate(spans)}
            all_entities.append([WordEntity(s, e, label, 0.9) for s, e, label in spans])
            all_relations.append([WordRelation(index[h], index[t], label, score) for h, t, label, score in rels
                                  if label in offered and h in index and t in index])
        return all_entities, all_relations


def entity(start, end, kind, **extra):
    return {"start": start, "end": end, "type": kind, **extra}  # end exclusive, as the data files


# ---------------------------------------------------------------------------------------------
# document


DOCUMENTS = [
    {"id": "A", "tokens": ["A", *"bcdefghijkl"], "entities": [
        # c0 PER with two mentions (dict form), c1 ORG, c2 LOC
        entity(0, 2, "PER", mentions=[{"start": 0, "end": 2, "type": "PER"}, {"start": 6, "end": 7, "type": "PER"}]),
        entity(3, 4, "ORG", mentions=[{"start": 3, "end": 4}]),
        entity(9, 11, "LOC", mentions=[{"start": 9, "end": 11, "type": "LOC"}])],
     "relations": [{"head": 0, "tail": 1, "type": "works for"}, {"head": 0, "tail": 1, "type": "works for"},
                   {"head": 1, "tail": 2, "type": "located in"}]},
    {"id": "B", "tokens": ["B", "x", "y", "z", "w", "v"], "entities": [
        # FewRel's [start, end_exclusive] mentions
        entity(0, 1, "PER", mentions=[[0, 1], [4, 5]]), entity(2, 3, "ORG", mentions=[[2, 3]])],
     "relations": [{"head": 0, "tail": 1, "type": "founded"}]},
]
DOCUMENT_PREDICTIONS = {
    "A": ([(0, 1, "PER"), (6, 6, "PER"), (3, 3, "LOC"), (8, 8, "ORG")], [
        ((6, 6), (3, 3), "works for", 0.9),  # second mention of c0 -> (c0, c1, works for): tp
        ((0, 1), (3, 3), "works for", 0.8),  # first mention: the same cluster triple, counted once
        ((8, 8), (3, 3), "works for", 0.7),  # (8, 8) matches no gold mention: pseudo-entity p -> fp
        ((3, 3), (8, 8), "located in", 0.7),  # (c1, p, located in): fp, the same pseudo-entity
    ]),
    "B": ([(4, 4, "PER"), (2, 2, "ORG")], [((4, 4), (2, 2), "founded", 0.9)]),  # second mention: tp
}


def test_document_protocol_counts_cluster_triples_once():
    # Group 2 (works for) runs without "founded" in the prompt: the fake then adds a spurious
    # entity, which must not be scored (entities come from the first group's run).
    model = FakeModel(DOCUMENT_PREDICTIONS, extra_entities={"founded": (11, 11, "PER")})
    planned = plan("document", DOCUMENTS, relation_labels=["founded", "located in", "works for"], label_group=2)
    report = run(model, planned, threshold=0.4)
    assert report["label_groups"] == [["founded", "located in"], ["works for"]]
    assert [call["relations"] for call in model.calls] == [["founded", "located in"], ["works for"]]
    assert all(call["input_spans"] is None and call["threshold"] == 0.4 and not call["relate_input_spans"]
               for call in model.calls)
    # Gold triples (deduplicated): A (c0, c1, works for), (c1, c2, located in); B (c0, c1, founded).
    # Predicted: A (c0, c1, wf) tp, (p, c1, wf) fp, (c1, p, li) fp; B (c0, c1, founded) tp.
    # tp 2, fp 2, fn 1 (A's located in): P 1/2, R 2/3.
    assert report["relations"]["micro"] == prf_of("1/2", "2/3", 2, 2, 1)
    assert report["relations"]["per_type"] == {
        "founded": prf_of(1, 1, 1, 0, 0),
        "located in": prf_of(0, 0, 0, 1, 1),
        "works for": prf_of("1/2", 1, 1, 1, 0),
    }
    assert report["pseudo_entities"] == 1
    # Mentions, typed by mention (or cluster): A (0,1,PER) (6,6,PER) (3,3,ORG) (9,10,LOC);
    # B (0,0,PER) (4,4,PER) (2,2,ORG). Strict: tp 4 (A 0-1, 6-6; B 4-4, 2-2), fp 2 (A 3-3 LOC,
    # 8-8 ORG), fn 3 (A 3-3 ORG, 9-10; B 0-0). Boundaries: tp 5 (+ A 3-3), fp 1, fn 2.
    assert report["entities"]["strict"] == prf_of("4/6", "4/7", 4, 2, 3)
    assert report["entities"]["boundaries"] == prf_of("5/6", "5/7", 5, 1, 2)
    assert report["entities"]["per_type"]["PER"] == prf_of(1, "3/4", 3, 0, 1)
    json.dumps(report)


def test_document_given_entities_supplies_every_mention_at_threshold_zero():
    model = FakeModel(DOCUMENT_PREDICTIONS)
    report = run(model, plan("document", DOCUMENTS, given_entities=True), threshold=0.6, relation_threshold=0.75)
    (call,) = model.calls
    assert call["input_spans"] == [[(0, 1), (6, 6), (3, 3), (9, 10)], [(0, 0), (4, 4), (2, 2)]]
    assert call["threshold"] == GIVEN_ENTITY_THRESHOLD == 0.0 and call["relation_threshold"] == 0.75
    assert call["flat_ner"] is False and call["multi_label"] is False and call["relate_input_spans"] is True
    assert report["given_entities"] is True and report["relation_types"] == ["founded", "located in", "works for"]
    # (8, 8) is not given, so its relations are gone: A (c0, c1, wf) tp (the fake ignores the
    # threshold); B tp; fn A (c1, c2, li). P 1, R 2/3.
    assert report["relations"]["micro"] == prf_of(1, "2/3", 2, 0, 1)


def test_document_prompt_too_long_suggests_label_groups():
    class Refusing:  # what RelexModel says when a row outgrows an absolute-position encoder
        def inference_words(self, *args, **kwargs):
            raise ValueError("text 0 (words 0-11) needs 530 tokens with its prompt, but this encoder's absolute "
                             "positions stop at 512; use a smaller window_size or fewer labels")

    with pytest.raises(ValueError, match=r"stop at 512; .*; or offer the 3 relation labels in smaller groups "
                                         r"\(label_group, now None\)"):
        run(Refusing(), plan("document", DOCUMENTS))


# ---------------------------------------------------------------------------------------------
# given-entities


def sentence(key, spans, relations):
    tokens = [key, *"abcdef"]
    return {"id": key, "tokens": tokens, "entities": [entity(s, s + 1, "thing") for s in spans],
            "relations": [{"head": h, "tail": t, "type": label} for h, t, label in relations]}


RECORDS = [
    sentence("r0", [0, 2], [(0, 1, "a")]),
    sentence("r1", [0, 2], [(0, 1, "a")]),
    sentence("r2", [0, 2], [(0, 1, "b")]),
    sentence("r3", [0, 2, 4], [(0, 1, "c"), (1, 2, "a")]),
]
P02, P24, P04 = ((0, 0), (2, 2)), ((2, 2), (4, 4)), ((0, 0), (4, 4))


def scored(pair, **scores):
    return [(*pair, label, score) for label, score in scores.items()]


CHOICE_PREDICTIONS = {
    "r0": ([(0, 0, "thing"), (2, 2, "thing")], scored(P02, a=0.9, b=0.2, c=0.1)),
    "r1": ([(0, 0, "thing"), (2, 2, "thing")], scored(P02, a=0.3, b=0.6, c=0.1)),
    "r2": ([(0, 0, "thing"), (2, 2, "thing")], scored(P02, a=0.1, b=0.7, c=0.2)),
    "r3": ([(0, 0, "thing"), (2, 2, "thing"), (4, 4, "thing")],
           scored(P02, a=0.2, b=0.1, c=0.4) + scored(P24, a=0.6, b=0.7, c=0.1) + scored(P04, a=0.8, d=0.05)),
}


def test_forced_choice_extraction_and_baselines_with_all_types():
    model = FakeModel(CHOICE_PREDICTIONS)
    report = run(model, plan("given-entities", RECORDS), relation_threshold=0.5)
    (call,) = model.calls
    assert call["input_spans"] == [[(0, 0), (2, 2)]] * 3 + [[(0, 0), (2, 2), (4, 4)]]
    assert call["threshold"] == 0.0 and call["relation_threshold"] == 0.0 and call["flat_ner"] is False
    assert call["relate_input_spans"] is True  # pairs between exactly the given spans
    (size,) = report["offered_sizes"]
    assert size["m"] == 3 and len(size["draws"]) == 1
    draw = size["draws"][0]
    assert draw["labels"] == ["a", "b", "c"] and draw["pairs"] == 5 and draw["texts"] == 4
    # Pairs (gold -> argmax): r0 a -> a, r1 a -> b (0.6), r2 b -> b, r3 0-2 c -> c, r3 2-4 a -> b (0.7).
    forced = draw["forced_choice"]
    assert forced["accuracy"] == close("3/5")
    # a: tp 1, fn 2 -> P 1, R 1/3, F1 1/2; b: tp 1, fp 2 -> P 1/3, R 1, F1 1/2; c: tp 1 -> F1 1
    assert forced["per_label"] == {"a": prf_of(1, "1/3", 1, 0, 2), "b": prf_of("1/3", 1, 1, 2, 0),
                                   "c": prf_of(1, 1, 1, 0, 0)}
    assert forced["macro_f1"] == close("2/3")  # (1/2 + 1/2 + 1) / 3
    assert forced["micro"] == prf_of("3/5", "3/5", 3, 2, 2)
    # Random: 1/3. Most frequent gold label a (3 of 5): accuracy 3/5; a: tp 3, fp 2 -> F1 3/4,
    # b and c 0 -> macro F1 1/4.
    assert draw["baselines"] == {"random": {"accuracy": close("1/3")},
                                 "most_frequent": {"label": "a", "accuracy": close("3/5"), "macro_f1": close("1/4")}}
    # Extraction at 0.5 (strict >): r0 0-2 a tp; r1 0-2 b fp; r2 0-2 b tp; r3 2-4 b fp, 2-4 a tp,
    # 0-4 a fp. Missed: r1 a, r3 0-2 c. tp 3, fp 3, fn 2.
    assert draw["extraction"]["micro"] == prf_of("1/2", "3/5", 3, 3, 2)
    assert draw["extraction"]["per_type"]["c"] == prf_of(0, 0, 0, 0, 1)
    assert size["mean"]["accuracy"] == close("3/5") and size["sd"]["accuracy"] == 0.0
    assert draw["given_spans_missing"] == 0 and draw["pairs_without_scores"] == 0


def test_offered_label_absent_from_gold_enters_macro_f1_as_zero():
    report = run(FakeModel(CHOICE_PREDICTIONS), plan("given-entities", RECORDS, relation_labels=["a", "b", "c", "d"]),
                 relation_threshold=0.5)
    draw = report["offered_sizes"][0]["draws"][0]
    assert draw["labels"] == ["a", "b", "c", "d"]
    # d has no gold pair and is never chosen (its only score, 0.05, is on a pair without gold):
    # P = R = F1 = 0, and it still counts in the mean: (1/2 + 1/2 + 1 + 0) / 4.
    assert draw["forced_choice"]["per_label"]["d"] == prf_of(0, 0, 0, 0, 0)
    assert draw["forced_choice"]["macro_f1"] == close("1/2")
    assert draw["forced_choice"]["accuracy"] == close("3/5")
    assert draw["extraction"]["per_type"]["d"] == prf_of(0, 0, 0, 0, 0)
    # Baselines over 4 offered labels: random 1/4; always a: macro F1 (3/4 + 0 + 0 + 0) / 4.
    assert draw["baselines"]["random"]["accuracy"] == close("1/4")
    assert draw["baselines"]["most_frequent"]["macro_f1"] == close("3/16")


# Per offered pair of labels, by hand (pairs whose gold labels all lie in the subset):
# {a, b}: r0 a->a, r1 a->b, r2 b->b, r3 2-4 a->b: accuracy 1/2; a F1 1/2, b (tp 1, fp 2) F1 1/2:
#   macro 1/2. Random 1/2. Always a (3 of 4): accuracy 3/4, a P 3/4 R 1 F1 6/7, macro 3/7.
# {a, c}: r0 a->a, r1 a->a (0.3 > 0.1), r3 0-2 c->c, r3 2-4 a->a: accuracy 1, macro 1.
#   Always a: accuracy 3/4, macro 3/7.
# {b, c}: r2 b->b, r3 0-2 c->c: accuracy 1, macro 1. Tie b/c (one pair each): the first offered,
#   b: accuracy 1/2; b P 1/2 R 1 F1 2/3, c 0: macro 1/3.
BY_SUBSET = {
    ("a", "b"): dict(pairs=4, accuracy="1/2", macro_f1="1/2", frequent=("a", "3/4", "3/7")),
    ("a", "c"): dict(pairs=4, accuracy="1", macro_f1="1", frequent=("a", "3/4", "3/7")),
    ("b", "c"): dict(pairs=2, accuracy="1", macro_f1="1", frequent=("b", "1/2", "1/3")),
}


def test_offered_subsets_draws_mean_and_sd():
    model = FakeModel(CHOICE_PREDICTIONS)
    report = run(model, plan("given-entities", RECORDS, offered=[2, 3], draws=4, seed=3), relation_threshold=0.5)
    two, three = report["offered_sizes"]
    assert len(two["draws"]) == 4 and len(three["draws"]) == 1  # m = number of types: one draw
    assert len(model.calls) == 5
    accuracies = []
    for draw, call in zip(two["draws"], model.calls):
        want = BY_SUBSET[tuple(draw["labels"])]
        assert call["relations"] == draw["labels"]  # exactly the subset is offered
        # only texts with an evaluated pair run
        assert len(call["words"]) == draw["texts"] == {("a", "b"): 4, ("a", "c"): 3, ("b", "c"): 2}[tuple(draw["labels"])]
        assert draw["pairs"] == want["pairs"]
        assert draw["forced_choice"]["accuracy"] == close(want["accuracy"])
        assert draw["forced_choice"]["macro_f1"] == close(want["macro_f1"])
        assert draw["baselines"]["random"]["accuracy"] == close("1/2")
        label, accuracy, macro = want["frequent"]
        assert draw["baselines"]["most_frequent"] == {"label": label, "accuracy": close(accuracy),
                                                      "macro_f1": close(macro)}
        accuracies.append(float(Fraction(want["accuracy"])))
    assert len({tuple(d["labels"]) for d in two["draws"]}) > 1, "the seed draws different subsets"
    mean = sum(accuracies) / 4
    sd = (sum((a - mean) ** 2 for a in accuracies) / 3) ** 0.5  # sample standard deviation
    assert two["mean"]["accuracy"] == pytest.approx(mean) and two["sd"]["accuracy"] == pytest.approx(sd)
    assert two["mean"]["random_accuracy"] == close("1/2")
    again = run(FakeModel(CHOICE_PREDICTIONS), plan("given-entities", RECORDS, offered=[2], draws=4, seed=3))
    assert [d["labels"] for d in again["offered_sizes"][0]["draws"]] == [d["labels"] for d in two["draws"]]


def test_per_label_keeps_the_first_records_per_label():
    # per_label 1: r0 kept (a), r1 left out (a already kept once), r2 kept (b), r3 kept (c is new).
    planned = plan("given-entities", RECORDS + [sentence("r4", [0, 2], [])], per_label=1)
    assert [e.tokens[0] for e in planned.examples] == ["r0", "r2", "r3"] and planned.dropped == 2
    report = run(FakeModel(CHOICE_PREDICTIONS), planned)
    assert report["records_dropped_by_per_label"] == 2 and report["per_label"] == 1


# ---------------------------------------------------------------------------------------------
# joint


def test_joint_group_by_domain():
    def record(key, domain):
        return {"id": key, "domain": domain, "tokens": [key, "p", "q"], "entities": [entity(0, 1, "per"), entity(2, 3, "org")],
                "relations": [{"head": 0, "tail": 1, "type": "works"}]}

    both = [(0, 0, "per"), (2, 2, "org")]
    model = FakeModel({
        "x0": (both, [((0, 0), (2, 2), "works", 0.9)]),  # perfect
        "x1": (both, [((0, 0), (2, 2), "lives", 0.9)]),  # wrong relation type
        "x2": ([(0, 0, "per")], []),  # org and the relation missed
    })
    records = [record("x0", "news"), record("x1", "music"), record("x2", "news")]
    report = run(model, plan("joint", records, relation_labels=["lives", "works"], group_by="domain"))
    assert report["group_by"] == "domain" and list(report["groups"]) == ["music", "news"]
    news, music = report["groups"]["news"], report["groups"]["music"]
    # news: entities tp 3, fn 1; relations tp 1 (x0), fn 1 (x2)
    assert news["texts"] == 2 and news["entities"]["strict"] == prf_of(1, "3/4", 3, 0, 1)
    assert news["relations"]["strict"] == prf_of(1, "1/2", 1, 0, 1)
    # music: entities perfect; relation lives fp, works fn
    assert music["entities"]["strict"] == prf_of(1, 1, 2, 0, 0)
    assert music["relations"]["strict"] == prf_of(0, 0, 0, 1, 1)
    # overall: relations tp 1, fp 1, fn 2
    assert report["relations"]["strict"] == prf_of("1/2", "1/3", 1, 1, 2)
    assert report["entities"]["strict"] == prf_of(1, "5/6", 5, 0, 1)


def test_plan_errors():
    with pytest.raises(ValueError, match="unknown protocol 'pipeline'"):
        plan("pipeline", RECORDS)
    with pytest.raises(ValueError, match="offered label set size 4 must be between 1 and the 3 relation types"):
        plan("given-entities", RECORDS, offered=[2, 4])
    with pytest.raises(ValueError, match="label_group is an option of the document protocol, not of given-entities"):
        plan("given-entities", RECORDS, label_group=2)
    with pytest.raises(ValueError, match="record 0 has no field 'domain' to group by"):
        plan("joint", RECORDS, group_by="domain")
    bad = [{**DOCUMENTS[1], "entities": [entity(0, 1, "PER", mentions=[[3, 3]]), entity(2, 3, "ORG")]}]
    with pytest.raises(ValueError, match=r"record 0: entity 0: mention \[3, 3\] needs integer start < end"):
        plan("document", bad, relation_labels=["x"])


# ---------------------------------------------------------------------------------------------
# command line


@pytest.fixture
def records_file(tmp_path):
    path = tmp_path / "data.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in RECORDS))
    return path


@pytest.mark.parametrize("extra, message", [
    (["--protocol", "pipeline"], "--protocol: unknown protocol 'pipeline'; choose one of joint, given-entities, document"),
    (["--protocol", "given-entities", "--offered", "2", "5"],
     "--offered label set size 5 must be between 1 and the 3 relation types"),
    (["--offered", "2"], "--offered is an option of the given-entities protocol, not of joint"),
    (["--protocol", "document", "--group-by", "domain"], "--group-by is an option of the joint protocol, not of document"),
    (["--protocol", "given-entities", "--given-entities"],
     "--given-entities is an option of the document protocol, not of given-entities"),
    (["--protocol", "given-entities", "--draws", "0"], "--draws must be a positive integer, got 0"),
    (["--group-by", "domain"], "record 0 has no field 'domain' to group by"),
])
def test_cli_rejects_bad_protocol_options(records_file, capsys, extra, message):
    argv = ["evaluate", "--model", str(records_file.parent / "no_model"), "--data", str(records_file), *extra]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert err == f"relex-jax evaluate: error: {message}\n"


def test_read_records_keeps_fields_and_names_bad_lines(records_file):
    records_file.write_text(records_file.read_text() + "\n" + json.dumps({**RECORDS[0], "domain": "ai"}) + "\n")
    assert read_records(records_file) == [*RECORDS, {**RECORDS[0], "domain": "ai"}]  # blank line skipped
    records_file.write_text(records_file.read_text() + "[1, 2]\n")
    with pytest.raises(ValueError, match=r"data.jsonl: line 7: a record must be a JSON object"):
        read_records(records_file)


def test_cli_protocol_needs_jsonl(tmp_path, capsys):
    data = tmp_path / "data.json"
    data.write_text("[]")
    assert cli.main(["evaluate", "--model", "m", "--data", str(data), "--protocol", "document"]) == 2
    assert capsys.readouterr().err == ("relex-jax evaluate: error: --protocol document: --data must be a "
                                       f"../shared/data-style .jsonl file, got {data}\n")
    data = tmp_path / "data.jsonl"
    data.write_text("")
    assert cli.main(["evaluate", "--model", "m", "--data", str(data), "--protocol", "document",
                     "--on-error", "skip"]) == 2
    assert "--on-error skip is not supported with it" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------
# a real tiny model


class Recording:
    """A model whose `inference_words` results are kept."""

    def __init__(self, model):
        self.model, self.results = model, []

    def inference_words(self, *args, **kwargs):
        self.results.append((kwargs["input_spans"], *self.model.inference_words(*args, **kwargs)))
        return self.results[-1][1:]


def test_given_entities_on_a_real_tiny_model(tmp_path_factory, tmp_path, capsys, monkeypatch):
    pytest.importorskip("torch")
    from gliner_fixtures import build_relex_model

    from relex_jax import RelexModel

    _, path = build_relex_model(tmp_path_factory.mktemp("protocols") / "model", seed=0)
    model = RelexModel.from_pretrained(path, devices=jax.devices()[:1])
    records = [  # spans of up to max_width = 4 words, nested and adjacent ones included
        {"tokens": "Alice Smith works at Google in Paris .".split(),
         "entities": [entity(0, 2, "person"), entity(4, 5, "organization"), entity(6, 7, "location"),
                      entity(1, 2, "person")],
         "relations": [{"head": 0, "tail": 1, "type": "works at"}, {"head": 1, "tail": 2, "type": "located in"}]},
        {"tokens": "Maria Garcia met John Novak in Tokyo on Monday .".split(),
         "entities": [entity(0, 2, "person"), entity(3, 5, "person"), entity(6, 7, "location")],
         "relations": [{"head": 1, "tail": 2, "type": "lives in"}]},
    ]
    recording = Recording(model)
    report = run(recording, plan("given-entities", records), relation_threshold=0.5)
    (size,) = report["offered_sizes"]
    draw = size["draws"][0]
    assert draw["given_spans_missing"] == 0 and draw["pairs_without_scores"] == 0 and draw["pairs"] == 3
    (spans, entities, relations), = recording.results
    labels = ["lives in", "located in", "works at"]
    for given, ents, rels in zip(spans, entities, relations):
        assert sorted(e[:2] for e in ents) == sorted(given), "exactly the given spans come back"
        # every ordered pair of given spans with every offered label: no cap, no threshold cut
        got = sorted((ents[r.head][:2], ents[r.tail][:2], r.label) for r in rels)
        assert got == sorted((h, t, label) for h in given for t in given if h != t for label in labels)
    assert 0 <= draw["forced_choice"]["accuracy"] <= 1
    # The command line gives the same scores (the model loaded above: no second compilation).
    monkeypatch.setattr(RelexModel, "from_pretrained", lambda *args, **kwargs: model)
    data = tmp_path / "given.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in records))
    out = tmp_path / "report.json"
    assert cli.main(["evaluate", "--model", str(path), "--data", str(data), "--protocol", "given-entities",
                     "--relation-threshold", "0.5", "--output", str(out)]) == 0
    written = json.loads(out.read_text())
    assert written["offered_sizes"] == json.loads(json.dumps(report["offered_sizes"]))
    assert "  3     1" in capsys.readouterr().out
