"""Pair-stage memory at low entity thresholds: relex-jax (pair scoring in chunks, and with chunking
off) vs gliner, end to end on the CoNLL04 test sentences, each run in its own process.

    python benchmarks/pair_memory.py [--model tiny|small] [--batch-size 32]
                                     [--spans-per-text 10 20 35 50 70 90 110] [--rss-limit-gib 8]
                                     [--timeout 420] [--relation-threshold 0.5] [--record]

Every span that passes the entity threshold is paired with every other, so the pair stage grows with
the square of the passing spans. The model is a random checkpoint built by the test fixtures, as in
benchmarks/inference.py (tiny: head width 64, max_width 4, so ~115 candidate spans per sentence under
gliner's word splitting, up to ~490; small: deberta-v3-small-shaped, width 768, max_width 12). For
each --spans-per-text target the entity threshold is calibrated as there (gliner's forward, the
widest score gap near the target, no per-text cap) and the 288 sentences go through `inference`
(strings in, dicts out) in three fresh subprocesses, from the highest threshold down:

  gliner              gliner's `inference`, one pass;
  relex-jax           `RelexModel.inference`, two passes (the first compiles);
  relex-jax unchunked the same with `relations.PAIR_CHUNK_ELEMENTS` raised so that the pair MLP's
                      hidden activations (B, E, E, 4D) are one tensor, as before chunking.

A process is killed when its RSS (polled every 50 ms) exceeds --rss-limit-gib or it runs past
--timeout; once a side fails, it is not run at lower thresholds. Peak RSS is the kernel's high-water
mark (wait4), so it includes imports and the model. Decoded entities and relations are compared text
by text between the sides that finish.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

GiB = 1024**3
SIDES = ("gliner", "relex-jax", "relex-jax unchunked")
POLL_S = 0.05


# ------------------------------------------------------------------------------------------------
# Child: one side, one threshold (imports only that side's library, so its RSS is its own)
# ------------------------------------------------------------------------------------------------


def child(side: str, job: Path, threshold: float, out: Path) -> None:
    spec = json.loads(job.read_text())
    kwargs = dict(relations=spec["relations"], threshold=threshold, relation_threshold=spec["relation_threshold"],
                  batch_size=spec["batch_size"])
    if side == "gliner":
        import torch
        from gliner import GLiNER

        torch.set_num_threads(os.cpu_count() or 1)
        model = GLiNER.from_pretrained(spec["model"], local_files_only=True)
        passes = 1
    else:
        from relex_jax import RelexModel
        from relex_jax.modeling import relations

        if side == "relex-jax unchunked":
            relations.PAIR_CHUNK_ELEMENTS = sys.maxsize  # the whole (B, E, E, 4D) block at once
        model = RelexModel.from_pretrained(spec["model"])
        passes = 2
    times = []
    for _ in range(passes):
        start = time.perf_counter()
        entities, rels = model.inference(spec["texts"], spec["labels"], **kwargs)
        times.append(time.perf_counter() - start)
    out.write_text(json.dumps(dict(times=times, entities=entities, relations=rels), default=float))


# ------------------------------------------------------------------------------------------------
# Parent
# ------------------------------------------------------------------------------------------------


def run_side(side: str, job: Path, threshold: float, limit: int, timeout: float, work: Path) -> dict:
    """Run one child to completion or until it breaks the RSS / time budget; its result and peak RSS."""
    out, log = work / "result.json", work / f"{side.replace(' ', '_')}.log"
    out.unlink(missing_ok=True)
    argv = [sys.executable, __file__, "--child", side, "--job", str(job), "--threshold", repr(threshold),
            "--out", str(out)]
    page = os.sysconf("SC_PAGE_SIZE")
    outcome = None
    with log.open("wb") as sink:
        start = time.perf_counter()
        proc = subprocess.Popen(argv, stdout=sink, stderr=subprocess.STDOUT)
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            try:
                rss = int(Path(f"/proc/{proc.pid}/statm").read_text().split()[1]) * page
            except (OSError, IndexError, ValueError):
                rss = 0
            if outcome is None and rss > limit:
                outcome = f"killed: RSS > {limit / GiB:.0f} GiB"
            elif outcome is None and time.perf_counter() - start > timeout:
                outcome = f"killed: > {timeout:.0f} s"
            if outcome is not None:
                proc.kill()
            time.sleep(POLL_S)
    result = {"peak": usage.ru_maxrss * 1024, "wall": time.perf_counter() - start}
    code = os.waitstatus_to_exitcode(status)
    if outcome is None and code != 0:
        tail = log.read_text(errors="replace").strip().splitlines()[-1:] or ["(no output)"]
        outcome = f"failed (exit {code}): {tail[0][:200]}"
    if outcome is None:
        result.update(json.loads(out.read_text()))
    result["outcome"] = outcome or "ok"
    print(f"  {side}: {result['outcome']}, peak RSS {result['peak'] / GiB:.2f} GiB, "
          + (f"passes {', '.join(f'{t:.1f}' for t in result['times'])} s" if outcome is None else
             f"after {result['wall']:.0f} s"), flush=True)
    return result


def finished(level: dict, side: str) -> dict | None:
    """The run of `side` at this threshold, if it ran and finished."""
    run = level["runs"].get(side)
    return run if run is not None and run["outcome"] == "ok" else None


def differing(a: dict, b: dict) -> tuple[int, int]:
    """Texts whose decoded entities / relations differ between two finished runs."""
    from inference import entity_keys, relation_keys

    return (sum(x != y for x, y in zip(entity_keys(a["entities"]), entity_keys(b["entities"]))),
            sum(x != y for x, y in zip(relation_keys(a["relations"]), relation_keys(b["relations"]))))


def table(levels: list[dict]) -> str:
    rows = [
        "| threshold | spans passing / text (mean, max) | implementation | outcome | pass (s) | peak RSS (GiB) "
        "| texts with different entities / relations than gliner |",
        "|---|---|---|---|---|---|---|",
    ]
    for level in levels:
        for side in SIDES:
            r = level["runs"].get(side)
            if r is None:
                continue
            passes = " / ".join(f"{t:.1f}" for t in r.get("times", ())) or "-"
            gliner = finished(level, "gliner")
            if side == "gliner":
                diff = "-"
            elif gliner and finished(level, side):
                diff = "%d / %d" % differing(gliner, r)
            else:
                diff = "n/a"
            rows.append(f"| {level['threshold']:.4g} | {level['passing'].mean():.1f}, {level['passing'].max()} "
                        f"| {side} | {r['outcome']} | {passes} | {r['peak'] / GiB:.2f} | {diff} |")
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", choices=("tiny", "small"), default="tiny")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--spans-per-text", type=float, nargs="+", default=[10, 20, 35, 50, 70, 90, 110],
                        help="mean candidate spans per text passing each threshold of the grid")
    parser.add_argument("--rss-limit-gib", type=float, default=8.0, help="kill a run whose RSS exceeds this")
    parser.add_argument("--timeout", type=float, default=420.0, help="kill a run (load + passes) after this")
    parser.add_argument("--relation-threshold", type=float, default=0.5)
    parser.add_argument("--record", action="store_true", help="append the result to benchmarks/RESULTS.md")
    parser.add_argument("--child", choices=SIDES, help=argparse.SUPPRESS)
    parser.add_argument("--job", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--threshold", type=float, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(args.child, args.job, args.threshold, args.out)

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import inference  # the model builder, threshold calibration, texts and machine line of the inference benchmark
    from common import finish

    if not inference.CONLL04_TEST.is_file():
        print(f"skipped: the CoNLL04 test split is not at {inference.CONLL04_TEST}")
        return
    started = time.perf_counter()
    inference.torch.set_num_threads(os.cpu_count() or 1)  # calibration runs gliner here
    texts, _ = inference.load_texts(sum(1 for line in inference.CONLL04_TEST.open() if line.strip()))
    limit, targets = int(args.rss_limit_gib * GiB), sorted(args.spans_per_text)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        model, path = inference.build(args.model, work)
        levels = []
        for target in targets:  # highest threshold first
            threshold, passing, _ = inference.calibrate_threshold(model, texts, target, 10**9, 0, args.batch_size)
            levels.append(dict(threshold=threshold, passing=passing, runs={}))
            print(f"threshold {threshold:.6g}: {passing.mean():.1f} spans pass per text (max {passing.max()})",
                  flush=True)
        width, max_width = model.config.hidden_size, model.config.max_width
        del model
        gc.collect()
        job = work / "job.json"
        job.write_text(json.dumps(dict(model=str(path), texts=texts, labels=inference.LABELS,
                                       relations=inference.RELATIONS, batch_size=args.batch_size,
                                       relation_threshold=args.relation_threshold)))
        failed = set()
        for level in levels:
            print(f"threshold {level['threshold']:.6g}:", flush=True)
            for side in SIDES:
                if side not in failed:
                    level["runs"][side] = run = run_side(side, job, level["threshold"], limit, args.timeout, work)
                    if run["outcome"] != "ok":
                        failed.add(side)
    same = [differing(finished(level, "relex-jax"), finished(level, "relex-jax unchunked")) for level in levels
            if finished(level, "relex-jax") and finished(level, "relex-jax unchunked")]
    summary = (
        f"{len(texts)} texts (the CoNLL04 test sentences, {len(set(texts))} distinct) through `inference` "
        f"(strings in, dicts out), {len(inference.LABELS)} entity and {len(inference.RELATIONS)} relation labels, "
        f"batch size {args.batch_size}, relation threshold {args.relation_threshold:g}, float32, random "
        f"{args.model} model (tests/gliner_fixtures.py; head width {width}, max_width {max_width}); entity "
        f"thresholds calibrated with gliner's forward for ~{', '.join(f'{t:g}' for t in targets)} passing spans "
        f"per text. Each run is a fresh process (imports, model load and conversion count in its peak RSS, not "
        f"in its pass times), killed above {args.rss_limit_gib:g} GiB RSS or {args.timeout:.0f} s and not run "
        f"again at lower thresholds; "
        f"gliner makes one pass, relex-jax two (the first compiles). relex-jax chunked vs unchunked: texts with "
        f"different entities / relations {', '.join('%d / %d' % s for s in same) or 'n/a'} at the thresholds where "
        f"both finish. Machine: {inference.machine_line()}"
    )
    command = (f"python benchmarks/pair_memory.py --model {args.model} --batch-size {args.batch_size} "
               f"--spans-per-text {' '.join(f'{t:g}' for t in targets)} --rss-limit-gib {args.rss_limit_gib:g} "
               f"--timeout {args.timeout:g} --relation-threshold {args.relation_threshold:g} --record")
    title = "Pair-stage memory at low entity thresholds, " + {"tiny": "tiny test model",
                                                             "small": "deberta-v3-small-shaped model"}[args.model]
    finish(title, command, table(levels), summary, args.record, started)


if __name__ == "__main__":
    main()
