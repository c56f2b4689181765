"""Corpus-scale inference in committed pieces: resumable, and sharded over processes or hosts.

A run directory holds

  manifest.json         what the run computes: the model (its path, and a SHA-256 of its files),
                        the input (`Corpus.identity`), labels, relation types, the settings that
                        change results, output fields, text column, chunk size and piece format.
                        Created once, atomically, by whichever process comes first; every later
                        start (a resume, another host) must describe the same run or is refused
                        with the differences named.
  piece-00000012.jsonl  the output objects of input records 12 * chunk ... 13 * chunk - 1, in input
  (or .parquet)         order, each the input record plus the entity and relation fields. A piece is
                        written under a temporary name, flushed to disk (fsync) and renamed: it
                        exists whole or not at all, and an existing piece is never computed again.
  end.json              {"records": R, "pieces": P, "chunk_size": C}, once a process has read the
                        input to its end.

Why pieces per chunk rather than one append-only file: a piece is committed by a rename, which
is atomic on any POSIX filesystem, so a kill at any instant (even mid-write) leaves only whole
pieces and a hidden temporary file; there is no index to keep in step with the data, and
processes on several hosts write disjoint files in one shared directory without locks or
coordination. Resuming is listing the directory. The price is one file per chunk (a 10M-record
corpus at the default 256 is 39k files); raise the chunk size for very large corpora.

Sharding: process I of N takes the pieces k with k % N == I (`--shard I/N`, or under
`jax.distributed` its process index and count). The shares are disjoint and cover every piece
whatever N is, and a piece's content depends only on its records and the run's settings, so the
union equals a single-process run; N may even change between a start and a resume.

`read_run` yields the output objects of a complete run in input order, checking that every piece
is there with the record count it must have (every record exactly once); `merge_run` writes them
as one JSONL or Parquet file.

Settings left out of the manifest: `batch_size` and `packing` only group texts differently on
the device (results equal within float rounding, `RelexModel.inference`), so a resume may change
them, e.g. on other hardware. Everything else must match.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import math
import re
import shutil
import sys
import time
from pathlib import Path
from typing import Any, Iterator

from relex_jax.data.corpus import Corpus, CorpusError
from relex_jax.files import write_atomically, write_text_atomically

RUN_FORMAT = "relex-jax predict run 1"
MANIFEST, END = "manifest.json", "end.json"
PIECE_FORMATS = ("jsonl", "parquet")
PIECE = re.compile(r"piece-(\d{8,})\.(jsonl|parquet)")
PARTIAL = re.compile(r"\.(piece-(\d{8,})\.(?:jsonl|parquet)|manifest\.json|end\.json)\.partial-.*")
# Settings that change how texts are grouped on the device, not what comes out (see module docstring).
GROUPING_SETTINGS = ("batch_size", "packing")
# Manifest entries that describe a run without defining it: another host may name the same model
# or input by another path.
INFORMATIVE = ("model.path", "input.source")
# Rows per row group of a merged Parquet file (pieces are smaller; readers prefer larger groups).
MERGED_ROW_GROUP = 65536


class RunError(ValueError):
    """A run directory that cannot be used as asked: another run's, incomplete, or not a run."""


def piece_name(k: int, piece_format: str) -> str:
    return f"piece-{k:08d}.{piece_format}"


def parse_shard(spec: str) -> tuple[int, int]:
    """`I/N` -> (I, N), with 0 <= I < N."""
    match = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", spec)
    if not match or not int(match[1]) < int(match[2]):
        raise ValueError(f"a shard is I/N with 0 <= I < N (process I of N), got {spec!r}")
    return int(match[1]), int(match[2])


def current_shard() -> tuple[int, int]:
    """(process index, process count) under `jax.distributed`, else (0, 1)."""
    import jax

    if jax.distributed.is_initialized():
        return jax.process_index(), jax.process_count()
    return 0, 1


