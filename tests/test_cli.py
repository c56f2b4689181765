"""The `relex-jax` command line."""

import json
from pathlib import Path

import pytest

from relex_jax import cli

ROOT = Path(__file__).resolve().parent.parent


def test_selfcheck_passes_and_reports(capsys):
    assert cli.main(["selfcheck", "--batch", "3", "--seq-len", "24"]) == 0
    out = capsys.readouterr().out
    assert "scan vs plain" in out and "remat vs plain" in out
    assert out.strip().endswith("selfcheck: OK")


def test_selfcheck_rejects_empty_batch():
    with pytest.raises(SystemExit) as exc:
        cli.main(["selfcheck", "--batch", "0"])
    assert exc.value.code == 2


# --------------------------------------------------------------------------------------------------
# predict
# --------------------------------------------------------------------------------------------------


def read_jsonl(path):
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def approx_scores(rows):
    """Prediction lists with float32-rounding tolerance on scores: chunks batch texts differently,
    so the padded shapes, and with them the last bits of a score, may differ from one call."""

    def fix(item):
        if isinstance(item, dict):
            return {k: pytest.approx(v, rel=1e-5, abs=1e-6) if k == "score" else fix(v) for k, v in item.items()}
        return [fix(x) for x in item] if isinstance(item, list) else item

    return fix(rows)


@pytest.fixture(scope="module")
def relex_dir(tmp_path_factory):
    """One tiny gliner relex checkpoint and an entity threshold at which about a quarter of the
    spans pass (so entities, and with them relations, are found)."""
    pytest.importorskip("torch")
    from gliner_fixtures import build_relex_model, reference_forward
    from test_relex_parity import LABELS, RELATIONS, TEXTS, moderate_threshold

    model, path = build_relex_model(tmp_path_factory.mktemp("predict") / "model", seed=0)
    return path, moderate_threshold(reference_forward(model, TEXTS, LABELS, RELATIONS))


def test_predict_txt_and_jsonl_match_inference(relex_dir, tmp_path, capsys):
    from test_relex_parity import LABELS, RELATIONS, TEXTS

    from relex_jax import RelexModel

    path, threshold = relex_dir
    texts = TEXTS[:2] + [""] + TEXTS[2:]  # a blank line still gets its (empty) output object
    source = tmp_path / "corpus.txt"
    source.write_bytes(("\n".join(texts[:3]) + "\r\n" + "\n".join(texts[3:]) + "\n").encode())
    out = tmp_path / "out.jsonl"
    common = ["--model", str(path), "--threshold", str(threshold)]
    assert cli.main(["predict", *common, "--labels", " , ".join(LABELS), "--relations", ",".join(RELATIONS),
                     "--input", str(source), "--output", str(out)]) == 0
    err = capsys.readouterr().err
    assert f"{len(texts)} texts" in err and "compiled shapes" in err and "texts/s" in err

    model = RelexModel.from_pretrained(path)
    entities, relations = model.inference(texts, LABELS, RELATIONS, threshold=threshold)
    assert sum(map(len, entities)) > 0 and sum(map(len, relations)) > 0  # not vacuous
    rows = read_jsonl(out)
    assert rows == [{"text": t, "entities": e, "relations": r} for t, e, r in zip(texts, entities, relations)]
    assert rows[2] == {"text": "", "entities": [], "relations": []}

    # .jsonl in chunks of 3 lines (the last one partial), labels as a {name: description} mapping, extra fields kept;
    # an existing output is replaced with --overwrite; packed rows give the unpacked results.
    mapping = {"PER": "person", "ORG": "organization", "LOC": "location"}
    jsonl = tmp_path / "corpus.jsonl"
    jsonl.write_text("".join(json.dumps({"id": i, "text": t, "meta": {"n": i}}) + "\n" for i, t in enumerate(TEXTS)))
    out.write_text("stale\n")
    assert cli.main(["predict", *common, "--labels", json.dumps(mapping), "--relations", ",".join(RELATIONS),
                     "--input", str(jsonl), "--output", str(out), "--chunk-size", "3", "--overwrite",
                     "--packing"]) == 0
    entities, relations = model.inference(TEXTS, mapping, RELATIONS, threshold=threshold)
    assert {e["label"] for row in entities for e in row} <= set(mapping) and sum(map(len, entities)) > 0
    rows = read_jsonl(out)
    assert len(rows) == len(TEXTS)
    for i, (row, ents, rels) in enumerate(zip(rows, entities, relations)):
        assert row["id"] == i and row["meta"] == {"n": i} and row["text"] == TEXTS[i]
        assert row["entities"] == approx_scores(ents) and row["relations"] == approx_scores(rels)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["corpus.jsonl", "corpus.txt", "out.jsonl"]


def predict_error(tmp_path, capsys, *extra, labels="person,location", source=None):
    """Run predict expecting a usage error (before any model is loaded); return its message."""
    if source is None:
        source = tmp_path / "in.txt"
        source.write_text("Alice works in Paris.\n")
    argv = ["predict", "--model", str(tmp_path / "no-model"), "--labels", labels, "--input", str(source),
            "--output", str(tmp_path / "out.jsonl"), *extra]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("relex-jax predict: error: ")
    return err


