"""The zero-shot split (configs/splits/zeroshot.yaml, relex_jax.data.zeroshot): no test-side relation
type occurs in the training data, and the builder refuses a split in which one would."""

import json
from pathlib import Path

import pytest

from relex_jax.data.zeroshot import build_split, document_sentences, file_types, load_split, type_key

ROOT = Path(__file__).resolve().parents[1]
SPLIT = ROOT / "configs" / "splits" / "zeroshot.yaml"
WIDE = ROOT / "configs" / "splits" / "zeroshot_wide.yaml"
DATA = ROOT.parent / "shared" / "data"


def test_type_names_compare_across_spellings():
    assert type_key("part-of") == type_key("Part_Of") == type_key(" part  of ") == "part of"
    assert type_key("located in") != type_key("located in or next to body of water")


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    if not (DATA / "conll04").is_dir() or not (DATA / "crossre").is_dir():
        pytest.skip(f"{DATA} not present: the split is built from the shared benchmarks")
    out = tmp_path_factory.mktemp("zeroshot")
    return out, build_split(SPLIT, out, DATA)


def _relation_types_in(path: Path) -> set[str]:
    """Read back independently of the builder: every relation type of every record."""
    with path.open() as f:
        return {r["type"] for line in f for r in json.loads(line)["relations"]}


def test_no_test_side_relation_type_occurs_in_training(built):
    out, summary = built
    trained = {type_key(t) for t in _relation_types_in(out / "train.jsonl")}
    tests = sorted(p for p in out.glob("test_*.jsonl"))
    assert [p.name for p in tests] == ["test_crossre_heldout.jsonl", "test_fewrel.jsonl", "test_redocred.jsonl"]
    for path in tests:
        seen = {type_key(t) for t in _relation_types_in(path)}
        assert seen and not seen & trained, (path.name, sorted(seen & trained))
    # the dev file (threshold choice) holds training types only
    assert {type_key(t) for t in _relation_types_in(out / "dev.jsonl")} <= trained
    split = load_split(SPLIT)
    held = {type_key(split["relation_names"].get(t, t)) for t in split["held_out_relations"]}
    assert not held & trained and not {type_key(t) for t in split["held_out_relations"]} & trained
    assert {type_key(t) for t in _relation_types_in(out / "test_crossre_heldout.jsonl")} == held
    assert summary["types"]["test_fewrel"]["relations"] == sorted(_relation_types_in(out / "test_fewrel.jsonl"))


def test_split_types_are_natural_language_phrases(built):
    out, summary = built
    for name, types in summary["types"].items():
        for t in types["entities"] + types["relations"]:
            assert "_" not in t and "-" not in t and t == t.strip(), (name, t)
    assert "programming language" in summary["types"]["train"]["entities"]
    assert "works for" in summary["types"]["train"]["relations"]
    # multi-mention entities keep every mention, renamed like the entity
    with (out / "test_redocred.jsonl").open() as f:
        entity = json.loads(f.readline())["entities"][0]
    assert len(entity["mentions"]) > 1 and {m["type"] for m in entity["mentions"]} == {entity["type"]}
    assert entity["type"] in {"person", "organization", "location", "time", "number", "miscellaneous"}


def _write_jsonl(path: Path, records) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in records))


def _record(relation_types):
    return {"tokens": ["a", "b", "c"],
            "entities": [{"start": 0, "end": 1, "type": "x"}, {"start": 2, "end": 3, "type": "y"}],
            "relations": [{"head": 0, "tail": 1, "type": t} for t in relation_types]}


def test_held_out_types_leave_training_and_a_leak_is_refused(tmp_path):
    root = tmp_path / "data"
    _write_jsonl(root / "a" / "train.jsonl", [_record(["part-of", "usage"]), _record(["usage"]), _record([])])
    _write_jsonl(root / "a" / "test.jsonl", [_record(["part-of", "usage"])])
    _write_jsonl(root / "b" / "test.jsonl", [_record(["Part_Of"])])
    split = tmp_path / "split.yaml"
    split.write_text(
        "held_out_relations: [part-of]\n"
        "train: [{path: a/train.jsonl, limit: 2}]\n"
        "test:\n  held: {sources: [a/test.jsonl], relations: held_out}\n"
        "relation_names: {part-of: part of}\nentity_names: {x: ex}\n"
    )
    summary = build_split(split, tmp_path / "out", root)
    assert summary["records"] == {"train": 2, "test_held": 1}  # limit: 2 of 3 records
    assert file_types(tmp_path / "out" / "train.jsonl") == {"entities": ["ex", "y"], "relations": ["usage"]}
    assert file_types(tmp_path / "out" / "test_held.jsonl")["relations"] == ["part of"]  # non-held-out dropped
    # a test set that keeps every type, and shares one with training, is refused by name
    split.write_text(split.read_text().replace("held: {sources: [a/test.jsonl], relations: held_out}",
                                               "all: {sources: [a/test.jsonl, b/test.jsonl]}"))
    with pytest.raises(ValueError, match=r"not a zero-shot split.*test_all.*'usage'"):
        build_split(split, tmp_path / "out2", root)