def model_identity(model_dir) -> dict[str, Any]:
    """The model directory's path and a SHA-256 of every file in it (relative path, size,
    content; symlinks followed, as in a hub snapshot): re-saved or retrained weights of the same
    shapes change it, a copy of the same model elsewhere does not."""
    model_dir = Path(model_dir)
    digest = hashlib.sha256()
    for file in sorted(p for p in model_dir.rglob("*") if p.is_file()):
        digest.update(f"{file.relative_to(model_dir).as_posix()}\0{file.stat().st_size}\0".encode())
        with open(file, "rb") as f:
            for block in iter(lambda: f.read(1 << 24), b""):
                digest.update(block)
    return {"path": str(model_dir.resolve()), "sha256": digest.hexdigest()}


def make_manifest(*, model: dict | None, corpus: Corpus, labels, relations, settings, entities_key: str,
                  relations_key: str, chunk_size: int, piece_format: str) -> dict[str, Any]:
    """The manifest of a run (module docstring), as plain JSON values. `model` None: not known
    yet (a check before the model loads compares the rest)."""
    if piece_format not in PIECE_FORMATS:
        raise ValueError(f"piece format must be one of {PIECE_FORMATS}, got {piece_format!r}")
    if piece_format == "parquet" and settings.return_class_probs:
        raise ValueError("entity class_probs are written to JSONL pieces only (their labels vary from entity to entity)")
    manifest = {
        "format": RUN_FORMAT, "model": model, "input": corpus.identity(), "text_column": corpus.text_column,
        "labels": labels, "relations": relations,
        "settings": {k: v for k, v in settings.to_dict().items() if k not in GROUPING_SETTINGS},
        "entities_key": entities_key, "relations_key": relations_key, "chunk_size": chunk_size,
        "piece_format": piece_format,
    }
    return json.loads(json.dumps(manifest))


def differences(run: dict, now: dict) -> list[str]:
    """What differs between two manifests, one "key: X in the run, Y now" per entry (nested keys
    dotted; `INFORMATIVE` entries, and the model when `now` has none yet, left out)."""

    def flat(value, prefix=""):
        if isinstance(value, dict) and value and (prefix[:-1] not in ("labels", "relations")):
            return {k: v for key, item in value.items() for k, v in flat(item, f"{prefix}{key}.").items()}
        return {prefix[:-1]: value}

    old, new = flat(run), flat(now)
    skip = set(INFORMATIVE) | ({key for key in old if key.startswith("model")} if now.get("model") is None else set())
    return [f"{key}: {old.get(key)!r} in the run, {new.get(key)!r} now"
            for key in sorted(old.keys() | new.keys()) if key not in skip and old.get(key) != new.get(key)]


@functools.cache
def _arrow_types():
    """pyarrow types of gliner's entity and relation lists (`relex_jax.decoding`), explicit so an
    empty list in one piece has the same type as a full one in another."""
    import pyarrow as pa

    span = [("start", pa.int64()), ("end", pa.int64()), ("text", pa.string())]
    entity = pa.struct([*span, ("label", pa.string()), ("score", pa.float64())])
    side = pa.struct([*span, ("type", pa.string()), ("entity_idx", pa.int64())])
    relation = pa.struct([("head", side), ("tail", side), ("relation", pa.string()), ("score", pa.float64())])
    return pa.list_(entity), pa.list_(relation)


def _json_value(value):
    """JSON for the values Parquet or datasets columns hold beyond JSON's own (dates, decimals)."""
    if hasattr(value, "isoformat"):
        return value.isoformat()
    if type(value).__name__ == "Decimal":
        return str(value)
    raise TypeError(f"a {type(value).__name__} value cannot be written as JSON; write Parquet output instead")


def json_line(record: dict) -> str:
    return json.dumps(record, ensure_ascii=False, default=_json_value) + "\n"


