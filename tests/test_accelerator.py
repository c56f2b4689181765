"""The accelerator benchmark's smoke path (`benchmarks/accelerator.py --smoke`): the whole device flow
at tiny shapes on the CPU, in a fresh process (one jax device, as on the accelerator). Its JSON must
hold every part, with float32 parity passed and sane timings; `--record-from` must turn it into the
Markdown that goes to benchmarks/RESULTS.md. Without ../shared/data the script uses generated texts."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("gliner")
pytest.importorskip("sentencepiece")

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "accelerator.py"
DATA = ROOT.parent / "shared" / "data"
PARTS = ("setup", "correctness", "build", "gliner_inference", "gliner_training", "relex_training", "relex_inference")
SIDES = ("gliner", "gliner_packed", "gliner_bf16", "gliner_bf16_packed", "relex", "relex_bf16", "relex_bf16_packed")


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    out = tmp_path_factory.mktemp("accelerator")
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    proc = subprocess.run([sys.executable, str(SCRIPT), "--smoke", "--out", str(out)], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    return out, json.loads((out / "accelerator.json").read_text())


def test_every_part_done(smoke):
    _, data = smoke
    assert tuple(data["parts"]) == PARTS
    assert all(part["status"] == "done" for part in data["parts"].values()), data["parts"]
    assert "cut_off" not in data
    conll04 = (DATA / "conll04" / "test.jsonl").is_file()
    assert data["parts"]["setup"]["texts"].startswith("CoNLL04" if conll04 else "generated")
    assert data["parts"]["setup"]["peak"]["peak"] > 0


def test_float32_parity_and_bf16_sanity(smoke):
    _, data = smoke
    check = data["parts"]["correctness"]
    assert check["passed"] and check["bf16_passed"]
    for model in check["models"].values():
        assert model["entity_logit_error"] <= 1e-5 and model["relation_logit_error"] <= 1e-5
        assert model["pairs"] > 0 and model["same_pairs"] and model["same_entity_counts"]
        assert model["decoded"]["entity_mismatch"] == model["decoded"]["relation_mismatch"] == 0
        assert 0 < model["bf16"]["entity_logit_error"] <= 0.5  # bf16 differs, but not wildly


def test_training_configs(smoke):
    _, data = smoke
    relex, gliner = data["parts"]["relex_training"], data["parts"]["gliner_training"]
    for part in (relex, gliner):
        measured = [c for c in part["configs"] if "t" in c]
        assert {(c["bf16"], bool(c.get("ladder"))) for c in measured} == {(False, False), (True, False), (True, True)}
        for config in measured:
            assert config["t"] > 0 and config["tokens"] > 0 and all(map(math.isfinite, config["losses"]))
            assert not config["collators_differ"]
        largest = next(c for c in measured if c.get("ladder"))
        assert largest["rows"] > data["environment"]["sizes"]["train_batch"]
    for config in (c for c in relex["configs"] if "t" in c):
        assert config["compile_s"] > 0 and config["flops"] > 0 and config["analysed_bytes"] > 0
    assert relex["first_loss"]["relative_difference"] < 1e-4  # same batch, same weights, float32


def test_inference_sides(smoke):
    _, data = smoke
    sides = {**data["parts"]["gliner_inference"]["sides"], **data["parts"]["relex_inference"]["sides"]}
    assert tuple(sides) == SIDES
    for key, side in sides.items():
        assert side["texts_per_s"] > 0 and side["first_s"] > 0
        assert ("latency_ms" in side) == ("packed" not in key)
    assert data["parts"]["relex_inference"]["comparisons"]["relex vs gliner"]["identical"]


def test_markdown_and_record_from(smoke, tmp_path, monkeypatch):
    out, _ = smoke
    written = (out / "accelerator.md").read_text()
    assert written.startswith("## Accelerator run (smoke, CPU)") and written.count("\n|---|") == 3  # three tables
    results = tmp_path / "RESULTS.md"
    results.write_text("# Benchmark results\n")
    monkeypatch.syspath_prepend(str(SCRIPT.parent))
    import accelerator

    monkeypatch.setattr(sys, "argv", ["accelerator.py", "--record-from", str(out / "accelerator.json"),
                                      "--results", str(results)])
    assert accelerator.main() == 0
    recorded = results.read_text()
    assert recorded.startswith("# Benchmark results\n\n## Accelerator run (smoke, CPU)")
    assert "| relex-jax bf16, packing=True |" in recorded and "MFU (datasheet)" in recorded
