"""CoNLL04 from random weights: relex-jax's training loop vs gliner's Trainer, same start, same
hyper-parameters, same metric.

    python benchmarks/conll04.py [--model tiny|small] [--steps 1000] [--seeds 0 1 2] [--batch-size 8]
                                 [--threshold 0.5] [--record]

No pretrained DeBERTa weights can be fetched here, so both sides train from one random start per
seed, built by relex-jax's own `model.init: scratch` (a byte-pair tokenizer trained on the CoNLL04
train texts plus gliner's prompt tokens; random weights from the seed). That start is written as
a relex-jax model directory and converted to a gliner checkpoint (`relex_to_gliner`), so gliner
starts from exactly the same weights and tokenizer.

  relex-jax  `relex_jax.training.train` (the loop behind `relex-jax train`): its data stream, its
             collation (type sampling and augmentation as gliner's, `type_order: sorted`), bucketed
             shapes (`default_buckets`), the jitted step, a checkpoint at the end and the
             final model directory.
  gliner     gliner 0.2.29's `Trainer` (transformers' Trainer) with the model's own data collator,
             random sampling, no checkpoints, then `save_pretrained`.

Both: ../shared/data/conll04/train.jsonl (922 sentences, the dataset's own type names, labels drawn
from each batch as gliner's collator does), batch --batch-size, --steps optimizer steps, AdamW with
gliner's parameter groups (HYPER below), linear schedule with 10% warmup, clipping 1.0, summed
focal/BCE loss with gliner's defaults, dropout as configured (on), float32. Seeds set the start, the
data order, dropout and augmentation on each side (the two sides' random streams differ: that is
what the 3 seeds measure). Wall time per side covers everything from loading the start to the saved
model, both running in this one process, alternately (which side goes first alternates by seed).

Evaluation is the same for both: the gliner side's saved model is converted back to relex-jax
(`gliner_to_relex`, whose parity with gliner is tested in tests/test_convert.py and
tests/test_inference.py) and both are scored by `relex_jax.evaluation.evaluate` on
../shared/data/conll04/test.jsonl (the dataset's own tokens; all 4 entity and 5 relation types
asked for in every text; threshold --threshold; micro P/R/F1, strict and boundaries-only).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "conll04"
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import jax  # noqa: E402
from gliner_fixtures import torch  # noqa: E402

from common import finish  # noqa: E402
from inference import CompileCounter, machine_line  # noqa: E402
from relex_jax.checkpoint.convert import gliner_to_relex, relex_to_gliner, save_relex_dir  # noqa: E402
from relex_jax.data.training import read_jsonl  # noqa: E402
from relex_jax.evaluation import evaluate  # noqa: E402
from relex_jax.inference import RelexModel  # noqa: E402
from relex_jax.training.config import config_from_dict  # noqa: E402
from relex_jax.training.init import ModelInit, initial_model  # noqa: E402
from relex_jax.training.loop import train  # noqa: E402

warnings.filterwarnings("ignore", message="Some donated buffers were not usable")

_DEBERTA_V3 = dict(max_position_embeddings=512, relative_attention=True, position_buckets=256,
                   pos_att_type="p2c|c2p", share_att_key=True, norm_rel_ebd="layer_norm", position_biased_input=False,
                   hidden_dropout_prob=0.1, attention_probs_dropout_prob=0.1)
MODELS = {  # DeBERTa-v3-shaped encoders under the released relex head layout (all pairs + pair MLP)
    "tiny": dict(vocab_size=2000,
                 encoder=dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128,
                              **_DEBERTA_V3),
                 gliner=dict(hidden_size=64, max_width=8, relations_layer="none", dropout=0.1, max_len=384)),
    "small": dict(vocab_size=4000,
                  encoder=dict(hidden_size=256, num_hidden_layers=4, num_attention_heads=4, intermediate_size=1024,
                               **_DEBERTA_V3),
                  gliner=dict(hidden_size=256, max_width=8, relations_layer="none", dropout=0.1, max_len=384)),
}
# gliner's create_training_args fields, the same on both sides (random weights learn at 1e-3)
HYPER = dict(learning_rate=1e-3, others_lr=1e-3, weight_decay=0.01, others_weight_decay=0.01, warmup_ratio=0.1,
             lr_scheduler_type="linear", max_grad_norm=1.0)
LOSS = dict(loss_reduction="sum")


def log_every(args) -> int:
    """Loss logging cadence, the same on both sides."""
    return min(50, args.steps)


def build_start(model: str, seed: int, directory: Path, train_examples) -> tuple[Path, Path]:
    """The shared random start: a relex-jax model directory and the gliner checkpoint converted from it."""
    spec = ModelInit(init="scratch", **MODELS[model])
    init = initial_model(spec, jax.random.PRNGKey(seed), directory / "start_work",
                         [ex.tokens for ex in train_examples])
    relex_dir = save_relex_dir(directory / "start_relex", init.config, init.variables, init.tokenizer_dir)
    return relex_dir, relex_to_gliner(relex_dir, directory / "start_gliner")


def train_relex(start: Path, seed: int, args, directory: Path, compiles: CompileCounter) -> dict:
    config = config_from_dict({
        "seed": seed,
        "model": {"init": "checkpoint", "path": str(start)},
        "data": {"train": str(DATA / "train.jsonl"), "batch_size": args.batch_size},
        "loss": LOSS,
        "optim": dict(HYPER, max_steps=args.steps),
        "train": {"log_every_n_steps": log_every(args), "progress": False},
        "checkpoint": {"every_n_steps": args.steps, "keep": 1},
    })
    mark = compiles.mark()
    started = time.perf_counter()
    summary = train(config, directory / "relex_run", devices=jax.devices()[:1])
    wall = time.perf_counter() - started
    n_compiles, compile_s = compiles.since(mark)
    log = [json.loads(line) for line in (directory / "relex_run" / "metrics.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in log if "loss" in r]
    return dict(wall=wall, model_dir=Path(summary["model_dir"]), first_loss=losses[0], last_loss=losses[-1],
                compiles=n_compiles, compile_s=compile_s)


def train_gliner(start: Path, seed: int, args, directory: Path, records: list[dict]) -> dict:
    import random

    from gliner import GLiNER
    from gliner.training.trainer import Trainer

    started = time.perf_counter()
    random.seed(seed)  # gliner's collator draws negatives and augmentation from Python's `random`
    model = GLiNER.from_pretrained(str(start))
    training_args = type(model).create_training_args(
        output_dir=str(directory / "gliner_trainer"), use_cpu=True, dataloader_num_workers=0, save_strategy="no",
        report_to="none", max_steps=args.steps, per_device_train_batch_size=args.batch_size, seed=seed,
        logging_steps=log_every(args), disable_tqdm=True, remove_unused_columns=False, **HYPER, **LOSS,
    )
    trainer = Trainer(model=model, args=training_args, processing_class=model.data_processor.transformer_tokenizer,
                      train_dataset=records, data_collator=model._create_data_collator())
    trainer.train()
    out = directory / "gliner_model"
    model.save_pretrained(str(out))
    wall = time.perf_counter() - started
    losses = [r["loss"] for r in trainer.state.log_history if "loss" in r]
    if trainer.state.global_step != args.steps:
        sys.exit(f"error: gliner's Trainer ran {trainer.state.global_step} steps, not {args.steps}")
    return dict(wall=wall, model_dir=out, first_loss=losses[0], last_loss=losses[-1])


def score(model_dir: Path, test, entity_types, relation_types, threshold: float) -> dict:
    model = RelexModel.from_pretrained(model_dir, devices=jax.devices()[:1])
    report = evaluate(model, test, entity_types, relation_types, threshold=threshold, batch_size=32)
    return {
        "entity": report["entities"]["strict"], "relation": report["relations"]["strict"],
        "relation_boundaries": report["relations"]["boundaries"],
    }


def run_seed(seed: int, args, train_examples, test, types, compiles) -> dict[str, dict]:
    records = [ex.to_gliner() for ex in train_examples]
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        start_relex, start_gliner = build_start(args.model, seed, directory, train_examples)
        results = {}
        order = ("gliner", "relex") if seed % 2 == 0 else ("relex", "gliner")
        for side in order:
            print(f"[seed {seed}] training {side} for {args.steps} steps ...", flush=True)
            if side == "relex":
                results[side] = train_relex(start_relex, seed, args, directory, compiles)
                trained = results[side]["model_dir"]
            else:
                results[side] = train_gliner(start_gliner, seed, args, directory, records)
                trained = gliner_to_relex(results[side]["model_dir"], directory / "gliner_as_relex")
            results[side].update(score(trained, test, *types, args.threshold), order=order.index(side))
            r = results[side]
            print(f"[seed {seed}] {side}: {r['wall']:.0f} s ({args.steps / r['wall']:.2f} steps/s), loss "
                  f"{r['first_loss']:.1f} -> {r['last_loss']:.1f}, test entity F1 {100 * r['entity']['f1']:.1f}, "
                  f"relation F1 {100 * r['relation']['f1']:.1f} strict / "
                  f"{100 * r['relation_boundaries']['f1']:.1f} boundaries", flush=True)
    return results


def pct(metric: dict) -> str:
    return f"{100 * metric['precision']:.1f} / {100 * metric['recall']:.1f} / **{100 * metric['f1']:.1f}**"


def tables(runs: dict[int, dict[str, dict]], steps: int) -> str:
    import gliner

    names = {"gliner": f"gliner {gliner.__version__} Trainer", "relex": "relex-jax `train`"}
    rows = ["| seed | implementation | train wall (s) | steps/s | vs gliner | loss first -> last logged "
            "| entity P / R / F1 | relation P / R / F1 (strict) | relation F1 (boundaries) |",
            "|---|---|---|---|---|---|---|---|---|"]
    for seed, sides in runs.items():
        for side in ("gliner", "relex"):
            r = sides[side]
            rows.append(f"| {seed} | {names[side]} | {r['wall']:.0f} | {steps / r['wall']:.2f} "
                        f"| {sides['gliner']['wall'] / r['wall']:.2f}x | {r['first_loss']:.1f} -> {r['last_loss']:.1f} "
                        f"| {pct(r['entity'])} | {pct(r['relation'])} | {100 * r['relation_boundaries']['f1']:.1f} |")
    summary = ["| implementation | train wall (s), mean | steps/s, mean | entity F1, mean ± sd "
               "| relation F1 strict, mean ± sd | relation F1 boundaries, mean ± sd |",
               "|---|---|---|---|---|---|"]

    def spread(values: list[float]) -> str:
        sd = statistics.stdev(values) if len(values) > 1 else 0.0
        return f"{100 * statistics.mean(values):.1f} ± {100 * sd:.1f}"

    for side in ("gliner", "relex"):
        sides = [s[side] for s in runs.values()]
        wall = statistics.mean(r["wall"] for r in sides)
        summary.append(f"| {names[side]} | {wall:.0f} | {steps / wall:.2f} | {spread([r['entity']['f1'] for r in sides])} "
                       f"| {spread([r['relation']['f1'] for r in sides])} "
                       f"| {spread([r['relation_boundaries']['f1'] for r in sides])} |")
    return "\n".join(summary) + "\n\n" + "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", choices=tuple(MODELS), default="tiny")
    parser.add_argument("--steps", type=int, default=1000, help="optimizer steps per side and seed")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--threshold", type=float, default=0.5, help="entity (and relation) threshold at evaluation")
    parser.add_argument("--record", action="store_true", help="append the result to benchmarks/RESULTS.md")
    args = parser.parse_args()
    if min(args.steps, args.batch_size) < 1 or not 0 < args.threshold < 1:
        parser.error("--steps and --batch-size must be positive and --threshold in (0, 1)")
    for split in ("train", "test"):
        if not (DATA / f"{split}.jsonl").is_file():
            sys.exit(f"error: {DATA / f'{split}.jsonl'} not found (the benchmark needs ../shared/data/conll04)")

    started = time.perf_counter()
    torch.set_num_threads(os.cpu_count() or 1)
    train_examples, test = read_jsonl(DATA / "train.jsonl"), read_jsonl(DATA / "test.jsonl")
    types = (sorted({e[2] for ex in test for e in ex.entities}), sorted({r[2] for ex in test for r in ex.relations}))
    compiles = CompileCounter()
    runs = {seed: run_seed(seed, args, train_examples, test, types, compiles) for seed in args.seeds}

    relex = [s["relex"] for s in runs.values()]
    spec = MODELS[args.model]
    encoder = spec["encoder"]
    summary = (
        f"CoNLL04 train ({len(train_examples)} sentences) -> test ({len(test)} sentences), {args.steps} optimizer "
        f"steps of batch {args.batch_size} ({args.steps * args.batch_size / len(train_examples):.1f} epochs) per "
        f"side and seed, from one random start per seed shared by both sides ({args.model}: DeBERTa-v3-shaped "
        f"encoder {encoder['num_hidden_layers']} layers x hidden {encoder['hidden_size']}, byte-pair tokenizer of "
        f"{spec['vocab_size']} pieces trained on the train texts, relex head width {spec['gliner']['hidden_size']}, "
        f"max_width {spec['gliner']['max_width']}, all pairs + pair MLP, dropout 0.1); AdamW lr "
        f"{HYPER['learning_rate']:g} (encoder and heads), weight decay {HYPER['weight_decay']:g}, linear schedule, "
        f"{HYPER['warmup_ratio']:.0%} warmup, clipping {HYPER['max_grad_norm']:g}, summed loss, gliner's collation "
        f"defaults (type sampling, augmentation) on both sides. Wall time: loading the start to the saved model; "
        f"relex-jax's includes its XLA compilations ({statistics.mean(r['compiles'] for r in relex):.0f} per run, "
        f"{statistics.mean(r['compile_s'] for r in relex):.0f} s on average; bucketed shapes) and an Orbax "
        f"checkpoint. Scores: `relex_jax.evaluation.evaluate` on the test set's own tokens, the 4 entity and 5 "
        f"relation types asked for in every text, threshold {args.threshold:g}, micro P/R/F1 in %, gliner's trained "
        f"weights converted with `gliner_to_relex`; sd over seeds. Machine: {machine_line()}"
    )
    command = (f"python benchmarks/conll04.py --model {args.model} --steps {args.steps} --seeds "
               f"{' '.join(map(str, args.seeds))} --batch-size {args.batch_size} --threshold {args.threshold:g} --record")
    finish(f"CoNLL04 training from random weights, {args.model} model", command, tables(runs, args.steps), summary,
           args.record, started)


if __name__ == "__main__":
    main()
