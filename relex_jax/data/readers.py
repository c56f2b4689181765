"""Training data readers: two on-disk formats and the hub, into one `Example` form.

Readers yield `Example`s, one internal form: words, entities `(start, end_inclusive, label)`,
relations `(head, tail, label)` whose `head`/`tail` index the entity list *as given*, and the
optional fixed label lists and explicit negative types of gliner's training format (spec §13.1).

- `read_gliner_json`: gliner's training JSON (a list of `{"tokenized_text", "ner", "relations",
  "ner_labels"?, "rel_labels"?, "ner_negatives"?, "rel_negatives"?}`; other keys, such as an
  "id", are ignored and named once per read in the log, `"ner": null` is no entities).
- `read_jsonl`: the JSON Lines format of `../shared/data` (end-exclusive entity spans, converted).

Malformed records are reported with the file and line (JSON Lines) or record index (JSON list)
and, by `on_error`, raise `MalformedRecord` or are skipped, logged and counted. An entity whose
words lie (partly) outside the text is not malformed: it is read as given, and, as gliner does,
gets no training target; training counts and logs it under `data.on_long_span`
(`relex_jax.data.collate.spans_outside_grid`), and evaluation counts it as missed.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Literal, Mapping

log = logging.getLogger(__name__)

Span = tuple[int, int, str]

GLINER_KEYS = ("tokenized_text", "ner", "relations", "ner_labels", "rel_labels", "ner_negatives", "rel_negatives")
LABEL_KEYS = ("ner_labels", "rel_labels", "ner_negatives", "rel_negatives")
# Top-level metadata keys of the ../shared/data JSON Lines files (README there): read and ignored.
JSONL_METADATA_KEYS = ("id", "orig_id", "domain", "title", "sentence_starts")


@dataclasses.dataclass(frozen=True)
class Example:
    """One training text. `entities` are `(start, end_inclusive, label)` word spans; relations are
    `(head, tail, label)` with head / tail indexing `entities` as given. `ner_labels` /
    `rel_labels` fix the types (and their prompt order) for this text; `ner_negatives` /
    `rel_negatives` replace the in-batch negative types. `source` says where it was read."""

    tokens: tuple[str, ...]
    entities: tuple[Span, ...] = ()
    relations: tuple[Span, ...] = ()
    ner_labels: tuple[str, ...] | None = None
    rel_labels: tuple[str, ...] | None = None
    ner_negatives: tuple[str, ...] | None = None
    rel_negatives: tuple[str, ...] | None = None
    source: str = dataclasses.field(default="", compare=False)

    def to_gliner(self) -> dict[str, Any]:
        """gliner's training record (optional keys only when set: gliner tests key presence)."""
        record: dict[str, Any] = {
            "tokenized_text": list(self.tokens),
            "ner": [list(e) for e in self.entities],
            "relations": [list(r) for r in self.relations],
        }
        for key in LABEL_KEYS:
            if getattr(self, key) is not None:
                record[key] = list(getattr(self, key))
        return record


class MalformedRecord(ValueError):
    """A record that cannot be read; the message starts with its file and line / record."""


class _Problem(Exception):
    pass


def _is_int(x) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


BLANK_WORD = "_"  # what `replace_blank_words` puts in place of a whitespace-only word


def replace_blank_words(tokens):
    """Tokens with whitespace-only words (FewRel and Re-DocRED have a few hundred, e.g. '\\xa0')
    replaced by `BLANK_WORD`: they have no subword tokens, which the model refuses, and dropping
    them would shift every span. Anything that is not a list of strings is left for the parser."""
    if not isinstance(tokens, list):
        return tokens
    return [BLANK_WORD if isinstance(t, str) and not t.strip() else t for t in tokens]


def _tokens(value) -> tuple[str, ...]:
    if not isinstance(value, list):
        raise _Problem(f"tokens must be a list of strings, got {type(value).__name__}")
    if not value:
        raise _Problem("empty tokens")
    for i, token in enumerate(value):
        if not isinstance(token, str) or not token.strip():
            raise _Problem(f"token {i} ({token!r}) is not a non-blank string")
    return tuple(value)