def test_predict_rejects_bad_extension(tmp_path, capsys):
    source = tmp_path / "in.csv"
    source.write_text("text\n")
    assert "unsupported extension '.csv'" in predict_error(tmp_path, capsys, source=source)


def test_predict_rejects_missing_input(tmp_path, capsys):
    assert "no such file" in predict_error(tmp_path, capsys, source=tmp_path / "missing.txt")


@pytest.mark.parametrize("line, why", [
    ('{"text": "Bob is here."', "invalid JSON"),
    ('{"body": "Bob is here."}', 'string field "text"'),
    ('{"text": 3}', 'string field "text"'),
    ('["Bob is here."]', 'string field "text"'),
])
def test_predict_rejects_malformed_jsonl_line(tmp_path, capsys, line, why):
    source = tmp_path / "in.jsonl"
    source.write_text('{"text": "Alice works in Paris."}\n' + line + "\n")
    err = predict_error(tmp_path, capsys, source=source)
    assert f"{source}, line 2: " in err and why in err
    assert not (tmp_path / "out.jsonl").exists()


@pytest.mark.parametrize("labels, why", [
    ("person,,location", "item 2 of 'person,,location' is empty"),
    ("person,", "item 2 of 'person,' is empty"),
    (" ", "item 1"),
    ("person, person", "'person' is listed twice"),
    ('{"PER": ', "not a valid JSON object"),
    ('{"PER": 3}', "labels must be strings"),
])
def test_predict_rejects_bad_labels(tmp_path, capsys, labels, why):
    assert why in predict_error(tmp_path, capsys, labels=labels)


def test_predict_rejects_empty_relation_item(tmp_path, capsys):
    assert "--relations: item 2" in predict_error(tmp_path, capsys, "--relations", "works at,")


def test_predict_refuses_to_overwrite(tmp_path, capsys):
    out = tmp_path / "out.jsonl"
    out.write_text("keep me\n")
    assert "pass --overwrite" in predict_error(tmp_path, capsys)
    assert out.read_text() == "keep me\n"


@pytest.mark.parametrize("extra", [["--chunk-size", "0"], ["--batch-size", "-1"], ["--threshold", "1.5"],
                                   ["--packing", "0"]])
def test_predict_rejects_bad_numbers(tmp_path, capsys, extra):
    assert "must be" in predict_error(tmp_path, capsys, *extra)


def test_predict_crash_leaves_no_output_file_only_committed_pieces(tmp_path, monkeypatch):
    """A failure in the middle of a corpus leaves no output file, only the pieces committed before
    it (whole, no partial file) for a rerun to resume from (tests/test_corpus.py resumes them)."""
    from relex_jax import inference

    class Failing:
        compiled_shapes: set = set()
        model_dir = tmp_path / "m"
        calls = 0

        def check_settings(self, settings):
            pass

        def inference(self, texts, labels, relations=None, **settings):
            Failing.calls += 1
            if Failing.calls == 2:
                raise RuntimeError("device lost")
            return [[] for _ in texts], [[] for _ in texts]

    Failing.model_dir.mkdir()
    monkeypatch.setattr(inference.RelexModel, "from_pretrained", classmethod(lambda cls, path: Failing()))
    source = tmp_path / "in.txt"
    source.write_text("one\ntwo\nthree\n")
    with pytest.raises(RuntimeError, match="device lost"):
        cli.main(["predict", "--model", "m", "--labels", "person", "--input", str(source),
                  "--output", str(tmp_path / "out.jsonl"), "--chunk-size", "2"])
    assert Failing.calls == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.txt", "m", "out.jsonl.pieces"]
    pieces = tmp_path / "out.jsonl.pieces"
    assert sorted(p.name for p in pieces.iterdir()) == ["manifest.json", "piece-00000000.jsonl"]
    assert read_jsonl(pieces / "piece-00000000.jsonl") == [{"text": t, "entities": [], "relations": []}
                                                           for t in ("one", "two")]


def test_predict_refuses_to_replace_fields_of_the_input(tmp_path, capsys):
    """Gold "entities" in an input record are not overwritten silently: refused before any model
    loads, with the option that names other output fields."""
    source = tmp_path / "in.jsonl"
    source.write_text('{"text": "Alice works in Paris."}\n{"text": "Bob.", "entities": []}\n')
    err = predict_error(tmp_path, capsys, source=source)
    assert f"{source}, line 2: the record already has a field 'entities'" in err and "--entities-key" in err
    err = predict_error(tmp_path, capsys, "--entities-key", "text", source=source)
    assert "other than 'text'" in err


