"""Corpus inference without a model: every input format through `relex-jax predict` into JSONL
and Parquet, refused resumes, shards and their merge, and clear errors. A deterministic stand-in
for `RelexModel` (`FakeModel`) keeps these fast; tests/test_cli.py runs the real model (a
SIGKILLed process resumed, two processes under jax.distributed)."""

from __future__ import annotations

import gzip
import json
import re

import pytest

from relex_jax import cli
from relex_jax.corpus_inference import RunDirectory, RunError, merge_run, read_run

TEXTS = [
    "Alice Smith works at Google in Paris.",
    "",
    "Bob met Ana in Lisbon\u2028and Oslo.",  # a line separator inside a text is not a line break of the file
    "Zoë moved from Zürich to Köln.",
    "no capitals here",
    "Tokyo.",
    "Wei Chen joined Apple.",
]
RECORDS = [{"id": i, "text": t} for i, t in enumerate(TEXTS)]


class FakeModel:
    """Stands in for `RelexModel`: entities are a text's capitalised words, a relation joins the
    first two; scores depend on the threshold. Records its calls; `fail_on_call` n raises there."""

    compiled_shapes = frozenset()

    def __init__(self, model_dir):
        self.model_dir, self.calls, self.fail_on_call = model_dir, [], None

    def check_settings(self, settings):
        pass

    def inference(self, texts, labels, relations=None, threshold=0.5, **settings):
        self.calls.append(list(texts))
        if len(self.calls) == self.fail_on_call:
            raise RuntimeError("device lost")
        found = [self.predict(text, labels, relations, threshold) for text in texts]
        return [e for e, _ in found], [r for _, r in found]

    @staticmethod
    def predict(text, labels, relations=None, threshold=0.5):
        label = list(labels)[0]
        entities = [{"start": m.start(), "end": m.end(), "text": m[0], "label": label, "score": threshold + m.start() / 1024}
                    for m in re.finditer(r"[A-ZÀ-Þ]\w*", text)]
        found = []
        if relations and len(entities) > 1:
            sides = [{"start": e["start"], "end": e["end"], "text": e["text"], "type": e["label"], "entity_idx": i}
                     for i, e in enumerate(entities[:2])]
            found.append({"head": sides[0], "tail": sides[1], "relation": list(relations)[0], "score": 0.75})
        return entities, found


@pytest.fixture
def fake(tmp_path, monkeypatch):
    from relex_jax import inference

    model_dir = tmp_path / "model"
    model_dir.mkdir()
    (model_dir / "weights.bin").write_bytes(b"\x00" * 64)
    model = FakeModel(model_dir)
    monkeypatch.setattr(inference.RelexModel, "from_pretrained", classmethod(lambda cls, path: model))
    return model


def predict(*extra, source, output, labels="person", relations="works at"):
    argv = ["predict", "--model", "m", "--labels", labels, "--input", str(source), "--output", str(output)]
    return cli.main(argv + (["--relations", relations] if relations else []) + list(extra))


def expected(objects, threshold=0.5):
    out = []
    for obj in objects:
        entities, relations = FakeModel.predict(obj["text"], ["person"], ["works at"], threshold)
        out.append({**obj, "entities": entities, "relations": relations})
    return out