def _label(value, what: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise _Problem(f"{what} has label {value!r}; labels must be non-blank strings")
    return value


def _check_entity(i: int, start, end, label) -> Span:
    what = f"entity {i}"
    if not (_is_int(start) and _is_int(end)):
        raise _Problem(f"{what} has non-integer indices ({start!r}, {end!r})")
    if end < start:
        raise _Problem(f"{what} ends before it starts (start {start}, inclusive end {end})")
    return start, end, _label(label, what)


def _check_relation(i: int, head, tail, label, num_entities: int) -> Span:
    what = f"relation {i}"
    if not (_is_int(head) and _is_int(tail)):
        raise _Problem(f"{what} has non-integer entity indices ({head!r}, {tail!r})")
    if not (0 <= head < num_entities and 0 <= tail < num_entities):
        raise _Problem(f"{what} ({head}, {tail}) indexes outside the {num_entities} entities")
    return head, tail, _label(label, what)


def _label_lists(record: Mapping) -> dict[str, tuple[str, ...] | None]:
    """Optional fixed / negative type lists; duplicates dropped keeping the first (from a
    duplicated fixed label gliner builds class ids with a gap, and fails on an entity of it)."""
    out = {}
    for key in LABEL_KEYS:
        value = record.get(key)
        if value is not None:
            if not isinstance(value, list):
                raise _Problem(f"{key} must be a list of strings, got {type(value).__name__}")
            for j, label in enumerate(value):
                _label(label, f"{key}[{j}]")
            value = tuple(dict.fromkeys(value))
        out[key] = value
    return out


def _check_keys(record, allowed: Iterable[str], required: Iterable[str], ignored: set | None = None) -> None:
    """Refuse a non-object, missing `required` keys, and keys outside `allowed`, unless `ignored`
    is given: then unknown keys are added to it and otherwise ignored."""
    if not isinstance(record, dict):
        raise _Problem(f"a record must be a JSON object, got {type(record).__name__}")
    unknown = sorted(set(record) - set(allowed))
    if unknown and ignored is None:
        raise _Problem(f"unknown keys {unknown} (known: {', '.join(allowed)})")
    if unknown:
        ignored.update(unknown)
    missing = [k for k in required if k not in record]
    if missing:
        raise _Problem(f"missing keys {missing}")


def _triples(value, what: str) -> list:
    if not isinstance(value, list):
        raise _Problem(f"{what} must be a list, got {type(value).__name__}")
    for i, item in enumerate(value):
        if not isinstance(item, (list, tuple)) or len(item) != 3:
            raise _Problem(f"{what}[{i}] must be a [a, b, label] triple, got {item!r}")
    return value


def parse_gliner_record(record, source: str = "", ignored_keys: set | None = None) -> Example:
    """One gliner training record -> `Example` (raises `MalformedRecord`). Keys other than
    `GLINER_KEYS` (e.g. an "id") are ignored, as gliner does, and added to `ignored_keys` if given;
    `"ner": null` means no entities (gliner's reading too)."""
    try:
        _check_keys(record, GLINER_KEYS, ("tokenized_text", "ner"), set() if ignored_keys is None else ignored_keys)
        tokens = _tokens(record["tokenized_text"])
        ner = [] if record["ner"] is None else record["ner"]
        entities = tuple(_check_entity(i, *e) for i, e in enumerate(_triples(ner, "ner")))
        relations = tuple(
            _check_relation(i, *r, len(entities)) for i, r in enumerate(_triples(record.get("relations") or [], "relations"))
        )
        return Example(tokens, entities, relations, **_label_lists(record), source=source)
    except _Problem as problem:
        raise MalformedRecord(f"{source}: {problem}" if source else str(problem)) from None


def parse_jsonl_record(record, source: str = "", metadata_keys: Iterable[str] = JSONL_METADATA_KEYS) -> Example:
    """One record of the ../shared/data JSON Lines format -> `Example` (end-exclusive spans become
    inclusive). Entity and relation objects may carry extra fields; top-level keys must be known:
    tokens, entities, relations, the optional label lists, or `metadata_keys`."""
    try:
        allowed = ("tokens", "entities", "relations", *LABEL_KEYS, *metadata_keys)
        _check_keys(record, allowed, ("tokens", "entities"))
        tokens = _tokens(record["tokens"])
        entities = []
        for i, entity in enumerate(_dicts(record["entities"], "entities", ("start", "end", "type"))):
            end = entity["end"] - 1 if _is_int(entity["end"]) else entity["end"]
            entities.append(_check_entity(i, entity["start"], end, entity["type"]))
        relations = tuple(
            _check_relation(i, r["head"], r["tail"], r["type"], len(entities))
            for i, r in enumerate(_dicts(record.get("relations") or [], "relations", ("head", "tail", "type")))
        )
        return Example(tokens, tuple(entities), relations, **_label_lists(record), source=source)
    except _Problem as problem:
        raise MalformedRecord(f"{source}: {problem}" if source else str(problem)) from None


def _dicts(value, what: str, required: tuple[str, ...]) -> list:
    if not isinstance(value, list):
        raise _Problem(f"{what} must be a list, got {type(value).__name__}")
    for i, item in enumerate(value):
        if not isinstance(item, dict):
            raise _Problem(f"{what}[{i}] must be an object, got {item!r}")
        missing = [k for k in required if k not in item]
        if missing:
            raise _Problem(f"{what}[{i}] lacks {missing}")
    return value


def _read(parsers: Iterable[Callable[[], Example]], path, on_error: str, errors: list | None,
          shard: tuple[int, int] = (0, 1)) -> list[Example]:
    if on_error not in ("skip", "raise"):
        raise ValueError(f"on_error must be 'skip' or 'raise', got {on_error!r}")
    index, count = shard
    if not 0 <= index < count:
        raise ValueError(f"shard must be (index, count) with 0 <= index < count, got {shard}")
    examples, skipped = [], 0
    for number, parse in enumerate(parsers):
        if number % count != index:  # another host's record: not even parsed
            continue
        try:
            examples.append(parse())
        except MalformedRecord as bad:
            if on_error == "raise":
                raise
            skipped += 1
            log.warning("skipping malformed record: %s", bad)
            if errors is not None:
                errors.append(str(bad))
    if skipped:
        log.warning("%s: skipped %d malformed of %d records", path, skipped, skipped + len(examples))
    return examples


def read_gliner_json(path, on_error: Literal["skip", "raise"] = "raise", errors: list | None = None,
                     shard: tuple[int, int] = (0, 1)) -> list[Example]:
    """gliner's training JSON (one list of records), streamed: records are decoded one at a time
    (`json_array_records`), and only this shard's become `Example`s, so a host never holds the
    whole list. Problems name the file and the record's index in the list (or the line, for text
    that is not JSON, which fails the read whatever `on_error` says); `errors`, if given, collects
    the messages of skipped records. `shard` (index, count) keeps records index, index + count, ...
    (one host's share)."""
    path = Path(path)
    ignored: set = set()

    def items():
        for index, record in enumerate(json_array_records(path)):
            source = f"{path}: record {index}"
            yield lambda r=record, s=source: parse_gliner_record(r, s, ignored)

    examples = _read(items(), path, on_error, errors, shard)
    _log_ignored(path, ignored)
    return examples


# Characters read at a time by `json_array_records` (a record longer than this is read in more).
JSON_CHUNK_CHARS = 1 << 20


def json_array_records(path) -> Iterator[Any]:
    """The elements of a file holding one top-level JSON array, decoded one by one
    (`json.JSONDecoder.raw_decode` over a buffer of about `JSON_CHUNK_CHARS` plus one record).
    Text that is not JSON raises `MalformedRecord` naming the file and line, when it is reached;
    a file holding something other than an array raises before any element."""
    path = Path(path)
    decoder = json.JSONDecoder()
    buf, pos, line, eof = "", 0, 1, False  # `line`: the line number of buf[0]

    with path.open(encoding="utf-8") as stream:

        def more() -> None:  # drop what is parsed, read the next chunk
            nonlocal buf, pos, line, eof
            line += buf.count("\n", 0, pos)
            buf, pos = buf[pos:], 0
            chunk = stream.read(JSON_CHUNK_CHARS)
            eof = not chunk
            buf += chunk

        def skip_space() -> bool:  # True when a character follows
            nonlocal pos
            while True:
                while pos < len(buf) and buf[pos] in " \t\n\r":
                    pos += 1
                if pos < len(buf) or eof:
                    return pos < len(buf)
                more()

        def fail(message: str, at: int):
            number = line + buf.count("\n", 0, at)
            raise MalformedRecord(f"{path}: line {number}: not valid JSON ({message})")

        if not skip_space():
            fail("Expecting value", pos)
        if buf[pos] != "[":
            line += buf.count("\n", 0, pos)
            try:
                value = json.loads(buf[pos:] + stream.read())
            except json.JSONDecodeError as bad:
                raise MalformedRecord(f"{path}: line {line + bad.lineno - 1}: not valid JSON ({bad.msg})") from None
            raise MalformedRecord(f"{path}: a gliner training file holds a JSON list, got {type(value).__name__}")
        pos += 1
        if skip_space() and buf[pos] == "]":
            pos += 1
        else:
            while True:
                if not skip_space():
                    fail("Expecting value", pos)
                try:
                    value, end = decoder.raw_decode(buf, pos)
                except json.JSONDecodeError as bad:
                    if eof:
                        fail(bad.msg, bad.pos)
                    more()  # the record runs past the buffer (or is broken: then the file's end tells)
                    continue
                if end == len(buf) and not eof:  # a number could go on in the next chunk
                    more()
                    continue
                pos = end
                yield value
                if not skip_space():
                    fail("Expecting ',' delimiter", pos)
                if buf[pos] == "]":
                    pos += 1
                    break
                if buf[pos] != ",":
                    fail("Expecting ',' delimiter", pos)
                pos += 1
        if skip_space():
            fail("Extra data", pos)


def _log_ignored(path, ignored: set) -> None:
    """Once per read: the unknown keys that gliner-format records carried (and we ignored)."""
    if ignored:
        log.info("%s: ignored keys %s that gliner's training format does not read (it reads %s)", path,
                 sorted(ignored), ", ".join(GLINER_KEYS))


def read_jsonl(
    path,
    on_error: Literal["skip", "raise"] = "raise",
    errors: list | None = None,
    metadata_keys: Iterable[str] = JSONL_METADATA_KEYS,
    shard: tuple[int, int] = (0, 1),
) -> list[Example]:
    """The ../shared/data JSON Lines format. Problems name the file and the 1-based line; blank
    lines are ignored (and not counted as records for `shard`, as `read_gliner_json`)."""
    path = Path(path)
    metadata_keys = tuple(metadata_keys)

    def parse_line(line: str, source: str) -> Example:
        try:
            record = json.loads(line)
        except json.JSONDecodeError as bad:
            raise MalformedRecord(f"{source}: not valid JSON ({bad.msg})") from None
        return parse_jsonl_record(record, source, metadata_keys)

    def items():
        with path.open() as lines:
            for number, line in enumerate(lines, 1):
                if line.strip():
                    source = f"{path}: line {number}"
                    yield lambda l=line, s=source: parse_line(l, s)

    return _read(items(), path, on_error, errors, shard)


def read_hub_dataset(name: str, split: str = "train", on_error: Literal["skip", "raise"] = "raise",
                     errors: list | None = None, shard: tuple[int, int] = (0, 1)) -> list[Example]:
    """A Hugging Face hub dataset (`datasets.load_dataset(name, split=split)`, network needed) whose
    records are in gliner's training format or the ../shared/data format (told apart by their keys)."""
    import datasets

    data = datasets.load_dataset(name, split=split)
    ignored: set = set()
    if "tokenized_text" in data.column_names:
        def parse(record, source):
            return parse_gliner_record(record, source, ignored)
    else:
        parse = parse_jsonl_record

    def items():
        for index, record in enumerate(data):
            yield lambda r=record, s=f"{name}[{split}]: record {index}": parse(r, s)

    examples = _read(items(), name, on_error, errors, shard)
    _log_ignored(f"{name}[{split}]", ignored)
    return examples


def split_hub_spec(spec: str) -> tuple[str, str]:
    """`hf:NAME[:SPLIT]` -> (NAME, SPLIT); SPLIT is "train" when not given."""
    name, _, split = spec.removeprefix("hf:").partition(":")
    return name, split or "train"


def read_examples(path, on_error: Literal["skip", "raise"] = "raise", errors: list | None = None,
                  shard: tuple[int, int] = (0, 1)) -> list[Example]:
    """`read_jsonl` for *.jsonl, `read_gliner_json` for *.json, `read_hub_dataset` for
    "hf:NAME[:SPLIT]"."""
    text = str(path)
    if text.startswith("hf:"):
        return read_hub_dataset(*split_hub_spec(text), on_error, errors, shard)
    suffix = Path(path).suffix
    if suffix == ".jsonl":
        return read_jsonl(path, on_error, errors, shard=shard)
    if suffix == ".json":
        return read_gliner_json(path, on_error, errors, shard)
    raise ValueError(f"{path}: unknown training data format (expected .json, .jsonl or hf:NAME[:SPLIT])")


def read_source(source: str, seed: int, on_error: str, shard: tuple[int, int], errors: list | None = None):
    """Examples of a data source string (`DataConfig.train` / `dev`): a file or hub dataset (`read_examples`),
    or `synthetic:SPLIT:N` (the embedded generator); `shard` (index, count) as `read_examples`."""
    if source.startswith("synthetic:"):
        from relex_jax.data.synthetic import generate_examples

        try:
            _, split, count = source.split(":")
            examples = generate_examples(int(count), seed=seed, split=split)
        except ValueError as err:
            raise ValueError(f"data source {source!r}: expected synthetic:SPLIT:N ({err})") from None
        return examples[shard[0]:: shard[1]]
    if not source.startswith("hf:") and not Path(source).expanduser().is_file():
        raise FileNotFoundError(f"data file {source} does not exist")
    return read_examples(source if source.startswith("hf:") else Path(source).expanduser(), on_error, errors, shard)