def test_predict_writes_under_other_keys_and_names_the_line_of_a_text_it_cannot_take(relex_dir, tmp_path, capsys):
    from test_relex_parity import LABELS

    path, threshold = relex_dir
    source = tmp_path / "in.jsonl"
    source.write_text('{"text": "Alice works in Paris.", "entities": ["gold"]}\n')
    out = tmp_path / "out.jsonl"
    assert cli.main(["predict", "--model", str(path), "--labels", ",".join(LABELS), "--input", str(source),
                     "--output", str(out), "--threshold", str(threshold), "--entities-key", "predicted",
                     "--relations-key", "predicted_relations"]) == 0
    [row] = read_jsonl(out)
    assert row["entities"] == ["gold"] and isinstance(row["predicted"], list) and row["predicted_relations"] == []
    # Windows that overlap too little for the model's widest span: refused before the first batch.
    assert cli.main(["predict", "--model", str(path), "--labels", ",".join(LABELS), "--input", str(source),
                     "--output", str(tmp_path / "w.jsonl"), "--entities-key", "p", "--relations-key", "r",
                     "--window-size", "8", "--window-stride", "8"]) == 2
    assert "overlap by 0 words" in capsys.readouterr().err and not (tmp_path / "w.jsonl").exists()


# --------------------------------------------------------------------------------------------------
# predict at corpus scale with the real model: a SIGKILLed process resumed, two jax.distributed processes
# (formats, shards, merging and refusals without a model: tests/test_corpus.py)
# --------------------------------------------------------------------------------------------------


def subprocess_env():
    """The in-process runs' device count (8, tests/conftest.py) and matmul precision, so that a
    subprocess compiles the same programs (loaded from the run's compilation cache) and computes
    the same bits; gloo-capable CPU backend for jax.distributed."""
    import os

    return {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=8", "JAX_PLATFORMS": "cpu",
            "JAX_DEFAULT_MATMUL_PRECISION": "highest"}


@pytest.fixture(scope="module")
def corpus_run(relex_dir, tmp_path_factory):
    """40 records (the parity texts, cycled) and the output of one uninterrupted in-process run
    over them, one record per piece; returns (directory, predict arguments but --output, output)."""
    from test_relex_parity import LABELS, RELATIONS, TEXTS

    path, threshold = relex_dir
    directory = tmp_path_factory.mktemp("corpus")
    source = directory / "in.jsonl"
    source.write_text("".join(json.dumps({"id": i, "text": TEXTS[i % len(TEXTS)]}) + "\n" for i in range(40)))
    args = ["predict", "--model", str(path), "--labels", ",".join(LABELS), "--relations", ",".join(RELATIONS),
            "--threshold", str(threshold), "--input", str(source), "--chunk-size", "1"]
    assert cli.main([*args, "--output", str(directory / "uninterrupted.jsonl")]) == 0
    reference = (directory / "uninterrupted.jsonl").read_bytes()
    rows = [json.loads(line) for line in reference.splitlines()]
    assert [r["id"] for r in rows] == list(range(40)) and sum(len(r["relations"]) for r in rows) > 0
    return directory, args, reference


def test_sigkilled_predict_resumes_to_the_uninterrupted_output(corpus_run, capsys):
    """`relex-jax predict` in a fresh process, killed with SIGKILL once its first piece is
    committed, then run again: the output equals the uninterrupted run's byte for byte (every
    record once, in order), and the pieces committed before the kill were not computed again."""
    import sys

    from processes import kill_once_written

    directory, args, reference = corpus_run
    out = directory / "killed.jsonl"
    first = directory / "killed.jsonl.pieces" / "piece-00000000.jsonl"
    kill_once_written([sys.executable, "-m", "relex_jax", *args, "--output", str(out)], first, cwd=ROOT,
                      env=subprocess_env(), timeout=300)
    committed = len(list(first.parent.glob("piece-*.jsonl")))
    assert 1 <= committed < 40 and not out.exists()
    capsys.readouterr()
    assert cli.main([*args, "--output", str(out)]) == 0
    assert f"{40 - committed} texts in {40 - committed} pieces" in capsys.readouterr().err
    assert out.read_bytes() == reference
    assert not first.parent.exists()


def test_two_processes_under_jax_distributed_write_the_single_process_output(corpus_run):
    """Two processes joined by jax.distributed (gloo on the CPU) each predict their half of the
    pieces (k % 2) into one run; process 0 merges once both are done: the file equals the
    single-process run's byte for byte."""
    import socket
    import subprocess
    import sys

    directory, args, reference = corpus_run
    out = directory / "two_processes.jsonl"
    with socket.socket() as probe:
        probe.bind(("localhost", 0))
        port = probe.getsockname()[1]
    procs = [subprocess.Popen([sys.executable, "-m", "relex_jax", *args, "--output", str(out), "--distributed",
                               "--coordinator-address", f"localhost:{port}", "--num-processes", "2",
                               "--process-id", str(i)],
                              cwd=ROOT, env=subprocess_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True)
             for i in range(2)]
    logs = [p.communicate(timeout=300)[0] for p in procs]
    for p, log in zip(procs, logs):
        assert p.returncode == 0, log[-3000:]
    assert "(shard 1/2): 20 texts in 20 pieces" in logs[1] and f"wrote {out}: 20 texts" in logs[0]
    assert out.read_bytes() == reference
