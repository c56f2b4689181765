"""The training run as users start it: `python -m train` in fresh processes (the tiny CPU recipe,
two processes as one multi-host job, a SIGKILLed run resumed). A file of its own so the suite's
two workers share the long subprocess runs and the rest of `test_training_loop.py`."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import jax
import numpy as np

from processes import kill_once_written
from test_training_loop import ROOT, SMALL_RUN, final_params, losses

from relex_jax.data.synthetic import generate_examples
from relex_jax.inference import RelexModel


def test_tiny_cpu_recipe_trains_end_to_end(tmp_path):
    """The configs/tiny_cpu.yaml command as a user runs it: a fresh process, the default device."""
    from relex_jax.evaluation import evaluate

    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    done = subprocess.run(
        [sys.executable, "-m", "train", "--config", "configs/tiny_cpu.yaml", "--workdir", str(tmp_path / "run"),
         "data.dev=synthetic:dev:32"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=900,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    train_losses = [r["loss"] for r in records if "loss" in r]
    assert len(train_losses) == 15
    assert [r for r in records if "loss" in r][-1]["compilations"] == 1, "the buckets give every batch one shape"
    assert train_losses[-1] < 0.5 * train_losses[0], train_losses
    evals = [r for r in records if "eval" in r]
    assert [r["step"] for r in evals] == [150]  # the final evaluation (eval.every_n_steps is 1000)
    assert json.loads((tmp_path / "run" / "best.json").read_text())["step"] == 150
    # The saved model reproduces the run's own final dev evaluation (counts, not only structure).
    model = RelexModel.from_pretrained(tmp_path / "run" / "model", devices=jax.devices()[:1])
    again = evaluate(model, generate_examples(32, seed=0, split="dev"), threshold=0.5, batch_size=32)
    for kind in ("entities", "relations"):
        assert again[kind] == evals[-1]["eval"][kind], kind


def test_two_processes_train_as_one_job(tmp_path):
    """Multi-host on one machine: two processes with two CPU devices each (jax.distributed over
    gloo), a data=2 x fsdp=2 mesh across them, each process reading its half of the data, a shared
    run directory, evaluation on process 0; then both processes restore the final checkpoint."""
    import socket

    from relex_jax.training.init import save_tokenizer, train_tokenizer

    save_tokenizer(train_tokenizer([ex.tokens for ex in generate_examples(96)], 400), tmp_path / "tokenizer")
    raw = json.loads(json.dumps(SMALL_RUN))
    raw["model"]["tokenizer"] = str(tmp_path / "tokenizer")  # several hosts: one shared tokenizer
    raw["data"]["dev"] = "synthetic:dev:16"
    raw["eval"] = {"every_n_steps": 4, "batch_size": 8}
    raw["mesh"] = {"data": 2, "fsdp": 2}
    raw["data"]["buckets"]["entities"] = [8]  # one train-step shape (one compilation per process): hosts, not shapes
    with socket.socket() as probe:
        probe.bind(("localhost", 0))
        port = probe.getsockname()[1]
    raw["distributed"] = {"initialize": True, "coordinator_address": f"localhost:{port}", "num_processes": 2}
    config = tmp_path / "two_hosts.yaml"
    config.write_text(json.dumps(raw))  # JSON is YAML
    env = {**{k: v for k, v in os.environ.items() if k != "XLA_FLAGS"},
           "XLA_FLAGS": "--xla_force_host_platform_device_count=2", "JAX_PLATFORMS": "cpu"}

    def run(*extra):
        procs = [
            subprocess.Popen(
                [sys.executable, "-m", "train", "--config", str(config), "--workdir", str(tmp_path / "run"),
                 f"distributed.process_id={i}", *extra],
                cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            )
            for i in range(2)
        ]
        outputs = [p.communicate(timeout=600)[0] for p in procs]
        for p, out in zip(procs, outputs):
            assert p.returncode == 0, out[-3000:]

    run()
    first = losses(tmp_path / "run")
    assert [s for s, _ in first] == list(range(1, 7)) and first[-1][1] < first[0][1]
    records = [json.loads(l) for l in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if "eval" in r] == [4, 6]  # process 0, parameters gathered from both
    assert sorted(int(p.name) for p in (tmp_path / "run" / "checkpoints").iterdir() if p.name.isdigit()) == [2, 4, 6]
    model = RelexModel.from_pretrained(tmp_path / "run" / "model", devices=jax.devices()[:1])
    before = jax.device_get(model.variables["params"])
    # Both processes restore their shards of the step-6 checkpoint; nothing is left to train.
    run("--resume")
    assert [r["step"] for r in map(json.loads, (tmp_path / "run" / "metrics.jsonl").read_text().splitlines())
            if "eval" in r] == [4, 6]
    assert losses(tmp_path / "run") == first
    after = jax.device_get(RelexModel.from_pretrained(tmp_path / "run" / "model", devices=jax.devices()[:1]).variables["params"])
    for a, b in zip(jax.tree_util.tree_leaves(before), jax.tree_util.tree_leaves(after)):
        np.testing.assert_array_equal(a, b)


def test_sigkilled_process_resumes_to_the_same_parameters(tmp_path):
    """The literal check: `python -m train` killed with SIGKILL once a checkpoint is committed, then
    `--resume`d, ends with the same parameters (bit for bit) as an uninterrupted process."""
    raw = json.loads(json.dumps(SMALL_RUN))
    raw["optim"]["max_steps"] = 8
    # Dev evaluation every 2 steps (seconds each) keeps the victim busy while checkpoint 2 commits.
    raw["data"]["dev"] = "synthetic:dev:8"
    raw["eval"] = {"every_n_steps": 2, "batch_size": 8}
    config = tmp_path / "run.yaml"
    config.write_text(json.dumps(raw))
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}

    def command(workdir, *extra):
        return [sys.executable, "-m", "train", "--config", str(config), "--workdir", str(workdir), *extra]

    subprocess.run(command(tmp_path / "full"), cwd=ROOT, env=env, check=True, capture_output=True, timeout=600)
    kill_once_written(command(tmp_path / "killed"), tmp_path / "killed" / "checkpoints" / "2" / "_CHECKPOINT_METADATA",
                      cwd=ROOT, env=env)
    assert not (tmp_path / "killed" / "model").exists()
    subprocess.run(command(tmp_path / "killed", "--resume"), cwd=ROOT, env=env, check=True, capture_output=True,
                   timeout=600)
    assert losses(tmp_path / "killed") == losses(tmp_path / "full")
    for (path, x), (_, y) in zip(final_params(tmp_path / "full"), final_params(tmp_path / "killed")):
        np.testing.assert_array_equal(y, x, err_msg=jax.tree_util.keystr(path))