def write_input(kind: str, directory):
    """The corpus in one format: (input spec, the output objects it gives before predictions)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    lines = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in RECORDS)
    if kind == "txt":
        path = directory / "corpus.txt"
        path.write_text("\n".join(TEXTS) + "\n", encoding="utf-8")
        return path, [{"text": t} for t in TEXTS]
    if kind == "jsonl":
        path = directory / "corpus.jsonl"
        path.write_text(lines, encoding="utf-8")
    elif kind == "jsonl.gz":
        path = directory / "corpus.jsonl.gz"
        path.write_bytes(gzip.compress(lines.encode()))
    elif kind == "parquet":
        path = directory / "corpus.parquet"
        pq.write_table(pa.Table.from_pylist(RECORDS), path, row_group_size=2)  # chunks straddle row groups
    elif kind == "datasets":  # saved with save_to_disk: memory-mapped, random access
        import datasets

        path = f"hf:{directory / 'saved'}"
        datasets.Dataset.from_list(RECORDS).save_to_disk(str(directory / "saved"))
    else:  # "datasets stream": a local data directory, streamed as a hub dataset would be
        (directory / "hub").mkdir()
        (directory / "hub" / "train.jsonl").write_text(lines, encoding="utf-8")
        path = f"hf:{directory / 'hub'}:train"
    return path, RECORDS


def read_output(path):
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        return pq.read_table(path).to_pylist()
    with path.open(encoding="utf-8") as lines:
        return [json.loads(line) for line in lines]


@pytest.mark.parametrize("output", ["jsonl", "parquet"])
@pytest.mark.parametrize("kind", ["txt", "jsonl", "jsonl.gz", "parquet", "datasets", "datasets stream"])
def test_every_input_format_round_trips(fake, tmp_path, kind, output):
    """Each input format, read in chunks of 3 records, gives one output record per input record,
    in order, with its fields (and, in Parquet, their types) kept."""
    source, objects = write_input(kind, tmp_path)
    out = tmp_path / f"out.{output}"
    assert predict("--chunk-size", "3", source=source, output=out) == 0
    assert read_output(out) == expected(objects)
    assert [len(call) for call in fake.calls] == [3, 3, 1]
    assert not (tmp_path / f"out.{output}.pieces").exists()


def test_resume_refuses_other_settings_input_or_model(fake, tmp_path, capsys):
    """An unfinished run resumes only with the same model, input and settings; a difference is
    refused before any text is read, naming it; --batch-size may change; --overwrite starts afresh."""
    source, objects = write_input("jsonl", tmp_path)
    out = tmp_path / "out.jsonl"
    fake.fail_on_call = 3
    with pytest.raises(RuntimeError, match="device lost"):
        predict("--chunk-size", "2", source=source, output=out)
    pieces = tmp_path / "out.jsonl.pieces"
    assert sorted(p.name for p in pieces.iterdir()) == ["manifest.json", "piece-00000000.jsonl", "piece-00000001.jsonl"]
    capsys.readouterr()

    def refused(*extra, labels="person", model_changed=False):
        fake.calls.clear()
        assert predict("--chunk-size", "2", *extra, source=source, output=out, labels=labels) == 2
        assert not fake.calls
        return capsys.readouterr().err

    assert "settings.threshold: 0.5 in the run, 0.7 now" in refused("--threshold", "0.7")
    assert "labels: ['person'] in the run, ['person', 'place'] now" in refused(labels="person,place")
    assert "chunk_size: 2 in the run, 3 now" in refused("--chunk-size", "3")
    assert "entities_key" in refused("--entities-key", "ents")
    (fake.model_dir / "weights.bin").write_bytes(b"\x01" * 64)  # same size, other weights
    assert "model.sha256" in refused()
    (fake.model_dir / "weights.bin").write_bytes(b"\x00" * 64)
    source.write_text(source.read_text() + json.dumps({"id": 7, "text": "Late Addition"}) + "\n")
    err = refused()
    assert "input.bytes" in err and "--overwrite" in err
    source.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in RECORDS))

    fake.calls.clear()
    fake.fail_on_call = None
    assert predict("--chunk-size", "2", "--batch-size", "2", source=source, output=out) == 0
    assert fake.calls == [TEXTS[4:6], TEXTS[6:]]  # the committed pieces were not computed again
    assert "2 pieces were already done" in capsys.readouterr().err
    assert read_output(out) == expected(objects)

    fake.calls.clear()
    assert predict("--chunk-size", "2", "--threshold", "0.7", "--overwrite", source=source, output=out) == 0
    assert len(fake.calls) == 4 and read_output(out) == expected(objects, threshold=0.7)


def test_shards_write_one_run_whose_merge_equals_a_single_run(fake, tmp_path, capsys, monkeypatch):
    """Three `--shard I/3` processes share a run directory of Parquet pieces: each computes only
    pieces k with k % 3 == I, reading only the Parquet row groups that hold them; until all
    finish, merging names the missing pieces; then the merge (JSONL or Parquet) equals a
    single-process run. A temporary file left by a killed writer is removed by its shard's next
    start and never read."""
    import pyarrow.parquet as pq

    source, objects = write_input("parquet", tmp_path)  # row groups of 2 records: group g holds piece g
    single = tmp_path / "single.parquet"
    assert predict("--chunk-size", "2", source=source, output=single) == 0

    read = []
    real_iter_batches = pq.ParquetFile.iter_batches
    monkeypatch.setattr(pq.ParquetFile, "iter_batches",
                        lambda self, *a, row_groups=None, **kw: read.extend(row_groups or ()) or real_iter_batches(
                            self, *a, row_groups=row_groups, **kw))
    run = tmp_path / "run"
    for index in (2, 0):
        fake.calls.clear()
        read.clear()
        assert predict("--chunk-size", "2", "--format", "parquet", "--shard", f"{index}/3", source=source,
                       output=run) == 0
        assert fake.calls == [TEXTS[2 * k: 2 * k + 2] for k in range(4) if k % 3 == index]
        assert read == [k for k in range(4) if k % 3 == index]
    with pytest.raises(RunError, match=r"1 of 4 pieces missing \(1\)"):
        merge_run(run, tmp_path / "early.jsonl")
    stale = run / ".piece-00000001.parquet.partial-otherhost-123"
    stale.write_bytes(b"torn")
    assert predict("--chunk-size", "2", "--format", "parquet", "--shard", "1/3", source=source, output=run) == 0
    assert not stale.exists()
    assert list(read_run(run)) == expected(objects)
    assert cli.main(["merge", str(run), str(tmp_path / "merged.parquet")]) == 0
    assert cli.main(["merge", str(run), str(tmp_path / "merged.jsonl")]) == 0
    assert read_output(tmp_path / "merged.parquet") == read_output(single) == read_output(tmp_path / "merged.jsonl")
    capsys.readouterr()
    assert cli.main(["merge", str(run), str(tmp_path / "merged.jsonl")]) == 2
    assert "exists; pass --overwrite" in capsys.readouterr().err


@pytest.mark.parametrize("output", ["jsonl", "parquet"])
def test_an_empty_input_gives_an_empty_output(fake, tmp_path, output):
    source = tmp_path / "empty.jsonl"
    source.write_text("")
    assert predict(source=source, output=tmp_path / f"out.{output}") == 0
    assert read_output(tmp_path / f"out.{output}") == [] and not fake.calls


def test_merge_checks_every_piece(tmp_path, fake):
    """A damaged piece (a record lost) is named rather than merged."""
    source, _ = write_input("txt", tmp_path)
    run = tmp_path / "run"
    assert predict("--chunk-size", "3", source=source, output=run) == 0
    piece = run / "piece-00000001.jsonl"
    piece.write_text("".join(piece.read_text().splitlines(keepends=True)[:2]))
    with pytest.raises(RunError, match="piece-00000001.jsonl: 2 records, expected 3"):
        merge_run(run, tmp_path / "out.jsonl")
    assert not (tmp_path / "out.jsonl").exists()
    assert RunDirectory(run).end() == {"records": 7, "pieces": 3, "chunk_size": 3}


def _parquet(path, **columns):
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table(columns), path)
    return path


@pytest.mark.parametrize("case", [
    "no column", "not strings", "null text", "taken column", "not parquet", "broken gzip", "not utf-8",
    "bad shard", "shard and distributed", "shard into a file", "overwrite with shards", "foreign directory",
    "format mismatch", "missing dataset",
])
def test_clear_errors(fake, tmp_path, capsys, case):
    """Every bad input, option or output is one line naming the problem, with exit status 2."""
    good = tmp_path / "in.txt"
    good.write_text("Alice.\n")
    source, output, extra, why = good, tmp_path / "out.jsonl", [], None
    if case == "no column":
        source, why = _parquet(tmp_path / "in.parquet", body=["x"]), "no column 'text' (columns: body)"
    elif case == "not strings":
        source, why = _parquet(tmp_path / "in.parquet", text=[1, 2]), "column 'text' holds int64, not strings"
    elif case == "null text":
        source, why = _parquet(tmp_path / "in.parquet", text=["a", None]), "in.parquet, row 2: the text field 'text' is missing or null"
    elif case == "taken column":
        source = _parquet(tmp_path / "in.parquet", text=["a"], entities=["gold"])
        why = "already a column 'entities'"
    elif case == "not parquet":
        source = tmp_path / "in.parquet"
        source.write_text("text\nAlice\n")
        why = "not a readable Parquet file"
    elif case == "broken gzip":
        source = tmp_path / "in.jsonl.gz"
        source.write_bytes(gzip.compress(b'{"text": "a"}\n' * 100)[:40])
        why = "cannot be read as gzip-compressed UTF-8 text"
    elif case == "not utf-8":
        good.write_bytes(b"Alice\n\xff\xfe\n")
        why = "cannot be read as UTF-8 text"
    elif case == "bad shard":
        output, extra, why = tmp_path / "run", ["--shard", "2/2"], "a shard is I/N with 0 <= I < N"
    elif case == "shard and distributed":
        output, extra, why = tmp_path / "run", ["--shard", "0/2", "--distributed"], "exclude each other"
    elif case == "shard into a file":
        extra, why = ["--shard", "0/2"], "give --output DIR"
    elif case == "overwrite with shards":
        output, extra, why = tmp_path / "run", ["--shard", "0/2", "--overwrite"], "remove the run directory"
    elif case == "foreign directory":
        output = tmp_path / "notes"
        output.mkdir()
        (output / "todo.txt").write_text("mine\n")
        why = "holds files but no manifest.json (e.g. 'todo.txt')"
    elif case == "format mismatch":
        extra, why = ["--format", "parquet"], "--format parquet does not match --output"
    elif case == "missing dataset":
        source, why = f"hf:{tmp_path / 'absent'}", "cannot open the dataset"
    assert predict(*extra, source=source, output=output) == 2
    last = capsys.readouterr().err.splitlines()[-1]  # (after a progress bar, for an error met while reading)
    assert last.startswith("relex-jax predict: error: ") and why in last, last
    assert not (tmp_path / "out.jsonl").exists()
    if case == "foreign directory":
        assert sorted(p.name for p in output.iterdir()) == ["todo.txt"]