def records_table(records: list[dict], schema, entities_key: str, relations_key: str):
    """Output objects -> a pyarrow Table: the input fields (with the input's `schema` where it
    declared one, else inferred) then the two prediction columns with their explicit types."""
    import pyarrow as pa

    entity_type, relation_type = _arrow_types()
    keys = (entities_key, relations_key)
    fields = [{k: v for k, v in r.items() if k not in keys} for r in records]
    table = pa.Table.from_pylist(fields, schema=None if schema is None else schema.remove_metadata())
    table = table.append_column(pa.field(entities_key, entity_type), pa.array([r[entities_key] for r in records],
                                                                            type=entity_type))
    return table.append_column(pa.field(relations_key, relation_type),
                               pa.array([r[relations_key] for r in records], type=relation_type))


class RunDirectory:
    """One run directory (module docstring)."""

    def __init__(self, path):
        self.path = Path(path)

    def manifest(self) -> dict | None:
        file = self.path / MANIFEST
        return json.loads(file.read_text(encoding="utf-8")) if file.is_file() else None

    def end(self) -> dict | None:
        file = self.path / END
        return json.loads(file.read_text(encoding="utf-8")) if file.is_file() else None

    def pieces(self) -> dict[int, Path]:
        """Committed pieces by number."""
        if not self.path.is_dir():
            return {}
        return {int(m[1]): p for p in self.path.iterdir() if (m := PIECE.fullmatch(p.name))}

    def _foreign(self) -> list[str]:
        """Entries that a run does not write."""
        if not self.path.is_dir():
            return []
        ours = {MANIFEST, END}
        return sorted(p.name for p in self.path.iterdir()
                      if p.name not in ours and not PIECE.fullmatch(p.name) and not PARTIAL.fullmatch(p.name))

    def check(self, manifest: dict) -> None:
        """Refuse a directory holding another run (naming the differences) or other files."""
        if self.path.exists() and not self.path.is_dir():
            raise RunError(f"{self.path} exists and is not a directory")
        found = self.manifest()
        if found is None:
            foreign = self._foreign()
            if foreign or self.pieces():
                raise RunError(f"{self.path} holds files but no {MANIFEST} (e.g. {(foreign or ['pieces'])[0]!r}): "
                               "not a relex-jax predict run; name an empty or new directory")
            return
        changed = differences(found, manifest)
        if changed:
            raise RunError(f"{self.path} holds a run with other settings: " + "; ".join(changed)
                           + ". Repeat the run's own settings to resume it, or start afresh with --overwrite "
                           "(or another --output)")

    def start(self, manifest: dict, shard: tuple[int, int] = (0, 1)) -> None:
        """Create or join the run: the manifest is written if absent (one process wins), else
        compared; temporary files this shard left behind (a kill mid-write) are removed."""
        self.check(manifest)
        self.path.mkdir(parents=True, exist_ok=True)
        try:
            write_text_atomically(self.path / MANIFEST, json.dumps(manifest, indent=2, sort_keys=True) + "\n",
                                  durable=True, exclusive=True)
        except FileExistsError:  # another process of this run came first
            self.check(manifest)
        index, count = shard
        for p in self.path.iterdir():
            m = PARTIAL.fullmatch(p.name)
            if m and m[2] is not None and int(m[2]) % count == index:
                p.unlink(missing_ok=True)

    def write_piece(self, k: int, records: list[dict], schema=None) -> Path:
        """Commit piece k (durably; see module docstring)."""
        manifest = self.manifest()
        piece_format = manifest["piece_format"]
        keys = manifest["entities_key"], manifest["relations_key"]

        def write(tmp: Path):
            if piece_format == "parquet":
                import pyarrow.parquet as pq

                pq.write_table(records_table(records, schema, *keys), tmp)
            else:
                with open(tmp, "w", encoding="utf-8") as f:
                    f.writelines(map(json_line, records))

        return write_atomically(self.path / piece_name(k, piece_format), write, durable=True)

    def write_end(self, records: int) -> None:
        """Record the input's length; a different length already recorded means the input changed."""
        chunk = self.manifest()["chunk_size"]
        end = {"records": records, "pieces": math.ceil(records / chunk), "chunk_size": chunk}
        found = self.end()
        if found is None:
            write_text_atomically(self.path / END, json.dumps(end) + "\n", durable=True)
        elif found != end:
            raise RunError(f"{self.path}: {END} records {found}, but the input now ends after {records} records")

    def complete_pieces(self) -> list[tuple[Path, int]]:
        """(path, record count) of every piece in order, after checking that the run is complete."""
        manifest = self.manifest()
        if manifest is None:
            raise RunError(f"{self.path}: no {MANIFEST}; not a relex-jax predict run")
        end, pieces = self.end(), self.pieces()
        if end is None:
            raise RunError(f"{self.path}: the run has not read its input to the end yet ({len(pieces)} pieces "
                           "written); run predict again with the same settings to finish it")
        chunk, total = end["chunk_size"], end["records"]
        missing = [k for k in range(end["pieces"]) if k not in pieces]
        extra = sorted(k for k in pieces if k >= end["pieces"])
        if missing or extra:
            listed = ", ".join(map(str, missing[:10])) + (", ..." if len(missing) > 10 else "")
            raise RunError(f"{self.path}: {len(missing)} of {end['pieces']} pieces missing ({listed})"
                           + (f" and pieces beyond the input's end {extra[:10]}" if extra else "")
                           + "; every process (shard) of the run must finish: run predict again to complete it")
        return [(pieces[k], min(chunk, total - k * chunk)) for k in range(end["pieces"])]


