"""The synthetic corpus: determinism, held-out name pools, exact spans, type signatures, JSONL round trip."""

import json
import re
from collections import defaultdict

import pytest

from relex_jax.data import synthetic
from relex_jax.data.synthetic import (
    ENTITY_TYPES,
    MAX_ENTITY_WIDTH,
    RELATION_SIGNATURES,
    RELATION_TYPES,
    generate_examples,
    write_jsonl,
)
from relex_jax.data.readers import read_jsonl

SPLITS = ("train", "dev", "test")
CORPUS = {split: generate_examples(600, seed=1, split=split) for split in SPLITS}

NAME = r"[A-Z][A-Za-z']+"
MONTH = r"(January|February|March|April|May|June|July|August|September|October|November|December)"
YEAR = r"(19[3-9]\d|200\d|201[0-5])"
DAY = r"([1-9]|1\d|2[0-8])"
DATE_FORMS = (rf"{DAY} {MONTH} {YEAR}", rf"{MONTH} {DAY} , {YEAR}", rf"{MONTH} {YEAR}", YEAR)
SURFACE = {  # what a whole mention of each type looks like
    "person": rf"{NAME}( [A-Z]\.)? {NAME}",
    "organization": rf"{NAME}( {NAME})?( Inc\.| Ltd| AG| Corporation)?",
    "location": rf"{NAME}( de)?( {NAME}){{0,2}}",
    "date": "|".join(f"({form})" for form in DATE_FORMS),
}


def mention(ex, entity):
    start, end, _ = entity
    return " ".join(ex.tokens[start : end + 1])


def test_deterministic_and_prefix_stable():
    a = generate_examples(80, seed=7, split="dev")
    assert a == generate_examples(80, seed=7, split="dev")
    assert generate_examples(30, seed=7, split="dev") == a[:30]
    assert a != generate_examples(80, seed=8, split="dev")
    assert a != generate_examples(80, seed=7, split="test")


def test_unknown_split_rejected():
    with pytest.raises(ValueError, match="unknown split"):
        generate_examples(1, split="validation")


def test_splits_use_disjoint_names():
    """Held-out splits see no person name part, organisation stem or location of train (or each other)."""
    seen = {split: defaultdict(set) for split in SPLITS}
    for split, examples in CORPUS.items():
        for ex in examples:
            for entity in ex.entities:
                words = mention(ex, entity).split()
                if entity[2] == "person":
                    seen[split]["person"].update(w for w in words if not re.fullmatch(r"[A-Z]\.", w))
                elif entity[2] == "organization":
                    seen[split]["organization"].add(words[0])
                elif entity[2] == "location":
                    seen[split]["location"].add(" ".join(words))
    for kind in ("person", "organization", "location"):
        for i, a in enumerate(SPLITS):
            for b in SPLITS[i + 1 :]:
                assert seen[a][kind] and seen[b][kind]
                assert not seen[a][kind] & seen[b][kind], (kind, a, b)


def test_spans_in_range_exact_distinct_and_disjoint():
    entity_words, other_words = set(), set()
    for examples in CORPUS.values():
        for ex in examples:
            covered = set()
            assert list(ex.entities) == sorted(ex.entities)
            for entity in ex.entities:
                start, end, label = entity
                assert 0 <= start <= end < len(ex.tokens)
                assert end - start + 1 <= MAX_ENTITY_WIDTH
                assert re.fullmatch(SURFACE[label], mention(ex, entity)), (label, mention(ex, entity))
                span = set(range(start, end + 1))
                assert not span & covered, ex  # no two entities overlap
                covered |= span
                entity_words.update(ex.tokens[start : end + 1])
            assert len({mention(ex, e) for e in ex.entities}) == len(ex.entities)  # slots differ
            other_words.update(t for i, t in enumerate(ex.tokens) if i not in covered)
    # A span cut short (or too long) would leave a name word outside (or a template word inside).
    assert entity_words & other_words == {","}


def test_each_surface_form_has_one_type():
    types = defaultdict(set)
    for examples in CORPUS.values():
        for ex in examples:
            for entity in ex.entities:
                types[mention(ex, entity)].add(entity[2])
    assert all(len(t) == 1 for t in types.values()), {m: t for m, t in types.items() if len(t) > 1}


def test_relations_follow_signatures():
    assert set(RELATION_SIGNATURES) == set(RELATION_TYPES)
    assert {t for pair in RELATION_SIGNATURES.values() for t in pair} <= set(ENTITY_TYPES)
    for examples in CORPUS.values():
        for ex in examples:
            assert len(set(ex.relations)) == len(ex.relations)
            for head, tail, label in ex.relations:
                assert head != tail
                assert (ex.entities[head][2], ex.entities[tail][2]) == RELATION_SIGNATURES[label]


@pytest.mark.parametrize("split", SPLITS)
def test_every_type_appears_in_200_examples(split):
    examples = generate_examples(200, seed=0, split=split)
    assert {e[2] for ex in examples for e in ex.entities} == set(ENTITY_TYPES)
    assert {r[2] for ex in examples for r in ex.relations} == set(RELATION_TYPES)


def test_variety():
    """Distinct sentence skeletons (entities replaced by their type), multi-fact, distractor and
    relation-free sentences, and all four date formats."""
    examples = generate_examples(500, seed=0)
    skeletons = set()
    for ex in examples:
        words, i = [], 0
        for start, end, label in ex.entities:
            words += [*ex.tokens[i:start], f"<{label}>"]
            i = end + 1
        skeletons.add(" ".join(words + list(ex.tokens[i:])))
    assert len(skeletons) >= 30
    assert any(not ex.relations for ex in examples)
    assert any(len(ex.relations) >= 2 for ex in examples)
    assert any(ex.relations and len({i for r in ex.relations for i in r[:2]}) < len(ex.entities) for ex in examples)
    dates = {mention(ex, e) for ex in examples for e in ex.entities if e[2] == "date"}
    for form in DATE_FORMS:
        assert any(re.fullmatch(form, d) for d in dates), form


def test_write_jsonl_round_trip(tmp_path):
    path = write_jsonl(tmp_path / "sub" / "dev.jsonl", 120, seed=4, split="dev")
    expected = generate_examples(120, seed=4, split="dev")
    assert read_jsonl(path) == expected
    records = [json.loads(line) for line in path.read_text().splitlines()]
    first = records[0]["entities"][0]  # the file's spans are end-exclusive
    in_file = " ".join(records[0]["tokens"][first["start"] : first["end"]])
    assert in_file == mention(expected[0], expected[0].entities[0])
    assert len({r["id"] for r in records}) == 120
    assert sorted(p.name for p in path.parent.iterdir()) == ["dev.jsonl"]


def test_write_jsonl_is_atomic(tmp_path, monkeypatch):
    path = write_jsonl(tmp_path / "train.jsonl", 5)
    before = path.read_text()

    def broken(n, seed, split):
        yield from generate_examples(2, seed, split)
        raise RuntimeError("interrupted")

    monkeypatch.setattr(synthetic, "generate_examples", broken)
    with pytest.raises(RuntimeError, match="interrupted"):
        write_jsonl(path, 50)
    assert path.read_text() == before
    assert [p.name for p in tmp_path.iterdir()] == ["train.jsonl"]