def test_a_malformed_source_line_is_named(tmp_path):
    root = tmp_path / "data"
    _write_jsonl(root / "a.jsonl", [_record(["usage"])])
    (root / "a.jsonl").write_text((root / "a.jsonl").read_text() + '{"tokens": ["x"], "entities": [{"start": 0}]}\n')
    split = tmp_path / "split.yaml"
    split.write_text("train: [a.jsonl]\ntest: {t: {sources: [a.jsonl]}}\n")
    with pytest.raises(ValueError, match=r"a.jsonl: line 2: not a record of the ../shared/data format"):
        build_split(split, tmp_path / "out", root)


def test_a_malformed_split_file_is_refused_clearly(tmp_path):
    split = tmp_path / "split.yaml"
    split.write_text("train: [a.jsonl]\n")
    with pytest.raises(ValueError, match=r"missing \['test'\]"):
        load_split(split)
    split.write_text("train: [a.jsonl]\ntest: {t: {sources: [b.jsonl], relations: some}}\n")
    with pytest.raises(ValueError, match="must be `all` or `held_out`"):
        load_split(split)


def test_a_document_is_read_as_sentences():
    """Two sentences: mentions become entities of their sentence (a span listed twice once), a
    cluster relation holds between every head and tail mention sharing a sentence, and a
    relation whose clusters never share a sentence is not kept."""
    document = {
        "id": "doc", "tokens": ["Ann", "met", "Bob", "in", "Oslo", ".", "Ann", "left", "Oslo", "."],
        "sentence_starts": [0, 6],
        "entities": [
            {"type": "PER", "mentions": [{"start": 0, "end": 1, "type": "PER"}, {"start": 6, "end": 7, "type": "PER"},
                                         {"start": 0, "end": 1, "type": "PER"}]},
            {"type": "PER", "mentions": [{"start": 2, "end": 3, "type": "PER"}]},
            {"type": "LOC", "mentions": [{"start": 4, "end": 5, "type": "LOC"}, {"start": 8, "end": 9, "type": "LOC"}]},
        ],
        "relations": [{"head": 0, "tail": 2, "type": "visited"}, {"head": 1, "tail": 0, "type": "knows"}],
    }
    first, second = document_sentences(document)
    assert first["tokens"] == ["Ann", "met", "Bob", "in", "Oslo", "."] and first["id"] == "doc-s0"
    assert [(e["start"], e["end"], e["type"]) for e in first["entities"]] == [(0, 1, "PER"), (2, 3, "PER"), (4, 5, "LOC")]
    assert first["relations"] == [{"head": 0, "tail": 2, "type": "visited"}, {"head": 1, "tail": 0, "type": "knows"}]
    assert second["tokens"] == ["Ann", "left", "Oslo", "."]
    assert [(e["start"], e["end"]) for e in second["entities"]] == [(0, 1), (2, 3)]  # in sentence positions
    assert second["relations"] == [{"head": 0, "tail": 1, "type": "visited"}]  # Bob is not in it: no "knows"
    with pytest.raises(ValueError, match="needs a document with `sentence_starts`"):
        list(document_sentences({"tokens": ["a"], "entities": []}))


def test_the_wide_split_holds_out_fewrel_properties_from_redocred_training(tmp_path):
    if not (DATA / "docred").is_dir() or not (DATA / "fewrel").is_dir() or not (DATA / "crossre").is_dir():
        pytest.skip(f"{DATA} not present: the split is built from the shared benchmarks")
    summary = build_split(WIDE, tmp_path, DATA)
    trained = {type_key(t) for t in _relation_types_in(tmp_path / "train.jsonl")}
    assert len(trained) > 90, "Re-DocRED dev's relation types are in training"
    with (tmp_path / "train.jsonl").open() as f:  # training refuses whitespace-only words (Re-DocRED has some)
        assert all(token.strip() for line in f for token in json.loads(line)["tokens"])
    for path in tmp_path.glob("test_*.jsonl"):
        seen = {type_key(t) for t in _relation_types_in(path)}
        assert seen and not seen & trained, (path.name, sorted(seen & trained))
    # every Re-DocRED property that is one of FewRel's is out of training, by P-id (read independently)
    fewrel = set(json.loads((DATA / "fewrel" / "rel_info_val_wiki.json").read_text()))
    docred = json.loads((DATA / "docred" / "rel_info.json").read_text())
    assert {type_key(docred[p]) for p in fewrel if p in docred} <= {type_key(t) for t in summary["types"]["test_redocred"]["relations"]}
    assert not {type_key(docred[p]) for p in fewrel if p in docred} & trained
