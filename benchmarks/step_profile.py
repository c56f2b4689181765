"""Where a training step's time goes: XLA's own per-operation times, attributed to parts of the model.

    python benchmarks/step_profile.py [--model tiny|small|minilm] [--relex-config JSON] [--steps 5]
                                      [--batches 40] [--record]

Builds the CoNLL04 training run of benchmarks/conll04.py (same start, hyper-parameters and
`--relex-config` overrides; packed steps unless the config sets `data.packing` to null), collates
its first --batches steps, takes those of the most common shape, compiles the jitted train step
for it (dropout on, as in training) and times --steps of them, then runs them again under
`jax.profiler` and reads the trace: every XLA operation's time, on every thread, attributed by the
`op_name` metadata the compiled program keeps (the Flax module path and the JAX primitive that
produced it) to one of the parts below. On a CPU the operations of one step run on several threads
at once, so the parts' sum (thread time) exceeds the step's wall time; the shares are of the sum.

Parts (first match wins, in this order): dropout masks (random bits: `bernoulli`, `random_bits`,
the threefry hash), the encoder's relative-position terms (DeBERTa's c2p / p2c scores and their
re-indexing), the rest of encoder attention, the rest of the encoder (embeddings, dense layers,
norms), the BiLSTM, span representations, prompt representations, the relation stage (pair MLP
and relation scores), and the rest (entity scores, losses, the optimizer, glue).
"""

from __future__ import annotations

import argparse
import collections
import glob
import gzip
import json
import os
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import jax  # noqa: E402

from common import finish  # noqa: E402
from conll04 import DATA, LOSS, MODELS, build_start, describe, hyper, merged  # noqa: E402
from inference import machine_line  # noqa: E402
from relex_jax.data.collate import CollateConfig, collate  # noqa: E402
from relex_jax.data.readers import read_jsonl  # noqa: E402
from relex_jax.training.config import config_from_dict  # noqa: E402
from relex_jax.training.init import initial_model  # noqa: E402
from relex_jax.training.losses import LossConfig  # noqa: E402
from relex_jax.data.stream import BatchStream  # noqa: E402
from relex_jax.training.loop import default_buckets  # noqa: E402
from relex_jax.training.optim import make_optimizer  # noqa: E402
from relex_jax.training.packing import PackedStream, plan_packing  # noqa: E402
from relex_jax.training.step import StepBatch, create_train_state, make_train_step, training_module  # noqa: E402

# (part, pattern on the op_name path): the first that matches names an operation's part.
PARTS = (
    ("dropout masks (random bits)", r"bernoulli|random_bits|threefry|Dropout.*/(?:add|shift|or|xor|while)"),
    ("encoder: relative-position terms", r"attention/self/(?:bhqd,hrd|bhkd,hrd|.*pad|.*rel)"),
    ("encoder: other attention", r"attention/self"),
    ("encoder: embeddings, dense layers, norms", r"backbone|encoder"),
    ("BiLSTM", r"/rnn/"),
    ("span representations", r"span_rep|out_project"),
    ("prompt representations", r"prompt_rep"),
    ("relation stage (pair MLP, relation scores)", r"relate"),
)
OTHER = "entity scores, losses, optimizer, glue"


def step_batches(config, init, examples, batches: int) -> tuple[list, str]:
    """The run's first `batches` step batches (packed or bucketed, as `train` builds them)."""
    collate_config = CollateConfig.from_relex_config(init.config, **config.data.collate)
    buckets = default_buckets(examples, collate_config, config.data.buckets)
    if config.data.packing is not None:
        plan = plan_packing(examples, init.tokenizer, collate_config, config.data.batch_size, buckets,
                            config.data.packing, config.seed)
        stream = PackedStream(examples, plan, init.tokenizer, collate_config, buckets, config.seed)
        how = (f"packed: {plan.rows} rows x {plan.tokens_per_row} tokens, {plan.max_texts} text slots, shape "
               f"classes (words, gold entities) {list(zip(plan.word_sizes, plan.gold_entities))}")
        return [stream.step_batch(i)[0] for i in range(batches)], how
    stream = BatchStream(examples, config.data.batch_size, config.seed)
    out = []
    for i in range(batches):
        chunk, rng, _ = stream.batch(i)
        out.append(StepBatch.from_training_batch(collate(chunk, init.tokenizer, collate_config, rng, buckets=buckets)))
    return out, "bucketed (data.buckets)"


def op_parts(hlo_text: str) -> dict[str, str]:
    """Each named HLO instruction of the compiled program -> its part (from its op_name metadata)."""
    parts = {}
    for line in hlo_text.splitlines():
        found = re.match(r"\s*(?:ROOT )?%?([\w.\-]+) = .*?op_name=\"([^\"]+)\"", line)
        if found and found.group(1) not in parts:
            op = found.group(2)
            parts[found.group(1)] = next((part for part, pattern in PARTS if re.search(pattern, op)), OTHER)
    return parts


def traced_parts(trace_dir: str, parts: dict[str, str], steps: int) -> dict[str, float]:
    """Milliseconds per step of each part: the trace's complete events named after an HLO instruction
    (on a GPU the kernel's `hlo_op` argument names it), summed over threads and streams."""
    [path] = glob.glob(os.path.join(trace_dir, "plugins", "profile", "*", "*perfetto_trace.json.gz"))
    with gzip.open(path) as f:
        trace = json.load(f)
    totals: collections.Counter = collections.Counter()
    for event in trace["traceEvents"] if isinstance(trace, dict) else trace:
        if event.get("ph") != "X":
            continue
        name = (event.get("args") or {}).get("hlo_op", event.get("name"))
        if name in parts:
            totals[parts[name]] += event.get("dur", 0) / 1e3 / steps
    return dict(totals)


