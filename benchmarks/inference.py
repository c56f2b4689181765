"""End-to-end inference (strings in, dicts out): relex-jax `RelexModel.inference` vs gliner's `inference`, in one run.

    python benchmarks/inference.py [--model tiny|small|both] [--texts 576] [--batch-size 32] [--rounds 3]
                                   [--spans-per-text 12] [--max-spans-per-text 64] [--relation-threshold 0.5]
                                   [--calibration-texts 0] [--record]

Models (random weights, built and calibrated by the test fixtures, tests/gliner_fixtures.py, then
loaded by both sides from the same gliner checkpoint; relex-jax converts it in memory):
  tiny   the tests' default fixture (2 layers, hidden 64, gliner width 64, max_width 4);
  small  a deberta-v3-small-shaped backbone (6 layers, hidden 768, 12 heads, intermediate 3072)
         under the released relex head (gliner width 768, max_width 12), as benchmarks/relex_forward.py
         but re-drawn at std 0.1, not 0.05: at 0.05 the random encoder gives nearly one entity score
         per text (mean entity logits of CoNLL04 texts spread by ~8, spans within a text by ~2.4), so
         any threshold keeps hundreds of spans in a few texts and none elsewhere, and gliner, which
         pads every row of a batch to the batch's largest pair count, runs out of memory. At 0.15 the
         spread is better but the random network amplifies float32 rounding differences between the
         two implementations to ~6e-2 in the entity logits, so spans at the threshold flip; at 0.1
         they stay below ~4e-3 (texts spread by ~1.8, spans within a text by ~2.2).
Texts: the CoNLL04 test sentences (../shared/data/conll04/test.jsonl; words joined by spaces), in
file order, repeated to --texts. Labels: person / location / organization / other; relations:
works for / located in / based in / lives in / kills.

The entity threshold is calibrated per model with a gliner forward over the distinct texts (or
--calibration-texts of them) so that on average about --spans-per-text candidate spans per text pass
it: every passing span takes part in relations, so gliner's all-pairs MLP (quadratic in that count)
has real work. It is raised if needed so that no calibrated text keeps more than
--max-spans-per-text spans (the pair tensors of a batch grow with the square of the largest count),
and put in the widest gap between span scores near the target, so that float32 differences between
the implementations do not move spans across it. Relations are decoded at --relation-threshold.

Each side first runs one full untimed pass (relex-jax's, on a freshly loaded model, is its cold
pass: it compiles there and is timed for the compile overhead, with XLA compilations counted by a
jax.monitoring listener). Their outputs are compared (entity labels and character offsets, and
relations, text by text). Then --rounds timed passes alternate gliner / relex-jax; medians are
reported. During relex-jax's timed passes its host-side steps are timed on the side (word
splitting + tokenization/batch building, and decoding to dicts) to give their share of the pass.
torch uses as many threads as there are CPUs; jax/XLA its defaults.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
CONLL04_TEST = ROOT.parent / "shared" / "data" / "conll04" / "test.jsonl"
LABELS = ["person", "location", "organization", "other"]  # CoNLL04 Peop, Loc, Org, Other
RELATIONS = ["works for", "located in", "based in", "lives in", "kills"]
MODELS = ("tiny", "small")
SMALL_STD = 0.1  # see the module docstring
# Event names of jax/_src/dispatch.py (jax 0.10): XLA compilation, and tracing + lowering before it.
BACKEND_COMPILE_EVENT = "/jax/core/compile/backend_compile_duration"
TRACE_EVENTS = ("/jax/core/compile/jaxpr_trace_duration", "/jax/core/compile/jaxpr_to_mlir_module_duration")

sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import jax  # noqa: E402
from gliner_fixtures import build_relex_model, reference_forward, torch  # noqa: E402

import relex_jax.inference as relex_inference  # noqa: E402
from common import finish  # noqa: E402
from relex_forward import V3_SMALL_SHAPED  # noqa: E402
from relex_jax import RelexModel  # noqa: E402


# ------------------------------------------------------------------------------------------------
# Inputs
# ------------------------------------------------------------------------------------------------


def load_texts(count: int) -> tuple[list[str], int]:
    """`count` texts (the test sentences in file order, repeated) and the number of distinct ones."""
    if not CONLL04_TEST.is_file():
        sys.exit(
            f"error: CoNLL04 test split not found at {CONLL04_TEST}\n"
            "This benchmark reads its texts from ../shared/data/conll04/test.jsonl relative to the repository "
            "root (one JSON object per line with a 'tokens' list); put the file there and rerun."
        )
    sentences = []
    for number, line in enumerate(CONLL04_TEST.read_text().splitlines(), 1):
        if line.strip():
            try:
                sentences.append(" ".join(json.loads(line)["tokens"]))
            except (ValueError, KeyError, TypeError) as error:
                sys.exit(f"error: {CONLL04_TEST}:{number} is not a JSON object with a 'tokens' list ({error})")
    if not sentences:
        sys.exit(f"error: {CONLL04_TEST} holds no sentences")
    return [sentences[i % len(sentences)] for i in range(count)], len(sentences)


def build(name: str, directory: Path):
    """(gliner model, checkpoint path) of a random model built by the test fixtures."""
    if name == "tiny":
        return build_relex_model(directory / "tiny", seed=0)
    return build_relex_model(directory / "small", seed=0, std=SMALL_STD, encoder=V3_SMALL_SHAPED, hidden_size=768,
                             max_width=12)


def calibrate_threshold(model, texts: list[str], target: float, cap: int, sample: int, batch_size: int):
    """Entity threshold at which on average `target` candidate spans per text pass, raised if needed
    so that no text keeps more than `cap`, measured with gliner's forward on the distinct texts
    (`sample` > 0: that many spread over them). Returns (threshold, passing spans per calibrated
    text, whether the cap raised the threshold)."""
    unique = list(dict.fromkeys(texts))
    if 0 < sample < len(unique):
        unique = [unique[i] for i in sorted(set(np.linspace(0, len(unique) - 1, sample).round().astype(int).tolist()))]
    rows = []  # per text: the best class logit of every in-text span, descending
    for start in range(0, len(unique), batch_size):
        out = reference_forward(model, unique[start : start + batch_size], LABELS, RELATIONS, threshold=1.0)
        best = out["logits"].max(-1).reshape(out["span_mask"].shape).astype(np.float64)
        rows.extend(np.sort(row[mask])[::-1] for row, mask in zip(best, out["span_mask"]))
    flat = np.sort(np.concatenate(rows))[::-1]

    def between(low: int, high: int) -> float:
        """Midpoint of the widest gap between the k-th and (k+1)-th largest logits, low <= k <= high."""
        low, high = min(max(1, low), len(flat) - 1), min(max(1, high), len(flat) - 1)
        k = low + int(np.argmax(flat[low - 1 : high] - flat[low : high + 1]))
        return float((flat[k - 1] + flat[k]) / 2)

    k = round(target * len(rows))
    slack = max(1, round(0.05 * k))  # the mean may move by 5% for a wider margin
    middle = between(k - slack, k + slack)
    floor = max((float(row[cap]) for row in rows if len(row) > cap), default=-np.inf)  # (cap+1)-th best of a text
    capped = middle < floor
    if capped:  # above `floor`, so that every text keeps at most `cap`
        k = int((flat > floor).sum())
        middle = between(k - max(1, round(0.05 * k)), k)
    passing = np.array([int((row > middle).sum()) for row in rows])
    return float(1 / (1 + np.exp(-middle))), passing, capped


# ------------------------------------------------------------------------------------------------
# Measurement helpers
# ------------------------------------------------------------------------------------------------


class CompileCounter:
    """Counts XLA backend compilations (and their seconds) reported through jax.monitoring, and sums
    the tracing + lowering seconds that precede them."""

    def __init__(self):
        self.durations: list[float] = []
        self.functions: list[str] = []
        self.trace_s = 0.0
        jax.monitoring.register_event_duration_secs_listener(self._listen)

    def _listen(self, event: str, duration: float, **kwargs) -> None:
        if event == BACKEND_COMPILE_EVENT:
            self.durations.append(duration)
            self.functions.append(str(kwargs.get("fun_name", "?")))
        elif event in TRACE_EVENTS:
            self.trace_s += duration

    def mark(self) -> tuple[int, float]:
        return len(self.durations), sum(self.durations)

    def since(self, mark: tuple[int, float]) -> tuple[int, float]:
        return len(self.durations) - mark[0], sum(self.durations[mark[0] :])

    def functions_since(self, mark: tuple[int, float]) -> Counter:
        return Counter(self.functions[mark[0] :])


@contextlib.contextmanager
def host_timers(totals: dict[str, float]):
    """Time relex-jax's host-side steps inside `inference` by wrapping the module-level functions it
    calls (looked up at call time): 'prepare' = split_words + build_batch (word splitting,
    tokenization, padded numpy inputs), 'decode' = the decoders and the dict builders."""
    groups = {
        "prepare": ("split_words", "build_batch"),
        "decode": ("decode_entities", "decode_relations", "entities_to_dicts", "relations_to_dicts", "merge_windows"),
    }
    originals = {}

    def wrap(function, group):
        def timed_call(*args, **kwargs):
            start = time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                totals[group] += time.perf_counter() - start

        return timed_call

    for group, names in groups.items():
        totals.setdefault(group, 0.0)
        for name in names:
            originals[name] = getattr(relex_inference, name)
            setattr(relex_inference, name, wrap(originals[name], group))
    try:
        yield totals
    finally:
        for name, function in originals.items():
            setattr(relex_inference, name, function)


def entity_keys(entities) -> list[list[tuple]]:
    return [[(e["start"], e["end"], e["label"]) for e in row] for row in entities]


def relation_keys(relations) -> list[list[tuple]]:
    return [[(r["head"]["start"], r["head"]["end"], r["relation"], r["tail"]["start"], r["tail"]["end"]) for r in row]
            for row in relations]


def one_sided_margin(a, b, texts: list[int], threshold: float) -> float | None:
    """Largest |score - threshold| over entities found by only one side, in the given texts."""
    gaps = []
    for i in texts:
        keys_a, keys_b = set(entity_keys([a[i]])[0]), set(entity_keys([b[i]])[0])
        gaps += [abs(e["score"] - threshold) for e in a[i] if (e["start"], e["end"], e["label"]) not in keys_b]
        gaps += [abs(e["score"] - threshold) for e in b[i] if (e["start"], e["end"], e["label"]) not in keys_a]
    return max(gaps, default=None)


def score_difference(a, b) -> float:
    """Max |score difference| over entities of texts whose entity lists agree."""
    diffs = [abs(x["score"] - y["score"]) for ra, rb in zip(a, b) if entity_keys([ra]) == entity_keys([rb])
             for x, y in zip(ra, rb)]
    return max(diffs, default=0.0)


# ------------------------------------------------------------------------------------------------
# One model
# ------------------------------------------------------------------------------------------------


def bench_model(name: str, texts: list[str], args, compiles: CompileCounter) -> dict:
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        model, path = build(name, Path(tmp))
        relex = RelexModel.from_pretrained(path)  # converted in memory; fresh: nothing compiled yet
    build_s = time.perf_counter() - t0
    cfg = model.config
    print(f"[{name}] built and loaded in {build_s:.1f} s (encoder hidden {relex.config.encoder.hidden_size}, "
          f"{relex.config.encoder.num_hidden_layers} layers; gliner width {cfg.hidden_size}, max_width {cfg.max_width})",
          flush=True)

    t0 = time.perf_counter()
    threshold, passing, capped = calibrate_threshold(model, texts, args.spans_per_text, args.max_spans_per_text,
                                                     args.calibration_texts, args.batch_size)
    print(f"[{name}] threshold {threshold:.6g}: on {len(passing)} distinct texts {passing.mean():.1f} candidate spans "
          f"per text pass (median {np.median(passing):.0f}, max {passing.max()}"
          f"{f'; raised to keep at most {args.max_spans_per_text}' if capped else ''}); calibrated in "
          f"{time.perf_counter() - t0:.1f} s", flush=True)

    common_kwargs = dict(relations=RELATIONS, threshold=threshold, relation_threshold=args.relation_threshold,
                         batch_size=args.batch_size)

    def run_gliner():
        return model.inference(texts, LABELS, **common_kwargs)

    def run_relex():
        return relex.inference(texts, LABELS, **common_kwargs)

    def timed(fn):
        start = time.perf_counter()
        result = fn()
        return time.perf_counter() - start, result

    # Warm-up: one full untimed pass each; relex-jax's is its cold pass (compiles).
    gliner_warm_s, (g_ents, g_rels) = timed(run_gliner)
    print(f"[{name}] gliner warm-up pass {gliner_warm_s:.2f} s", flush=True)
    mark, trace_mark = compiles.mark(), compiles.trace_s
    cold_s, (r_ents, r_rels) = timed(run_relex)
    cold_compiles, cold_compile_s = compiles.since(mark)
    cold_trace_s = compiles.trace_s - trace_mark
    cold_shapes = len(relex.compiled_shapes)
    compiled = ", ".join(f"{fun} x{count}" for fun, count in compiles.functions_since(mark).items())
    print(f"[{name}] relex-jax cold pass {cold_s:.2f} s ({cold_shapes} forward shapes, {cold_compiles} XLA "
          f"compilations ({compiled}), {cold_compile_s:.1f} s in XLA compile, {cold_trace_s:.1f} s tracing + "
          f"lowering)", flush=True)

    entity_mismatch = [i for i, (a, b) in enumerate(zip(entity_keys(g_ents), entity_keys(r_ents))) if a != b]
    margin = one_sided_margin(g_ents, r_ents, entity_mismatch, threshold)
    relation_mismatch = [i for i, (a, b) in enumerate(zip(relation_keys(g_rels), relation_keys(r_rels))) if a != b]
    if entity_mismatch or relation_mismatch:
        first = (entity_mismatch or relation_mismatch)[0]
        print(f"[{name}] WARNING: outputs differ: {len(entity_mismatch)} texts with different entity lists, "
              f"{len(relation_mismatch)} with different relation lists; first: text {first}: {texts[first]!r}\n"
              f"  gliner    {entity_keys([g_ents[first]])[0]} {relation_keys([g_rels[first]])[0]}\n"
              f"  relex-jax {entity_keys([r_ents[first]])[0]} {relation_keys([r_rels[first]])[0]}", flush=True)

    gliner_times, relex_times, shares = [], [], []
    mark = compiles.mark()
    stable = True
    for round_ in range(args.rounds):
        g_s, g_out = timed(run_gliner)
        host: dict[str, float] = {}
        with host_timers(host):
            r_s, r_out = timed(run_relex)
        gliner_times.append(g_s)
        relex_times.append(r_s)
        shares.append({key: value / r_s for key, value in host.items()})
        stable &= entity_keys(g_out[0]) == entity_keys(g_ents) and entity_keys(r_out[0]) == entity_keys(r_ents)
        print(f"[{name}] round {round_ + 1}/{args.rounds}: gliner {g_s:.2f} s ({len(texts) / g_s:.1f} texts/s), "
              f"relex-jax {r_s:.2f} s ({len(texts) / r_s:.1f} texts/s; prepare {host['prepare']:.2f} s, "
              f"decode {host['decode']:.2f} s)", flush=True)
    timed_compiles, timed_compile_s = compiles.since(mark)

    t_gliner, t_relex = statistics.median(gliner_times), statistics.median(relex_times)
    n = len(texts)
    result = dict(
        name=name, n=n, threshold=threshold, passing=passing, capped=capped, build_s=build_s,
        t_gliner=t_gliner, t_relex=t_relex, gliner_warm_s=gliner_warm_s,
        cold_s=cold_s, compile_overhead_s=cold_s - t_relex, shapes=cold_shapes, cold_trace_s=cold_trace_s,
        shapes_after=len(relex.compiled_shapes), cold_compiles=cold_compiles, cold_compile_s=cold_compile_s,
        timed_compiles=timed_compiles, timed_compile_s=timed_compile_s,
        prepare_share=statistics.median(s["prepare"] for s in shares),
        decode_share=statistics.median(s["decode"] for s in shares),
        prepare_s=statistics.median(s["prepare"] * t for s, t in zip(shares, relex_times)),
        ents=(sum(map(len, g_ents)) / n, sum(map(len, r_ents)) / n),
        rels=(sum(map(len, g_rels)) / n, sum(map(len, r_rels)) / n),
        entity_mismatch=len(entity_mismatch), relation_mismatch=len(relation_mismatch), margin=margin,
        score_diff=score_difference(g_ents, r_ents), stable=stable,
        encoder=f"{relex.config.encoder.num_hidden_layers}x{relex.config.encoder.hidden_size}",
        head=f"width {cfg.hidden_size}, max_width {cfg.max_width}",
    )
    del model, relex
    gc.collect()
    return result


# ------------------------------------------------------------------------------------------------
# Report
# ------------------------------------------------------------------------------------------------


def machine_line() -> str:
    import gliner
    import jaxlib
    import tokenizers
    import transformers

    ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    cpu = platform.processor() or "unknown CPU"
    with contextlib.suppress(OSError):
        with open("/proc/cpuinfo") as info:
            cpu = next((line.split(":", 1)[1].strip() for line in info if line.startswith("model name")), cpu)
    return (
        f"CPU ({platform.machine()}, {os.cpu_count()} cores, {ram:.0f} GiB RAM; {cpu}), "
        f"Python {platform.python_version()}, gliner {gliner.__version__}, torch {torch.__version__} "
        f"({torch.get_num_threads()} threads, set to the CPU count), transformers {transformers.__version__}, "
        f"jax {jax.__version__} / jaxlib {jaxlib.__version__} (default threading, {jax.device_count()} "
        f"{jax.default_backend()} device), tokenizers {tokenizers.__version__}"
    )


def tables(results: list[dict]) -> str:
    import gliner

    speed = [
        "| model | implementation | median pass (s) | texts/s | vs gliner |",
        "|---|---|---|---|---|",
    ]
    for r in results:
        speed.append(f"| {r['name']} | gliner {gliner.__version__} `inference` | {r['t_gliner']:.2f} | "
                     f"{r['n'] / r['t_gliner']:.1f} | 1.00x |")
        speed.append(f"| {r['name']} | relex-jax `RelexModel.inference` | {r['t_relex']:.2f} | "
                     f"{r['n'] / r['t_relex']:.1f} | {r['t_gliner'] / r['t_relex']:.2f}x |")
    details = [
        "| model | threshold | candidate spans passing / text (mean, max) | entities / text (gliner, relex-jax) "
        "| relations / text (gliner, relex-jax) | texts with different entities / relations | relex-jax forward shapes "
        "| XLA compiles in cold pass (s) | compile overhead: cold - warm (s) | relex-jax prepare (split + tokenize) share "
        "| decode share |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        details.append(
            f"| {r['name']} | {r['threshold']:.4g} | {r['passing'].mean():.1f}, {r['passing'].max()} "
            f"| {r['ents'][0]:.2f}, {r['ents'][1]:.2f} | {r['rels'][0]:.2f}, {r['rels'][1]:.2f} "
            f"| {r['entity_mismatch']} / {r['relation_mismatch']} of {r['n']} | {r['shapes']} "
            f"| {r['cold_compiles']} ({r['cold_compile_s']:.1f}) | {r['compile_overhead_s']:.1f} "
            f"| {100 * r['prepare_share']:.1f}% ({r['prepare_s']:.2f} s) | {100 * r['decode_share']:.1f}% |"
        )
    return "\n".join(speed) + "\n\n" + "\n".join(details)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", choices=(*MODELS, "both"), default="both")
    parser.add_argument("--texts", type=int, default=576, help="texts per pass (CoNLL04 test repeated; 576 = 2 passes)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--spans-per-text", type=float, default=12.0,
                        help="mean candidate spans per text that should pass the entity threshold")
    parser.add_argument("--relation-threshold", type=float, default=0.5,
                        help="relation threshold of both sides (the entity threshold is calibrated)")
    parser.add_argument("--max-spans-per-text", type=int, default=64,
                        help="raise the threshold so that no calibrated text keeps more candidate spans")
    parser.add_argument("--calibration-texts", type=int, default=0,
                        help="distinct texts the threshold calibration reads (0: all of them)")
    parser.add_argument("--record", action="store_true", help="append the result to benchmarks/RESULTS.md")
    args = parser.parse_args()
    if min(args.texts, args.batch_size, args.rounds, args.max_spans_per_text) < 1 or args.spans_per_text <= 0:
        parser.error("--texts, --batch-size, --rounds, --spans-per-text and --max-spans-per-text must be positive")
    if args.calibration_texts < 0:
        parser.error("--calibration-texts must be 0 (all distinct texts) or positive")
    if not 0 <= args.relation_threshold <= 1:
        parser.error("--relation-threshold must be in [0, 1]")

    started = time.perf_counter()
    texts, distinct = load_texts(args.texts)
    torch.set_num_threads(os.cpu_count() or 1)
    compiles = CompileCounter()
    names = MODELS if args.model == "both" else (args.model,)
    results = [bench_model(name, texts, args, compiles) for name in names]

    table = tables(results)
    notes = []
    for r in results:
        words = f"{r['encoder']} encoder, head {r['head']}"
        extra = []
        if r["timed_compiles"] or r["shapes_after"] != r["shapes"]:
            extra.append(f"{r['timed_compiles']} XLA compilations ({r['timed_compile_s']:.1f} s) and "
                         f"{r['shapes_after'] - r['shapes']} new forward shapes during the timed rounds")
        if not r["stable"]:
            extra.append("timed-round entity lists differ from the warm-up pass")
        if r["entity_mismatch"] or r["relation_mismatch"]:
            extra.append(f"OUTPUTS DIFFER on {r['entity_mismatch']} texts (entities) / "
                         f"{r['relation_mismatch']} texts (relations)"
                         + (f"; entities found by one side only score at most {r['margin']:.1e} from the threshold"
                            if r["margin"] is not None else ""))
        notes.append(
            f"{r['name']} ({words}): gliner warm-up pass {r['gliner_warm_s']:.2f} s, relex-jax cold pass "
            f"{r['cold_s']:.2f} s ({r['cold_trace_s']:.1f} s of it tracing + lowering); max entity score difference "
            f"{r['score_diff']:.1e}"
            + ("; " + "; ".join(extra) if extra else "")
        )
    small_note = f"; small re-drawn at std {SMALL_STD}" if "small" in names else ""
    summary = (
        f"{args.texts} texts per pass (the {distinct} CoNLL04 test sentences in file order, repeated), "
        f"{len(LABELS)} entity labels ({', '.join(LABELS)}) and {len(RELATIONS)} relation labels "
        f"({', '.join(RELATIONS)}), batch size {args.batch_size}, flat NER, float32, random weights "
        f"(tests/gliner_fixtures.py{small_note}), entity threshold calibrated with gliner's "
        f"forward on {len(results[0]['passing'])} distinct texts "
        f"for ~{args.spans_per_text:g} candidate spans per text, at most {args.max_spans_per_text} in any text "
        f"(relation threshold {args.relation_threshold:g}); "
        f"one untimed warm-up pass each, then {args.rounds} alternating timed round{'s' if args.rounds > 1 else ''}, "
        f"medians. relex-jax groups "
        f"texts by length before batching (gliner batches in input order). Shares are of relex-jax's median "
        f"pass. {'; '.join(notes)}. Machine: {machine_line()}"
    )
    command = (
        f"python benchmarks/inference.py --model {args.model} --texts {args.texts} --batch-size {args.batch_size} "
        f"--rounds {args.rounds} --spans-per-text {args.spans_per_text:g} "
        f"--max-spans-per-text {args.max_spans_per_text} "
        f"--relation-threshold {args.relation_threshold:g}"
        + (f" --calibration-texts {args.calibration_texts}" if args.calibration_texts else "")
        + " --record"
    )
    title = "End-to-end inference (strings in, dicts out), " + (
        "tiny and deberta-v3-small-shaped models" if args.model == "both"
        else {"tiny": "tiny test model", "small": "deberta-v3-small-shaped model"}[args.model]
    )
    finish(title, command, table, summary, args.record, started)


if __name__ == "__main__":
    main()
