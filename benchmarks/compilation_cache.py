"""What the persistent compilation cache saves: the same short training run, cache off, cold and warm.

    python benchmarks/compilation_cache.py [--config configs/tiny_cpu.yaml] [--steps 20] [--record]

Runs `python -m relex_jax train --config CONFIG --workdir FRESH optim.max_steps=STEPS` three times,
each in a fresh process with a fresh workdir: with `--compilation-cache off`, then twice on one new,
empty cache directory (cold, then warm). Each process counts through `jax.monitoring` its XLA
compilation requests (each one a compilation or a load from the cache), the cache hits among them,
the seconds they took and the seconds of tracing and lowering, which a cache does not save. The
run includes the config's end-of-training dev evaluation and the saving of the model.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import finish  # noqa: E402

# Runs `relex-jax ARGS...` and writes its jax.monitoring counts to the JSON file given first.
CHILD = """
import json, sys
from jax import monitoring
from relex_jax.cli import main

counts = {"requests": 0, "compile_s": 0.0, "hits": 0, "trace_lower_s": 0.0}

def on_duration(event, duration, **kwargs):
    if event == "/jax/core/compile/backend_compile_duration":
        counts["requests"] += 1
        counts["compile_s"] += duration
    elif event in ("/jax/core/compile/jaxpr_trace_duration", "/jax/core/compile/jaxpr_to_mlir_module_duration"):
        counts["trace_lower_s"] += duration

def on_event(event, **kwargs):
    if event == "/jax/compilation_cache/cache_hits":
        counts["hits"] += 1

monitoring.register_event_duration_secs_listener(on_duration)
monitoring.register_event_listener(on_event)
status = main(sys.argv[2:])
with open(sys.argv[1], "w") as out:
    json.dump(counts, out)
sys.exit(status)
"""


def train_once(config: str, steps: int, cache: str, scratch: Path, name: str) -> dict:
    """One training run in a fresh process: wall seconds and its compilation counts."""
    counts = scratch / f"{name}.json"
    argv = ["train", "--config", config, "--workdir", str(scratch / name), "--compilation-cache", cache,
            f"optim.max_steps={steps}"]
    env = {k: v for k, v in os.environ.items() if k != "RELEX_JAX_COMPILATION_CACHE"}
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", CHILD, str(counts), *argv], cwd=ROOT, env=env,
                          capture_output=True, text=True)
    wall = time.perf_counter() - start
    if done.returncode != 0:
        sys.exit(f"run {name!r} failed:\n{done.stderr[-3000:]}")
    result = json.loads(counts.read_text())
    result["wall_s"] = wall
    result["entries"] = len(list(Path(cache).glob("*-cache"))) if cache != "off" else None
    print(f"{name}: {wall:.1f} s, {result['requests']} compilation requests, {result['hits']} cache hits, "
          f"{result['compile_s']:.1f} s compiling or loading", flush=True)
    return result


def table(runs: dict[str, dict]) -> str:
    lines = ["| run | wall (s) | compilation requests | cache hits | compiled (not hits) | compiling or loading (s) "
             "| tracing + lowering (s) | cache entries after |",
             "|---|---|---|---|---|---|---|---|"]
    for name, r in runs.items():
        entries = "-" if r["entries"] is None else str(r["entries"])
        lines.append(f"| {name} | {r['wall_s']:.1f} | {r['requests']} | {r['hits']} | {r['requests'] - r['hits']} "
                     f"| {r['compile_s']:.1f} | {r['trace_lower_s']:.1f} | {entries} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", default="configs/tiny_cpu.yaml",
                        help="training config (default configs/tiny_cpu.yaml)")
    parser.add_argument("--steps", type=int, default=20, help="optim.max_steps of each run (default 20)")
    parser.add_argument("--record", action="store_true", help="append the result to benchmarks/RESULTS.md")
    args = parser.parse_args()
    if args.steps < 1:
        parser.error("--steps must be positive")

    started = time.perf_counter()
    load_before = os.getloadavg()[0]
    # Untimed: brings the libraries into the page cache, so the first timed run does not pay for it.
    subprocess.run([sys.executable, "-c", "import relex_jax.training.loop"], cwd=ROOT, check=True)
    with tempfile.TemporaryDirectory(prefix="relex_cache_bench_") as scratch:
        scratch = Path(scratch)
        cache = scratch / "xla"
        runs = {"cache off": train_once(args.config, args.steps, "off", scratch, "off"),
                "cold cache (empty)": train_once(args.config, args.steps, str(cache), scratch, "cold"),
                "warm cache (second run)": train_once(args.config, args.steps, str(cache), scratch, "warm")}
    load_after = os.getloadavg()[0]

    from inference import machine_line

    off, cold, warm = runs.values()
    command = f"python benchmarks/compilation_cache.py --config {args.config} --steps {args.steps} --record"
    summary = (
        f"`relex-jax train --config {args.config} optim.max_steps={args.steps}` (with its end-of-training dev "
        f"evaluation and model saving), each run a fresh process with a fresh workdir; cold and warm share one new "
        f"cache directory. Compilation requests: XLA compilations plus loads from the cache "
        f"(`/jax/core/compile/backend_compile_duration` events), cache hits: `/jax/compilation_cache/cache_hits`; "
        f"tracing + lowering runs in every process, cached or not. Warm vs cold: wall {warm['wall_s']:.1f} s against "
        f"{cold['wall_s']:.1f} s ({cold['wall_s'] / warm['wall_s']:.2f}x faster), compiling or loading "
        f"{warm['compile_s']:.1f} s against {cold['compile_s']:.1f} s; cold vs off (the cost of writing the cache): "
        f"{cold['wall_s'] - off['wall_s']:+.1f} s wall. 1-minute load average {load_before:.1f} before and "
        f"{load_after:.1f} after (on {os.cpu_count()} cores; other processes on the machine inflate every wall time). "
        f"Machine: {machine_line()}"
    )
    finish("Persistent compilation cache: a short training run, cache off, cold and warm", command, table(runs),
           summary, args.record, started)


if __name__ == "__main__":
    main()
