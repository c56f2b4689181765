"""Corpora for `relex-jax predict`: texts read lazily, in chunks of consecutive records.

`open_corpus(spec)` takes
  FILE.txt        one text per line (a blank line is an empty text)
  FILE.jsonl      one JSON object per line with a string field (default "text"); other fields are kept
  FILE.jsonl.gz   the same, gzip-compressed (decompressed as it is read)
  FILE.parquet    a string column (default "text"); read one row group at a time, in batches
  hf:NAME[:SPLIT] a `datasets` dataset (SPLIT defaults to "train"): a directory written by
                  `Dataset.save_to_disk` / `DatasetDict.save_to_disk` is memory-mapped (random
                  access, nothing held in RAM); anything else goes to `datasets.load_dataset(NAME,
                  split=SPLIT, streaming=True)`, which reads hub datasets (network needed) and local
                  data directories as a stream, downloading nothing ahead.

and gives a `Corpus`: `chunks(size, wanted)` yields chunk k (records k*size ... (k+1)*size - 1) for
every k that `wanted(k)` accepts, in input order. Memory holds one chunk (plus, for Parquet, the
row group being read, and for line files nothing more): it does not grow with the corpus. Chunks
not wanted (another host's share, or pieces a resumed run already has) cost as little as the
format allows: lines are counted, not parsed; Parquet row groups holding no wanted record are not
read at all; a saved dataset is indexed directly; only a stream must still be read through.

Each record becomes an output object (the input record's fields, or {"text": line} for .txt)
and its text. A record whose text is missing or not a string, or that already holds one of the
output fields (e.g. gold "entities", which predictions would replace), raises `CorpusError`
naming the source and the record's 1-based line / row / record number; so does an input that
cannot be read (not UTF-8, a broken gzip or Parquet file, an unknown dataset, a missing column).
"""

from __future__ import annotations

import gzip
import hashlib
import itertools
import json
import zlib
from pathlib import Path
from typing import Any, Callable, Iterator

from relex_jax.data.readers import split_hub_spec

CORPUS_FORMATS = (".txt", ".jsonl", ".jsonl.gz", ".parquet")
# An input file's identity (for resuming) hashes its size and this many bytes at each end:
# cheap on any size, and it changes when lines are added, removed or reordered near the ends
# (Parquet keeps its row-group index, which moves with any change, at the end).
FINGERPRINT_BYTES = 1 << 20

Item = tuple[dict, str]  # (output object, text)
# A block of consecutive records: (count, get) where get(i, j) returns the raw records i..j-1 of
# the block, or None for a block no wanted chunk touches (it is then never read).
Block = tuple[int, Callable[[int, int], list] | None]


class CorpusError(ValueError):
    """An input that cannot be read, or a record that cannot be used; the message starts with the
    source and, for a record, its line / row / record number."""


