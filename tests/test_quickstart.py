"""`relex-jax quickstart` (short: the full-length run is the README's first command) and
`relex-jax evaluate` on the model it trains."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import jax
import pytest

from relex_jax.cli import main
from relex_jax.data.readers import read_jsonl
from relex_jax.evaluation import evaluate
from relex_jax.inference import RelexModel

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.filterwarnings("ignore:Some donated buffers were not usable")


def quickstart(workdir: Path) -> list[str]:
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    done = subprocess.run([sys.executable, "-m", "relex_jax", "quickstart", "--workdir", str(workdir), "--max-steps", "30"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout.strip().splitlines(), done.stderr


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("quickstart")
    return workdir, *quickstart(workdir)


def test_quickstart_trains_reloads_reports_and_reruns_cleanly(quick_run):
    workdir, lines, stderr = quick_run
    assert re.fullmatch(r"held-out relation F1: [01]\.\d{4}", lines[-1]), lines[-1]
    assert "Unseen sentences:" in lines and "trained 30 steps" in stderr
    assert any(line.startswith("relations strict") for line in lines)
    report = json.loads((workdir / "test_report.json").read_text())
    assert f"{report['relations']['strict']['f1']:.4f}" == lines[-1].split()[-1]
    assert (workdir / "run" / "checkpoints" / "30").is_dir() and (workdir / "run" / "model").is_dir()
    again, stderr_again = quickstart(workdir)  # the finished run is reused, the report recomputed
    assert "reusing the finished training run" in stderr_again
    assert again[-1] == lines[-1]


def test_evaluate_command_matches_the_library(quick_run, tmp_path, capsys):
    workdir = quick_run[0]
    data = workdir / "data" / "test.jsonl"
    out = tmp_path / "report.json"
    assert main(["evaluate", "--model", str(workdir / "run" / "model"), "--data", str(data), "--output", str(out),
                 "--batch-size", "16", "--window-size", "40", "--window-stride", "20"]) == 0
    printed = capsys.readouterr().out
    report = json.loads(out.read_text())
    assert report["data"] == str(data) and report["texts"] == 200
    assert set(report["entity_types"]) == {"person", "organization", "location", "date"}
    model = RelexModel.from_pretrained(workdir / "run" / "model", devices=jax.devices()[:1])
    direct = evaluate(model, read_jsonl(data), batch_size=16, window_size=40, window_stride=20)
    assert report["settings"] == direct["settings"] and report["settings"]["window_size"] == 40
    for kind in ("entities", "relations"):
        assert report[kind] == direct[kind]
        assert f"{direct[kind]['strict']['f1']:9.4f}" in printed


def test_evaluate_command_rejects_bad_input(quick_run, tmp_path, capsys):
    model = str(quick_run[0] / "run" / "model")
    data = str(quick_run[0] / "data" / "dev.jsonl")
    assert main(["evaluate", "--model", model, "--data", str(tmp_path / "missing.jsonl")]) == 2
    assert "no such file" in capsys.readouterr().err
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"tokens": ["a", "b"], "entities": [{"start": 1, "end": 0, "type": "x"}], "relations": []}\n')
    assert main(["evaluate", "--model", model, "--data", str(bad)]) == 2
    assert "line 1" in capsys.readouterr().err
    # Settings are checked before the model loads (this model directory does not exist)...
    assert main(["evaluate", "--model", str(tmp_path / "no-model"), "--data", data, "--threshold", "1.5",
                 "--output", str(tmp_path / "r.json")]) == 2
    assert "threshold must be a probability" in capsys.readouterr().err
    # ... and against the model before any text runs: windows too close for its widest span.
    assert main(["evaluate", "--model", model, "--data", data, "--window-size", "20", "--window-stride", "19",
                 "--output", str(tmp_path / "r.json")]) == 2
    assert "overlap by 1 words" in capsys.readouterr().err
    assert not (tmp_path / "r.json").exists()