def profile(args) -> dict:
    examples_path = DATA / "train.jsonl"
    if not examples_path.is_file():
        sys.exit(f"error: CoNLL04 train split not found at {examples_path}")
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        start, _ = build_start(args.model, 0, directory, read_jsonl(examples_path))
        config = config_from_dict(merged({
            "seed": 0, "model": {"init": "checkpoint", "path": str(start)},
            "data": {"train": str(examples_path), "batch_size": args.batch_size, "packing": {}},
            "loss": LOSS, "optim": dict(hyper(args.model), max_steps=1000),
        }, args.relex_config))
        examples = read_jsonl(examples_path)
        init = initial_model(config.model, jax.random.PRNGKey(0), directory / "work", (ex.tokens for ex in examples))
        batches, how = step_batches(config, init, examples, args.batches)
    shapes = collections.Counter(jax.tree_util.tree_map(lambda x: x.shape, b) for b in batches)
    shape, count = shapes.most_common(1)[0]
    chosen = [b for b in batches if jax.tree_util.tree_map(lambda x: x.shape, b) == shape]
    optimizer = make_optimizer(config.optim)
    module = training_module(init.config, config.optim, remat=config.train.remat)
    train_step = make_train_step(module, LossConfig.from_relex_config(init.config, **config.loss), config.optim,
                                 optimizer=optimizer, dropout=True)
    state = create_train_state(init.variables, optimizer)
    rng = jax.random.key(0)
    started = time.perf_counter()
    compiled = train_step.lower(state, chosen[0], rng).compile()
    compile_s = time.perf_counter() - started
    analysis = compiled.cost_analysis()
    flops = float((analysis[0] if isinstance(analysis, (list, tuple)) else analysis)["flops"])

    def run(n: int) -> list[float]:
        nonlocal state
        times = []
        for i in range(n):
            begin = time.perf_counter()
            state, metrics = compiled(state, chosen[i % len(chosen)], rng)
            jax.block_until_ready(metrics)
            times.append(time.perf_counter() - begin)
        return times

    run(2)
    step_s = statistics.median(run(args.steps))
    with tempfile.TemporaryDirectory() as trace_dir:
        jax.profiler.start_trace(trace_dir, create_perfetto_trace=True)
        run(args.steps)
        jax.profiler.stop_trace()
        per_part = traced_parts(trace_dir, op_parts(compiled.as_text()), args.steps)
    texts = [int((b.text_lengths > 0).sum()) for b in chosen]
    return dict(model=args.model, how=how, shape=dict(tokens=shape.input_ids, span_mask=shape.span_mask),
                distinct_shapes=len(shapes), batches_of_shape=count, step_s=step_s, compile_s=compile_s,
                flops=flops, per_part=per_part, texts=statistics.mean(texts))


def table(result: dict) -> str:
    total = sum(result["per_part"].values())
    lines = ["| part of the train step | ms per step (thread time) | share |", "|---|---|---|"]
    for part in [p for p, _ in PARTS] + [OTHER]:
        ms = result["per_part"].get(part, 0.0)
        lines.append(f"| {part} | {ms:.1f} | {100 * ms / total:.0f}% |")
    lines.append(f"| all XLA operations | {total:.1f} | 100% |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", choices=sorted(MODELS), default="tiny")
    parser.add_argument("--relex-config", type=json.loads, default={},
                        help="JSON merged into the training config, as in benchmarks/conll04.py")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--batches", type=int, default=40, help="step batches collated to pick a shape from")
    parser.add_argument("--steps", type=int, default=5, help="steps timed, then traced")
    parser.add_argument("--record", action="store_true")
    args = parser.parse_args()
    started = time.perf_counter()
    result = profile(args)
    print(json.dumps(result, indent=1))
    command = f"python benchmarks/step_profile.py --model {args.model} --steps {args.steps} --batches {args.batches}"
    if args.relex_config:
        command += f" --relex-config '{json.dumps(args.relex_config)}'"
    summary = (
        f"CoNLL04 train steps of relex-jax's training run ({describe(args.model)}; batch size {args.batch_size}, "
        f"dropout on, float32{', config overridden by ' + json.dumps(args.relex_config) if args.relex_config else ''})"
        f", {result['how']}. The most common of {result['distinct_shapes']} step shapes among the first "
        f"{args.batches} steps ({result['batches_of_shape']} of them; span grid {list(result['shape']['span_mask'])}, "
        f"token grid {list(result['shape']['tokens'])}, {result['texts']:.1f} texts per step): median step "
        f"{1e3 * result['step_s']:.1f} ms over {args.steps} steps, {result['flops'] / 1e9:.2f} GFLOP (XLA cost "
        f"analysis), compiled in {result['compile_s']:.1f} s. Part times: XLA's per-operation events from a "
        f"`jax.profiler` trace of {args.steps} more steps, attributed by each operation's op_name metadata "
        f"(benchmarks/step_profile.py says how), summed over threads. Machine: {machine_line()}"
    )
    finish(f"Train step profile, {args.model} model", command, table(result), summary, args.record, started)


if __name__ == "__main__":
    main()