def _piece_records(path: Path) -> Iterator[dict]:
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        for batch in pq.ParquetFile(path).iter_batches():
            yield from batch.to_pylist()
    else:
        with open(path, encoding="utf-8") as lines:
            for line in lines:
                yield json.loads(line)


def _count_checked(path: Path, expected: int, seen: int) -> None:
    if seen != expected:
        raise RunError(f"{path}: {seen} records, expected {expected}; the piece is damaged: delete it and run "
                       "predict again to recompute it")


def read_run(path) -> Iterator[dict]:
    """The output objects of a complete run, in input order (each piece's record count checked)."""
    for piece, expected in RunDirectory(path).complete_pieces():
        seen = 0
        for record in _piece_records(piece):
            seen += 1
            yield record
        _count_checked(piece, expected, seen)


def merge_run(path, out, overwrite: bool = False) -> int:
    """Write a complete run as one file, `out` ending in .jsonl (any run) or .parquet (a run of
    Parquet pieces; their input columns' types are unified across pieces), atomically. Returns
    the record count."""
    run, out = RunDirectory(path), Path(out)
    if out.suffix not in (".jsonl", ".parquet"):
        raise RunError(f"{out}: the merged output is a .jsonl or .parquet file")
    if out.exists() and not overwrite:
        raise RunError(f"{out} exists; pass --overwrite to replace it")
    if not out.parent.is_dir():
        raise RunError(f"{out}: directory {out.parent} does not exist")
    pieces = run.complete_pieces()
    if out.suffix == ".parquet" and run.manifest()["piece_format"] != "parquet":
        raise RunError(f"{run.path} holds JSONL pieces, which merge to .jsonl; for Parquet output run predict "
                       "with --format parquet")
    total = sum(n for _, n in pieces)

    def write_jsonl(tmp: Path):
        with open(tmp, "wb") as sink:
            for piece, expected in pieces:  # one piece (a chunk) in memory at a time
                if piece.suffix == ".jsonl":  # copied as it is: no JSON round trip
                    data = piece.read_bytes()
                else:
                    data = "".join(map(json_line, _piece_records(piece))).encode()
                _count_checked(piece, expected, data.count(b"\n"))
                sink.write(data)

    def write_parquet(tmp: Path):
        import pyarrow as pa
        import pyarrow.parquet as pq

        if not pieces:  # an empty input: the prediction columns only
            keys = run.manifest()["entities_key"], run.manifest()["relations_key"]
            schema = pa.schema(list(zip(keys, _arrow_types())))
        else:
            schema = pq.read_schema(pieces[0][0])
        try:  # one schema at a time: holding every piece's (~7 KB each) would grow with the corpus
            for piece, _ in pieces[1:]:
                schema = pa.unify_schemas([schema, pq.read_schema(piece)], promote_options="permissive")
        except pa.ArrowException as exc:  # e.g. a JSONL input whose field is a number in one piece, text in another
            raise RunError(f"{run.path}: the pieces' columns have types that do not merge ({exc})") from None
        with pq.ParquetWriter(tmp, schema) as writer:
            buffer: list = []
            for piece, expected in pieces:
                table = pq.read_table(piece)
                _count_checked(piece, expected, table.num_rows)
                columns = [table[f.name].cast(f.type) if f.name in table.column_names
                           else pa.nulls(table.num_rows, f.type) for f in schema]
                buffer.append(pa.Table.from_arrays(columns, schema=schema))
                if sum(t.num_rows for t in buffer) >= MERGED_ROW_GROUP:
                    writer.write_table(pa.concat_tables(buffer))
                    buffer = []
            if buffer:
                writer.write_table(pa.concat_tables(buffer))

    write_atomically(out, write_parquet if out.suffix == ".parquet" else write_jsonl, durable=True)
    return total


