"""Zero-shot splits: training and test files whose relation types are disjoint, built from the
../shared/data benchmarks by a split file (configs/splits/zeroshot.yaml documents the format).

    python -m relex_jax.data.zeroshot configs/splits/zeroshot.yaml runs/zeroshot_data [--data-root DIR]

Writes, in the ../shared/data JSON Lines format with types renamed to natural-language phrases:
train.jsonl, dev.jsonl, test_<name>.jsonl per test set, and types.json (the entity and relation
types each file holds, and the held-out ones). The build refuses a split in which a test-side
relation type also occurs in training (names compared by `type_key`), so a split that is not
zero-shot cannot be written.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path
from typing import Any, Iterable, Iterator

import yaml

from relex_jax.data.readers import replace_blank_words
from relex_jax.files import write_text_atomically

__all__ = ["build_split", "document_sentences", "file_types", "load_split", "type_key"]


def type_key(name: str) -> str:
    """A type name as compared across datasets: lower case, '-' and '_' read as spaces."""
    return " ".join(re.sub(r"[-_]", " ", name).lower().split())


def load_split(path) -> dict[str, Any]:
    """The split file, checked: every part names its sources and every name map is str -> str."""
    path = Path(path)
    try:
        split = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as err:
        raise ValueError(f"{path}: cannot read the split file: {err}") from None
    if not isinstance(split, dict):
        raise ValueError(f"{path}: a split file is a mapping (see configs/splits/zeroshot.yaml)")
    missing = [key for key in ("train", "test") if not split.get(key)]
    if missing:
        raise ValueError(f"{path}: missing {missing}")
    for key in ("entity_names", "relation_names"):
        names = split.setdefault(key, {}) or {}
        if not all(isinstance(k, str) and isinstance(v, str) and v.strip() for k, v in names.items()):
            raise ValueError(f"{path}: {key} must map type names to non-empty phrases")
    held = split.setdefault("held_out_relations", []) or []
    if not all(isinstance(name, str) for name in held):
        raise ValueError(f"{path}: held_out_relations must be a list of type names")
    if not isinstance(split["test"], dict):
        raise ValueError(f"{path}: test must map test-set names to {{sources: [...], relations: all|held_out}}")
    for name, part in split["test"].items():
        if not isinstance(part, dict) or not part.get("sources"):
            raise ValueError(f"{path}: test.{name} needs a `sources` list")
        if part.get("relations", "all") not in ("all", "held_out"):
            raise ValueError(f"{path}: test.{name}.relations must be `all` or `held_out`")
    return split


def _sources(entries) -> Iterator[tuple[str, int | None, bool]]:
    """(path, limit, sentences) of each source entry: a path, or {path, limit, sentences}."""
    for entry in entries:
        if isinstance(entry, str):
            yield entry, None, False
        elif isinstance(entry, dict) and isinstance(entry.get("path"), str):
            yield entry["path"], entry.get("limit"), bool(entry.get("sentences", False))
        else:
            raise ValueError(f"a source is a path or {{path, limit, sentences}}, got {entry!r}")


def _records(root: Path, entries) -> Iterator[dict]:
    for relative, limit, sentences in _sources(entries):
        path = root / relative
        if not path.is_file():
            raise FileNotFoundError(f"{path}: not found (the split reads the ../shared/data benchmarks)")
        with path.open(encoding="utf-8") as f:
            for n, line in enumerate(f):
                if limit is not None and n >= limit:
                    break
                record = _record(line, path, n + 1)
                if sentences:
                    yield from document_sentences(record, f"{path}: line {n + 1}")
                else:
                    yield record


def document_sentences(document: dict, where: str = "document") -> Iterator[dict]:
    """A Re-DocRED document as sentence records for sentence-level training: each mention in the
    sentence becomes an entity (with the mention's type; a span listed twice counts once), and a
    cluster relation becomes a relation between every mention of its head and every mention of
    its tail in that sentence. Relations whose head and tail never share a sentence are not
    kept (a sentence-level model cannot see them); sentences without mentions are skipped."""
    starts = document.get("sentence_starts")
    if not isinstance(starts, list) or not starts:
        raise ValueError(f"{where}: `sentences: true` needs a document with `sentence_starts`")
    ends = starts[1:] + [len(document["tokens"])]
    for k, (start, end) in enumerate(zip(starts, ends)):
        entities, index = [], {}  # index: (cluster, span) -> entity position in the sentence
        for c, cluster in enumerate(document["entities"]):
            for mention in cluster.get("mentions") or []:
                span = (mention["start"], mention["end"])
                if start <= span[0] and span[1] <= end and (c, span) not in index:
                    index[(c, span)] = len(entities)
                    entities.append({"start": span[0] - start, "end": span[1] - start,
                                     "type": mention.get("type", cluster["type"])})
        if not entities:
            continue
        relations = [{"head": index[h], "tail": index[t], "type": r["type"]}
                     for r in document.get("relations", [])
                     for h in index if h[0] == r["head"] for t in index if t[0] == r["tail"]]
        yield {"id": f"{document.get('id', where)}-s{k}", "tokens": document["tokens"][start:end],
               "entities": entities, "relations": relations}


def _record(line: str, path: Path, number: int) -> dict:
    """One line of a benchmark file, checked for what the split reads (typed entities, typed
    relations), so that a bad line is named instead of failing later with a KeyError."""
    try:
        record = json.loads(line)
        ok = (isinstance(record, dict) and isinstance(record.get("entities"), list)
              and all(isinstance(e, dict) and isinstance(e.get("type"), str) for e in record["entities"])
              and all(isinstance(r, dict) and isinstance(r.get("type"), str) for r in record.get("relations", [])))
    except json.JSONDecodeError:
        ok = False
    if not ok:
        raise ValueError(f"{path}: line {number}: not a record of the ../shared/data format "
                         "(a JSON object with typed `entities` and `relations`)")
    return record


def _renamed(record: dict, entity_names: dict, relation_names: dict, keep) -> dict:
    """The record with its types renamed and only the relations whose source type `keep` accepts."""
    out = dict(record)
    out["entities"] = []
    for entity in record["entities"]:
        entity = dict(entity, type=entity_names.get(entity["type"], entity["type"]))
        if isinstance(entity.get("mentions"), list):
            entity["mentions"] = [dict(m, type=entity_names.get(m["type"], m["type"]))
                                  if isinstance(m, dict) and "type" in m else m for m in entity["mentions"]]
        out["entities"].append(entity)
    out["relations"] = [dict(r, type=relation_names.get(r["type"], r["type"]))
                        for r in record.get("relations", []) if keep(r["type"])]
    return out


def file_types(path) -> dict[str, list[str]]:
    """The entity and relation types a JSON Lines file holds, sorted."""
    entities, relations = set(), set()
    with Path(path).open(encoding="utf-8") as f:
        for line in f:
            record = json.loads(line)
            entities.update(e["type"] for e in record["entities"])
            relations.update(r["type"] for r in record.get("relations", []))
    return {"entities": sorted(entities), "relations": sorted(relations)}


def _write(path: Path, records: Iterable[dict]) -> int:
    lines = [json.dumps(r, ensure_ascii=False) for r in records]
    write_text_atomically(path, "".join(line + "\n" for line in lines))
    return len(lines)


def build_split(split_path, out_dir, data_root=None) -> dict[str, Any]:
    """Write the split's files into `out_dir` and return what types.json holds.

    `data_root` (default: the split's `data_root`, relative to the current directory) holds the
    benchmarks. Raises ValueError when a test-side relation type occurs in training."""
    split = load_split(split_path)
    root = Path(data_root if data_root is not None else split.get("data_root", "../shared/data"))
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    entity_names, relation_names = split["entity_names"], split["relation_names"]
    held = {type_key(name) for name in split["held_out_relations"]}

    def seen(name):
        return type_key(name) not in held

    files = {"train": (split["train"], seen), "dev": (split.get("dev") or [], seen)}
    for name, part in split["test"].items():
        files[f"test_{name}"] = (part["sources"], (lambda n: not seen(n)) if part.get("relations") == "held_out"
                                 else (lambda n: True))
    counts, types = {}, {}
    for name, (sources, keep) in files.items():
        if not sources:
            continue
        records = (_renamed(r, entity_names, relation_names, keep) for r in _records(root, sources))
        if name in ("train", "dev"):  # read by training, which refuses blank words (protocols replace them too)
            records = ({**r, "tokens": replace_blank_words(r["tokens"])} for r in records)
        counts[name] = _write(out / f"{name}.jsonl", records)
        types[name] = file_types(out / f"{name}.jsonl")
    trained = {type_key(t) for t in types["train"]["relations"]}
    shared = {name: sorted(t for t in types[name]["relations"] if type_key(t) in trained)
              for name in types if name.startswith("test_")}
    shared = {name: found for name, found in shared.items() if found}
    if shared:
        raise ValueError(f"not a zero-shot split: test relation types also in training: {shared}")
    summary = {"split": str(split_path), "held_out_relations": sorted(split["held_out_relations"]),
               "records": counts, "types": types}
    write_text_atomically(out / "types.json", json.dumps(summary, indent=1, ensure_ascii=False) + "\n")
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m relex_jax.data.zeroshot", description=__doc__.split("\n")[0])
    parser.add_argument("split", help="split file, e.g. configs/splits/zeroshot.yaml")
    parser.add_argument("out", help="directory for the built files")
    parser.add_argument("--data-root", help="where the benchmarks are (default: the split's data_root)")
    args = parser.parse_args(argv)
    try:
        summary = build_split(args.split, args.out, args.data_root)
    except (ValueError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    for name, n in summary["records"].items():
        relations = summary["types"][name]["relations"]
        print(f"{name}: {n} records, {len(relations)} relation types")
    return 0


if __name__ == "__main__":
    sys.exit(main())