class Corpus:
    """Records of one input, read lazily in chunks (module docstring). `length` is the record
    count once known: from metadata (Parquet, a saved dataset), after `count()` (line files) or
    after a complete pass of `chunks` (streams). `schema` is the pyarrow schema of the output
    objects' input fields where the input declares one (Parquet output keeps those types)."""

    unit = "record"
    schema = None

    def __init__(self, source: str, text_column: str, output_keys: tuple[str, ...]):
        self.source, self.text_column, self.output_keys = source, text_column, tuple(output_keys)
        self.length: int | None = None

    def identity(self) -> dict[str, Any]:
        """What a resumed run must find unchanged ("source", the name as given, is informative only)."""
        raise NotImplementedError

    def count(self) -> int | None:
        """The number of records, where the format tells it without reading the data twice."""
        return self.length

    def where(self, index: int) -> str:
        """Record `index` (0-based) as a message names it: "SOURCE, line 12"."""
        return f"{self.source}, {self.unit} {index + 1}"

    def _blocks(self, size: int, needed: Callable[[int, int], bool]) -> Iterator[Block]:
        """Consecutive blocks of records; `needed(lo, hi)` says whether records lo..hi-1 are wanted."""
        raise NotImplementedError

    def _item(self, index: int, record) -> Item:
        """One raw record (here a dict of fields) -> (output object, text), checked."""
        text = record.get(self.text_column)
        if not isinstance(text, str):
            what = "missing or null" if text is None else f"a {type(text).__name__}"
            raise CorpusError(f"{self.where(index)}: the text field {self.text_column!r} is {what}, not a string")
        self._check_fields(index, record)
        return record, text

    def _check_fields(self, index: int, record: dict) -> None:
        taken = [key for key in self.output_keys if key in record]
        if taken:
            raise CorpusError(
                f"{self.where(index)}: the record already has a field {taken[0]!r}, which predictions would "
                "replace; name other output fields with --entities-key / --relations-key"
            )

    def chunks(self, size: int, wanted: Callable[[int], bool] = lambda k: True) -> Iterator[tuple[int, list[Item]]]:
        """(k, [(output object, text), ...]) for every chunk k that `wanted(k)`, in order; sets
        `length` when the input ends."""
        if size < 1:
            raise ValueError(f"chunk size must be positive, got {size}")

        def needed(lo: int, hi: int) -> bool:
            return any(wanted(k) for k in range(lo // size, (hi - 1) // size + 1))

        start, items, pending = 0, [], None  # `pending`: the wanted chunk being assembled
        for count, get in self._blocks(size, needed):
            position, end = start, start + count
            while position < end:
                k = position // size
                stop = min((k + 1) * size, end)
                if wanted(k):
                    raw = get(position - start, stop - start)
                    items.extend(self._item(position + i, record) for i, record in enumerate(raw))
                    pending = k
                    if stop == (k + 1) * size:
                        yield k, items
                        items, pending = [], None
                position = stop
            start = end
        self.length = start
        if pending is not None:
            yield pending, items


def _file_fingerprint(path: Path, kind: str, source: str) -> dict[str, Any]:
    size = path.stat().st_size
    digest = hashlib.sha256(str(size).encode())
    with open(path, "rb") as f:
        digest.update(f.read(FINGERPRINT_BYTES))
        if size > FINGERPRINT_BYTES:
            f.seek(max(FINGERPRINT_BYTES, size - FINGERPRINT_BYTES))
            digest.update(f.read())
    return {"format": kind, "bytes": size, "sha256_ends": digest.hexdigest(), "source": source}


class LineCorpus(Corpus):
    """.txt, .jsonl and .jsonl.gz: one record per line, in the file's order (universal newlines,
    a leading byte-order mark dropped, as `open(..., encoding="utf-8-sig")` reads them)."""

    unit = "line"

    def __init__(self, path: Path, kind: str, source: str, text_column: str, output_keys: tuple[str, ...]):
        super().__init__(source, text_column, output_keys)
        self.path, self.kind = path, kind

    def identity(self) -> dict[str, Any]:
        return _file_fingerprint(self.path, self.kind, self.source)

    def _lines(self) -> Iterator[str]:
        opener = gzip.open if self.kind == ".jsonl.gz" else open
        try:
            with opener(self.path, "rt", encoding="utf-8-sig") as lines:
                for line in lines:
                    yield line.rstrip("\r\n")
        except (OSError, EOFError, UnicodeDecodeError, zlib.error) as exc:
            what = "gzip-compressed UTF-8 text" if self.kind == ".jsonl.gz" else "UTF-8 text"
            raise CorpusError(f"{self.source}: cannot be read as {what} ({exc})") from None

    def count(self) -> int:
        """Count the lines, and check every .jsonl record: a bad line fails now, not hours into a
        run (a pass over a local file costs a small fraction of inference on it)."""
        count = 0
        for line in self._lines():
            if self.kind != ".txt":
                self._item(count, line)
            count += 1
        self.length = count
        return count

    def _blocks(self, size, needed):
        lines, start = self._lines(), 0
        while True:
            if needed(start, start + size):
                raw = list(itertools.islice(lines, size))
                count, get = len(raw), (lambda i, j, raw=raw: raw[i:j])
            else:
                count, get = sum(1 for _ in itertools.islice(lines, size)), None
            if not count:
                return
            yield count, get
            start += count

    def _item(self, index, raw):
        if self.kind == ".txt":
            return {"text": raw}, raw
        try:
            record = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise CorpusError(f"{self.where(index)}: invalid JSON ({exc})") from None
        if not isinstance(record, dict) or not isinstance(record.get(self.text_column), str):
            raise CorpusError(f"{self.where(index)}: expected a JSON object with a string field \"{self.text_column}\"")
        self._check_fields(index, record)
        return record, record[self.text_column]


def _check_schema(source: str, names: list[str], text_type, text_column: str, output_keys) -> None:
    """A declared schema must hold the text column as strings and none of the output fields."""
    if text_column not in names:
        raise CorpusError(f"{source}: no column {text_column!r} (columns: {', '.join(names)}); name the text "
                          "column with --text-column")
    if text_type not in ("string", "large_string"):
        raise CorpusError(f"{source}: column {text_column!r} holds {text_type}, not strings")
    taken = [key for key in output_keys if key in names]
    if taken:
        raise CorpusError(f"{source}: there is already a column {taken[0]!r}, which predictions would replace; "
                          "name other output fields with --entities-key / --relations-key")


class ParquetCorpus(Corpus):
    """A Parquet file, read one row group at a time in batches of at most a chunk."""

    unit = "row"

    def __init__(self, path: Path, source: str, text_column: str, output_keys: tuple[str, ...]):
        import pyarrow as pa
        import pyarrow.parquet as pq

        super().__init__(source, text_column, output_keys)
        self.path = path
        try:
            self._file = pq.ParquetFile(path)
        except (pa.ArrowException, OSError) as exc:
            raise CorpusError(f"{source}: not a readable Parquet file ({exc})") from None
        self.schema = self._file.schema_arrow
        text_type = self.schema.field(text_column).type if text_column in self.schema.names else None
        _check_schema(source, self.schema.names, str(text_type), text_column, output_keys)
        self.length = self._file.metadata.num_rows

    def identity(self):
        return _file_fingerprint(self.path, ".parquet", self.source)

    def _blocks(self, size, needed):
        import pyarrow as pa

        start = 0
        for group in range(self._file.num_row_groups):
            rows = self._file.metadata.row_group(group).num_rows
            if rows and not needed(start, start + rows):
                yield rows, None
            elif rows:
                try:
                    for batch in self._file.iter_batches(batch_size=size, row_groups=[group]):
                        yield batch.num_rows, (lambda i, j, batch=batch: batch.slice(i, j - i).to_pylist())
                except (pa.ArrowException, OSError) as exc:
                    raise CorpusError(f"{self.source}: row group {group} cannot be read ({exc})") from None
            start += rows


def _rows(columns: dict[str, list]) -> list[dict]:
    """A batch of columns {name: values} -> one dict per row."""
    return [dict(zip(columns, values)) for values in zip(*columns.values())]


class DatasetCorpus(Corpus):
    """A `datasets` dataset: saved to disk (memory-mapped, random access) or streamed."""

    def __init__(self, spec: str, text_column: str, output_keys: tuple[str, ...]):
        import datasets

        super().__init__(spec, text_column, output_keys)
        self.name, self.split = split_hub_spec(spec)
        local = Path(self.name).expanduser()
        self.streamed = not ((local / "state.json").is_file() or (local / "dataset_dict.json").is_file())
        try:
            if self.streamed:
                data = datasets.load_dataset(self.name, split=self.split, streaming=True)
            else:
                data = datasets.load_from_disk(str(local))
        except Exception as exc:  # noqa: BLE001 (the hub and the builders raise many kinds)
            raise CorpusError(f"{spec}: cannot open the dataset ({type(exc).__name__}: {exc}); a hub name needs "
                              "the network, a local one is a directory saved with save_to_disk or holding data "
                              "files") from None
        if isinstance(data, datasets.DatasetDict):
            if self.split not in data:
                raise CorpusError(f"{spec}: no split {self.split!r} (splits: {', '.join(data)})")
            data = data[self.split]
        self.data = data
        if data.features is not None:
            names = list(data.features)
            text = data.features.get(text_column)
            _check_schema(spec, names, getattr(text, "dtype", type(text).__name__), text_column, output_keys)
            self.schema = data.features.arrow_schema
        if not self.streamed:
            self.length = len(data)

    def identity(self):
        if self.streamed:
            return {"format": "datasets-stream", "name": self.name, "split": self.split, "source": self.source}
        return {"format": "datasets", "fingerprint": self.data._fingerprint, "records": len(self.data),
                "source": self.source}

    def _blocks(self, size, needed):
        if self.streamed:
            for batch in self.data.iter(batch_size=size):
                rows = _rows(batch)
                yield len(rows), (lambda i, j, rows=rows: rows[i:j])
            return
        for lo in range(0, len(self.data), size):
            hi = min(lo + size, len(self.data))
            yield hi - lo, (lambda i, j, lo=lo: _rows(self.data[lo + i: lo + j]))


def open_corpus(spec, text_column: str = "text", output_keys: tuple[str, ...] = ()) -> Corpus:
    """The `Corpus` of a file name or `hf:NAME[:SPLIT]` (module docstring); `output_keys` are
    fields a record must not hold already. Raises `CorpusError` for an input it cannot open."""
    spec = str(spec)
    if spec.startswith("hf:"):
        return DatasetCorpus(spec, text_column, output_keys)
    path = Path(spec).expanduser()
    kind = next((kind for kind in CORPUS_FORMATS if path.name.lower().endswith(kind)), None)
    if kind is None:
        raise CorpusError(f"{spec}: unsupported extension {path.suffix!r}; use .txt (one text per line), .jsonl or "
                          f".jsonl.gz (one object with a string \"{text_column}\" per line), .parquet (a string "
                          f"column \"{text_column}\") or hf:NAME[:SPLIT] (a datasets dataset)")
    if not path.is_file():
        raise CorpusError(f"{spec}: no such file")
    if kind == ".parquet":
        return ParquetCorpus(path, spec, text_column, output_keys)
    return LineCorpus(path, kind, spec, text_column, output_keys)
