"""`relex-jax serve` under load: throughput and latency at 1, 8 and 32 concurrent clients, with dynamic
batching on and off.

    python benchmarks/serve.py [--clients 1,8,32] [--seconds 15] [--threshold 0.9] [--model-dir PATH]
                               [--record]

Model: the tests' tiny random relex model (tests/gliner_fixtures.py: 2 layers, hidden 64), or
--model-dir (a relex-jax or gliner model directory). At the default entity threshold 0.9 the tiny
model finds ~3 entities and ~0.8 relations per CoNLL04 sentence (CoNLL04's own annotation has ~3.5
and ~1.2), as a trained model would; its candidate spans still fill the pair stage (entity caps
up to 64).

Each mode runs the server as its own process (`python -m relex_jax serve`, the CLI as users start
it; compilation cache off, so the warm-up compiles) on a free loopback port:
  off               --max-batch-texts 1 --batch-size 1: every request its own model call;
  on, wait 0 ms     --max-batch-texts 32 --batch-size 8 --max-wait-ms 0 (the CLI's defaults): a call
                    takes what queued while the previous one ran, without waiting for more;
  on, wait 10 ms    the same with --max-wait-ms 10: a call waits up to 10 ms for more requests.
All warm up texts up to 64 words (--warmup-words 64) with the benchmark's types. Clients are threads
of this process, each with its own keep-alive connection (`relex_jax.serve.Client`), in a closed
loop: one request of one CoNLL04 test sentence (in file order, clients interleaved), 4 entity and 5
relation types, then the next. At each client count they first send every distinct sentence once,
untimed, and again until a pass compiles no new forward shape (at most 4 passes): shapes the
warm-up did not cover compile there (longer texts, larger entity caps, other row counts, and with
batching the many mixes of these that batches of different requests make). Then they run for
--seconds, timed. Reported: requests (= texts) per second, median and 99th-percentile latency seen
by the clients, mean texts per model call (from /metrics), forward shapes compiled while timed.

Then, to separate the model from the server, `RelexModel.inference` alone in this process: texts/s
over the sentences in calls of 1, 8 and 32 texts (forwards of at most 8 rows, as the server's
default), after an untimed pass.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
CONLL04_TEST = ROOT.parent / "shared" / "data" / "conll04" / "test.jsonl"
LABELS = ["person", "location", "organization", "other"]  # CoNLL04 Peop, Loc, Org, Other
RELATIONS = ["works for", "located in", "based in", "lives in", "kills"]
MAX_WARM_PASSES = 4
MODES = {  # name: server options beyond the common ones
    "off": ["--max-batch-texts", "1", "--batch-size", "1"],
    "on, wait 0 ms": ["--max-batch-texts", "32", "--batch-size", "8", "--max-wait-ms", "0"],
    "on, wait 10 ms": ["--max-batch-texts", "32", "--batch-size", "8", "--max-wait-ms", "10"],
}
CALL_SIZES = (1, 8, 32)  # texts per `inference` call in the model-alone measurement

sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(ROOT))

from common import finish  # noqa: E402

from relex_jax.serve import Client  # noqa: E402


def load_texts() -> list[str]:
    if CONLL04_TEST.is_file():
        with CONLL04_TEST.open() as f:
            return [" ".join(json.loads(line)["tokens"]) for line in f if line.strip()]
    from gliner_fixtures import generate_corpus

    return generate_corpus(n_sentences=288, seed=0)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(model: Path, options: list[str], threshold: float, log: Path) -> tuple[subprocess.Popen, str, float]:
    """(process, URL, seconds from start to ready)."""
    port = free_port()
    command = [sys.executable, "-m", "relex_jax", "serve", "--model", str(model), "--port", str(port),
               "--labels", ",".join(LABELS), "--relations", ",".join(RELATIONS), "--threshold", str(threshold),
               "--warmup-words", "64", "--compilation-cache", "off", *options]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    start = time.perf_counter()
    process = subprocess.Popen(command, stdout=log.open("w"), stderr=subprocess.STDOUT, env=env)
    url = f"http://127.0.0.1:{port}"
    with Client(url) as client:
        try:
            client.wait_ready(timeout=900)
        except TimeoutError:
            process.kill()
            raise
    return process, url, time.perf_counter() - start


def scrape(url: str) -> dict[str, float]:
    with Client(url) as client:
        text = client.metrics()
    return {name: float(value) for name, value in re.findall(r"^(\S+) (\S+)$", text, re.MULTILINE)}


def load(url: str, texts: list[str], clients: int, seconds: float | None, threshold: float) -> list[float]:
    """Closed-loop clients; with `seconds` None each sends its share of `texts` once. Latencies (s)."""
    latencies, errors, lock = [], [], threading.Lock()
    barrier = threading.Barrier(clients)

    def run(index: int):
        mine = []
        try:
            with Client(url) as client:
                barrier.wait()
                deadline = None if seconds is None else time.perf_counter() + seconds
                i = index
                while (i < len(texts)) if deadline is None else (time.perf_counter() < deadline):
                    begun = time.perf_counter()
                    client.inference([texts[i % len(texts)]], LABELS, RELATIONS, threshold=threshold)
                    mine.append(time.perf_counter() - begun)
                    i += clients
        except Exception as exc:
            errors.append(exc)
        with lock:
            latencies.extend(mine)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise RuntimeError(f"{len(errors)} clients failed, the first: {errors[0]!r}")
    return latencies


def bench_mode(model: Path, mode: str, texts: list[str], args, workdir: Path) -> dict:
    log = workdir / f"server_{len(os.listdir(workdir))}.log"
    process, url, ready = start_server(model, MODES[mode], args.threshold, log)
    rows = []
    try:
        for clients in args.clients:
            passes = 0
            while passes < MAX_WARM_PASSES:  # untimed passes over every distinct text, until one compiles nothing
                shapes = scrape(url)["relex_compiled_shapes"]
                load(url, texts, clients, None, args.threshold)
                passes += 1
                if scrape(url)["relex_compiled_shapes"] == shapes:
                    break
            before = scrape(url)
            start = time.perf_counter()
            latencies = load(url, texts, clients, args.seconds, args.threshold)
            elapsed = time.perf_counter() - start
            after = scrape(url)
            calls = after["relex_batch_texts_count"] - before["relex_batch_texts_count"]
            rows.append(dict(
                clients=clients, passes=passes, requests=len(latencies), throughput=len(latencies) / elapsed,
                p50=1e3 * float(np.percentile(latencies, 50)), p99=1e3 * float(np.percentile(latencies, 99)),
                per_call=(after["relex_batch_texts_sum"] - before["relex_batch_texts_sum"]) / max(calls, 1),
                compiled=int(after["relex_compiled_shapes"] - before["relex_compiled_shapes"]),
            ))
            print(f"batching {mode}, {clients} clients: {rows[-1]}", flush=True)
        shapes = int(scrape(url)["relex_compiled_shapes"])
    finally:
        process.terminate()
        process.wait(timeout=60)
    return dict(mode=mode, ready=ready, shapes=shapes, rows=rows)


def model_alone(model: Path, texts: list[str], threshold: float) -> dict[int, float]:
    """texts/s of `RelexModel.inference` in calls of each of `CALL_SIZES` texts (after an untimed pass)."""
    from relex_jax import RelexModel

    relex = RelexModel.from_pretrained(model)
    speeds = {}
    for size in CALL_SIZES:
        for timed in (False, True):
            start = time.perf_counter()
            for i in range(0, len(texts), size):
                relex.inference(texts[i : i + size], LABELS, RELATIONS, threshold=threshold, batch_size=min(size, 8))
            speeds[size] = len(texts) / (time.perf_counter() - start)
    return speeds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--clients", default="1,8,32", help="concurrent client counts (default 1,8,32)")
    parser.add_argument("--seconds", type=float, default=15.0, help="timed seconds per client count (default 15)")
    parser.add_argument("--threshold", type=float, default=0.9, help="entity threshold of every request (default 0.9)")
    parser.add_argument("--model-dir", type=Path, help="model to serve (default: the tests' tiny random model)")
    parser.add_argument("--record", action="store_true", help="append the result to benchmarks/RESULTS.md")
    args = parser.parse_args()
    args.clients = [int(c) for c in args.clients.split(",")]
    if min(args.clients) < 1 or args.seconds <= 0 or not 0 <= args.threshold <= 1:
        parser.error("--clients must be positive counts, --seconds positive, --threshold in [0, 1]")

    started = time.perf_counter()
    texts = load_texts()
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        model = args.model_dir
        if model is None:
            from gliner_fixtures import build_relex_model

            model = build_relex_model(workdir / "tiny", seed=0)[1]
        results = [bench_mode(model, mode, texts, args, workdir) for mode in MODES]
        alone = model_alone(model, texts, args.threshold)

    header = ("| batching | clients | requests | requests/s | vs off | p50 latency (ms) | p99 latency (ms) | texts per "
              "model call | untimed passes | shapes compiled while timed |")
    lines = [header, "|---" * header.count(" | ") + "|---|"]
    off = {row["clients"]: row["throughput"] for row in results[0]["rows"]}
    for r in results:
        for row in r["rows"]:
            lines.append(f"| {r['mode']} | {row['clients']} | {row['requests']} | {row['throughput']:.1f} | "
                         f"{row['throughput'] / off[row['clients']]:.2f}x | {row['p50']:.1f} | {row['p99']:.1f} | "
                         f"{row['per_call']:.1f} | {row['passes']} | {row['compiled']} |")
    name = "the tests' tiny random model" if args.model_dir is None else str(args.model_dir)
    summary = (
        f"{name}; {len(texts)} CoNLL04 test sentences, one per request, {len(LABELS)} entity and {len(RELATIONS)} "
        f"relation types, entity threshold {args.threshold}; closed-loop client threads in the benchmark process, "
        f"server a separate `relex-jax serve` process per mode (off: --max-batch-texts 1 --batch-size 1; on: "
        f"--max-batch-texts 32 --batch-size 8 with --max-wait-ms 0 or 10), {args.seconds:g} s timed per row after "
        f"untimed passes over the sentences until one compiled nothing new. Start to ready (imports, model load, "
        f"warm-up of texts up to 64 words, compilation cache off) and forward shapes compiled by the end: "
        + ", ".join(f"{r['mode']} {r['ready']:.0f} s, {r['shapes']} shapes" for r in results)
        + ". The model alone (`RelexModel.inference` in this process, forwards of at most 8 rows): "
        + ", ".join(f"calls of {size} text{'s' * (size > 1)} {speed:.0f} texts/s" for size, speed in alone.items())
        + f". Machine: {platform.machine()} CPU, {os.cpu_count()} cores (server and clients share them), "
        f"Python {platform.python_version()}"
    )
    command = " ".join(["python benchmarks/serve.py", *sys.argv[1:]])
    title = "Serving: dynamic batching on vs off" + (", tiny model" if args.model_dir is None else "")
    finish(title, command, "\n".join(lines), summary, args.record, started)


if __name__ == "__main__":
    main()