def predict_corpus(model, corpus: Corpus, run: RunDirectory, labels, relations, settings, *,
                   shard: tuple[int, int] | None = None, progress: bool = True) -> dict[str, Any]:
    """Run `model.inference` over this shard's pieces of `corpus` not yet in `run` (started with
    `RunDirectory.start`), committing each, then record the input's end. `shard` (index, count)
    defaults to `current_shard()`. Returns counts and timing of this call's work."""
    from tqdm import tqdm

    from relex_jax.host import TextError

    index, count = current_shard() if shard is None else shard
    manifest = run.manifest()
    size, keys = manifest["chunk_size"], (manifest["entities_key"], manifest["relations_key"])
    done = run.pieces()

    def todo(k: int) -> bool:
        return k % count == index and k not in done

    summary = {"texts": 0, "entities": 0, "relations": 0, "pieces": 0,
               "pieces_before": sum(1 for k in done if k % count == index)}
    end = run.end()
    if end is not None and not any(todo(k) for k in range(end["pieces"])):
        return {**summary, "seconds": 0.0}
    total = corpus.length
    remaining = None if total is None else sum(min(size, total - k * size) for k in range(math.ceil(total / size))
                                                if todo(k))
    start = time.perf_counter()
    with tqdm(total=remaining, file=sys.stderr, unit="text", mininterval=1, desc="predict",
              disable=not progress) as bar:
        for k, items in corpus.chunks(size, todo):
            try:
                found = model.inference([text for _, text in items], labels, relations,
                                        **dataclasses.asdict(settings))
            except TextError as exc:
                raise CorpusError(f"{corpus.where(k * size + exc.text)}: {exc}") from None
            records = []
            for (record, _), entities, relations_found in zip(items, *found):
                record[keys[0]], record[keys[1]] = entities, relations_found
                records.append(record)
                summary["entities"] += len(entities)
                summary["relations"] += len(relations_found)
            try:
                run.write_piece(k, records, corpus.schema)
            except TypeError as exc:  # a value JSON cannot hold (`_json_value`)
                raise CorpusError(f"{corpus.where(k * size)} (or a record after it in its chunk): {exc}") from None
            summary["texts"] += len(items)
            summary["pieces"] += 1
            bar.update(len(items))
    run.write_end(corpus.length)
    return {**summary, "seconds": time.perf_counter() - start}


def clear_run(path) -> None:
    """Remove a run directory's own files (manifest, end, pieces, temporary files), refusing a
    directory that holds anything else; the directory itself is removed when left empty."""
    run = RunDirectory(path)
    if not run.path.exists():
        return
    if not run.path.is_dir():
        raise RunError(f"{run.path} exists and is not a directory")
    foreign = run._foreign()
    if foreign:
        raise RunError(f"{run.path} holds files a run does not write (e.g. {foreign[0]!r}); not removing it")
    shutil.rmtree(run.path)

