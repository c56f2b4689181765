"""Training step throughput: relex-jax's jitted `make_train_step` vs gliner's training step, in one run.

    python benchmarks/train_step.py [--model tiny|small|both] [--batch-size 8] [--batches 4] [--warmup 2]
                                    [--steps 10] [--rounds 3] [--matmul-size 2048] [--record]

Models (random weights, built by the test fixtures, tests/gliner_fixtures.py, exactly as
benchmarks/inference.py builds them; relex-jax converts the same gliner checkpoint in memory):
  tiny   the tests' default fixture (2 layers, hidden 64, gliner width 64, max_width 4);
  small  a deberta-v3-small-shaped backbone (6 layers, hidden 768, 12 heads, intermediate 3072)
         under the released relex head (gliner width 768, max_width 12), weights re-drawn at std 0.1.
Data: the first --batches x --batch-size CoNLL04 train sentences (../shared/data/conll04/train.jsonl,
file order; types renamed person / location / organization / other and works for / located in /
based in / lives in / kills), every text with all 4 entity and 5 relation labels as fixed label
lists (no type sampling, no augmentation, no shuffling: both sides get identical batches). Without
the file, generated sentences (three templated clauses each) with the same labels stand in, and the
output says so.

Both sides run the same sequence of batches (batch i % --batches at step i) from the same weights
with the same optimizer settings: AdamW with gliner's four parameter groups (encoder lr 1e-5, others
lr 5e-5, weight decay 0.01 for both), linear schedule with 10% warmup over all the steps the run
makes, global-norm clipping at 1.0, batch size --batch-size, no gradient accumulation, float32,
dropout OFF on both sides (gliner: every nn.Dropout set to p=0, which torch skips on CPU; relex-jax:
`dropout=False`), so that their losses can be compared step by step.

  gliner    one step = `Trainer.training_step` of gliner's own Trainer (model.train(), gliner's
            `compute_loss`: the model's forward with labels and its loss, backward), then
            `clip_grad_norm_`, `optimizer.step()`, `lr_scheduler.step()`, `model.zero_grad()`: HF
            Trainer's inner loop without its data loader, callbacks, logging or progress bar. The
            optimizer and scheduler are the Trainer's own (`create_optimizer_and_scheduler`; gliner's
            TrainingArguments default `optim="adamw_torch"`: torch.optim.AdamW, which on the CPU
            runs its per-parameter loop, neither foreach nor fused; the output names what ran).
            torch uses as many threads as there are CPUs; jax / XLA its defaults.
  relex-jax one step = `make_train_step(...)` (jitted, state donated) on a `StepBatch` of numpy
            arrays (`StepBatch.from_training_batch`), so the time includes the host -> device
            transfer of the batch; the loss is read back to the host every step (as gliner's).
Collation is done beforehand for both sides and timed separately once per batch: relex-jax's
`collate` (+ `StepBatch`), and gliner's own data collator on the same records (whose output is also
checked against ours, array by array: it is what the gliner side trains on). Shapes (--shapes):
"per-batch" (default) gives relex-jax each batch at gliner's own padded size (its maxima), so both
sides do the same work; relex-jax compiles once per distinct shape, in the warm-up, which then
runs at least one step per batch. "common" pads every relex-jax batch to the largest sizes over the
--batches batches (one compilation, more work than gliner: the padding overhead is printed), which
is closer to a bucketed training run.

Timing: --warmup untimed steps per side first (relex-jax's first step is its cold step: tracing and
XLA compilation, timed, compilations counted through jax.monitoring), then --rounds rounds of
--steps timed steps per side, the two sides alternating (which side goes first alternates too);
every step is timed on its own; medians over all timed steps are reported.

FLOPs: the XLA cost analysis of the compiled train step (`train_step.lower(...).compile()
.cost_analysis()["flops"]`; XLA counts 2 per multiply-add and 1 per elementwise op). XLA counts a
while loop's body once, and the BiLSTM's recurrence is a `lax.scan` (a while loop) over the words,
forward and transposed in the backward pass: its missing W - 1 iterations (h @ W_hh: 16 B H^2
forward, 32 B H^2 backward per step and layer) are added analytically, after checking that these
are the only while loops. The count is for relex-jax's padded shapes; the same count is applied to
gliner's step time (its own batches are a little smaller, so its achieved FLOP/s is an upper bound).
"Peak" is what this machine achieves on a large float32 matmul (--matmul-size squared, jax and
torch, the better of the two), measured in the same run right after the timed rounds: an
MFU-style fraction against a measured, not a datasheet, peak.
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import os
import random
import re
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
CONLL04_TRAIN = ROOT.parent / "shared" / "data" / "conll04" / "train.jsonl"
ENTITY_NAMES = {"Peop": "person", "Loc": "location", "Org": "organization", "Other": "other"}
RELATION_NAMES = {"Work_For": "works for", "Located_In": "located in", "OrgBased_In": "based in",
                  "Live_In": "lives in", "Kill": "kills"}
# gliner's create_training_args fields, the same on both sides
OPTIM = dict(learning_rate=1e-5, others_lr=5e-5, weight_decay=0.01, others_weight_decay=0.01, warmup_ratio=0.1,
             lr_scheduler_type="linear", max_grad_norm=1.0)
GLINER_KEYS = ("input_ids", "attention_mask", "words_mask", "text_lengths", "span_idx", "span_mask", "labels",
               "rel_matrix")

sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
from gliner_fixtures import torch  # noqa: E402

from common import finish  # noqa: E402
from inference import LABELS, MODELS, RELATIONS, SMALL_STD, CompileCounter, build, machine_line  # noqa: E402
from relex_jax.checkpoint.gliner import load_gliner_checkpoint  # noqa: E402
from relex_jax.data.collate import CollateConfig, collate  # noqa: E402
from relex_jax.data.readers import Example, read_jsonl  # noqa: E402
from relex_jax.training.losses import LossConfig  # noqa: E402
from relex_jax.training.optim import OptimConfig, make_optimizer  # noqa: E402
from relex_jax.training.step import StepBatch, create_train_state, make_train_step, training_module  # noqa: E402

warnings.filterwarnings("ignore", message="Some donated buffers were not usable")


# ------------------------------------------------------------------------------------------------
# Data
# ------------------------------------------------------------------------------------------------

_PEOPLE = ["Alice Smith", "Bob", "Maria Garcia", "Wei Chen", "John Novak", "Fatima", "Pierre Dubois", "Olga Ivanova"]
_ORGS = ["Google", "Siemens", "Oxford University", "the Red Cross", "Nokia", "Deutsche Bank", "Sony"]
_PLACES = ["Paris", "Berlin", "Tokyo", "Lagos", "New York", "Lima", "Oslo", "Japan", "Peru"]
_CLAUSES = [  # (text with slots, relations as (slot, slot, type)); slot "oth" is an `other` entity
    ("{per} works for {org} , which is based in {loc}", [("per", "org", "works for"), ("org", "loc", "based in")]),
    ("{per} has lived in {loc} since {oth}", [("per", "loc", "lives in")]),
    ("{loc} is located in {loc2} , a region known for {oth}", [("loc", "loc2", "located in")]),
    ("{per} was killed by {per2} near {loc}", [("per2", "per", "kills"), ("per", "loc", "lives in")]),
    ("the office of {org} in {loc} opened last year", [("org", "loc", "based in")]),
]
_OTHER = ["1990", "the Olympic Games", "March 3", "its wine", "the Nobel Prize"]
_KINDS = {"per": "person", "per2": "person", "org": "organization", "loc": "location", "loc2": "location",
          "oth": "other"}


def generated_examples(count: int, seed: int = 0) -> list[Example]:
    """Sentences of three templated clauses, annotated, with the benchmark's fixed label lists."""
    rng = random.Random(seed)
    examples = []
    for _ in range(count):
        tokens, entities, relations = [], [], []
        for c in range(3):
            text, clause_relations = rng.choice(_CLAUSES)
            fill = {"per": rng.choice(_PEOPLE), "per2": rng.choice(_PEOPLE), "org": rng.choice(_ORGS),
                    "loc": rng.choice(_PLACES), "loc2": rng.choice(_PLACES), "oth": rng.choice(_OTHER)}
            index = {}
            for word in text.split():
                slot = word[1:-1] if word.startswith("{") else None
                if slot is None:
                    tokens.append(word)
                    continue
                words = fill[slot].split()
                index[slot] = len(entities)
                entities.append((len(tokens), len(tokens) + len(words) - 1, _KINDS[slot]))
                tokens += words
            relations += [(index[h], index[t], r) for h, t, r in clause_relations]
            tokens.append("." if c == 2 else ";")
        examples.append(Example(tuple(tokens), tuple(entities), tuple(relations), tuple(LABELS), tuple(RELATIONS)))
    return examples


def load_examples(count: int, path: Path = CONLL04_TRAIN) -> tuple[list[Example], str]:
    """`count` training texts (CoNLL04 train at `path` in file order, cycled if needed) and where
    they came from."""
    if not path.is_file():
        return generated_examples(count), f"generated sentences (CoNLL04 not found at {path})"
    examples = read_jsonl(path)[:count]
    if not examples:
        sys.exit(f"error: {path} holds no sentences")
    renamed = []
    for ex in examples:
        try:
            renamed.append(dataclasses.replace(
                ex,
                entities=tuple((s, e, ENTITY_NAMES[t]) for s, e, t in ex.entities),
                relations=tuple((h, t, RELATION_NAMES[r]) for h, t, r in ex.relations),
                ner_labels=tuple(LABELS), rel_labels=tuple(RELATIONS),
            ))
        except KeyError as bad:
            sys.exit(f"error: {ex.source}: unknown CoNLL04 type {bad} (known: {ENTITY_NAMES} / {RELATION_NAMES})")
    distinct = len(renamed)
    renamed = [renamed[i % distinct] for i in range(count)]
    return renamed, f"the first {count} CoNLL04 train sentences in file order" + (
        f" ({distinct} distinct, cycled)" if distinct < count else "")


def load_tokenizer(path: Path):
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(path / "tokenizer.json"))
    tokenizer.no_padding()
    tokenizer.no_truncation()
    return tokenizer


def prepare_batches(examples, batch_size, tokenizer, config, collator, shapes: str) -> dict:
    """Collate every batch for both sides (timed once per batch), relex-jax padded per `shapes`;
    check that gliner's collator produced what our gliner forms say."""
    cfg = CollateConfig.from_relex_config(config).deterministic()
    chunks = [examples[i : i + batch_size] for i in range(0, len(examples), batch_size)]
    natural = [collate(chunk, tokenizer, cfg, gliner_forms=True) for chunk in chunks]  # each to its own maxima
    sizes = {
        "tokens": max(b.inputs.input_ids.shape[1] for b in natural),
        "words": max(b.inputs.span_mask.shape[1] for b in natural),
        "entities": max(b.inputs.entity_prompt_index.shape[1] for b in natural),
        "relations": max(b.inputs.relation_prompt_index.shape[1] for b in natural),
        "gold_entities": max(b.entity_mask.shape[1] for b in natural),
    }
    buckets = {key: (value,) for key, value in sizes.items()} if shapes == "common" else None

    relex_batches, relex_ms = [], []
    for chunk in chunks:
        start = time.perf_counter()
        batch = StepBatch.from_training_batch(collate(chunk, tokenizer, cfg, buckets=buckets))
        relex_ms.append(1e3 * (time.perf_counter() - start))
        relex_batches.append(batch)

    gliner_batches, gliner_ms, mismatched = [], [], []
    for i, (chunk, ours) in enumerate(zip(chunks, natural)):
        records = [ex.to_gliner() for ex in chunk]
        start = time.perf_counter()
        out = collator(records)
        gliner_ms.append(1e3 * (time.perf_counter() - start))
        inputs = {key: out[key] for key in GLINER_KEYS}
        for key in GLINER_KEYS:
            if not np.array_equal(inputs[key].numpy(), ours.gliner[key]):
                mismatched.append(f"batch {i} {key}")
        gliner_batches.append(inputs)

    if shapes == "per-batch":  # report the mean of the shapes relex-jax runs
        sizes = {"tokens": float(np.mean([b.input_ids.shape[1] for b in relex_batches])),
                 "words": float(np.mean([b.span_mask.shape[1] for b in relex_batches])),
                 "gold_entities": float(np.mean([b.entity_index.shape[1] for b in relex_batches]))}
    t_gliner = [b["input_ids"].shape[1] for b in gliner_batches]
    w_gliner = [int(b["text_lengths"].max()) for b in gliner_batches]
    pairs = [b["rel_matrix"].shape[1] for b in gliner_batches]
    gold = [int(b.entity_mask.sum(1).max()) for b in natural]
    return dict(
        relex=relex_batches, gliner=gliner_batches, sizes=sizes, mismatched=mismatched,
        relex_collate_ms=statistics.median(relex_ms), gliner_collate_ms=statistics.median(gliner_ms),
        gliner_tokens=float(np.mean(t_gliner)), gliner_words=float(np.mean(w_gliner)),
        gliner_pairs=float(np.mean(pairs)), gliner_gold=float(np.mean(gold)),
        real_tokens=float(np.mean([b.inputs.attention_mask.sum() for b in natural])),
    )


# ------------------------------------------------------------------------------------------------
# The two sides
# ------------------------------------------------------------------------------------------------


def gliner_collator(model):
    """gliner's training collator with augmentation and negative types off, so that it yields
    exactly the batches relex-jax's `collate(...).deterministic()` does."""
    model.config.augment_data_prob = 0.0
    model.config.max_neg_type_ratio = 0
    return model._create_data_collator()


def gliner_trainer(model, directory: Path, total_steps: int, batch_size: int, use_cpu: bool = True):
    """gliner's Trainer as `train_model` builds it (on the CPU unless `use_cpu` is False: then on
    the model's accelerator; no checkpoints, no workers), dropout off, with its optimizer and
    scheduler created for `total_steps`."""
    from gliner.training.trainer import Trainer

    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
    args = type(model).create_training_args(
        output_dir=str(directory / "trainer"), use_cpu=use_cpu, dataloader_num_workers=0, save_strategy="no",
        report_to="none", max_steps=total_steps, per_device_train_batch_size=batch_size, **OPTIM,
    )
    trainer = Trainer(model=model, args=args, processing_class=model.data_processor.transformer_tokenizer)
    trainer.create_optimizer_and_scheduler(num_training_steps=total_steps)
    return trainer


def optimizer_name(trainer) -> str:
    """What the Trainer's `optim` setting ran: the optimizer class and its foreach / fused flags."""
    defaults = trainer.optimizer.defaults
    optim = getattr(trainer.args.optim, "value", trainer.args.optim)
    return (f"optim={optim}: {type(trainer.optimizer).__module__}.{type(trainer.optimizer).__name__}"
            f"(foreach={defaults.get('foreach')}, fused={defaults.get('fused')})")


def make_gliner_step(trainer, autocast=None):
    """One gliner training step; with `autocast` (e.g. torch.bfloat16) the forward and loss run
    under `torch.autocast` of that dtype, as HF Trainer's `bf16=True` does (weights stay float32)."""
    model, optimizer, scheduler = trainer.model, trainer.optimizer, trainer.lr_scheduler
    max_norm = trainer.args.max_grad_norm
    device_type = next(model.parameters()).device.type

    def step(inputs) -> float:
        with torch.autocast(device_type, dtype=autocast, enabled=autocast is not None):
            loss = trainer.training_step(model, inputs)  # train mode, gliner's compute_loss, backward
        torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm)  # what accelerate calls on one CPU
        optimizer.step()
        scheduler.step()
        model.zero_grad()
        return float(loss)

    return step


def make_relex_step(config, variables, total_steps: int, bf16: bool = False):
    """relex-jax's jitted step with gliner's optimizer settings (`bf16`: bfloat16 compute,
    `OptimConfig.bf16`), its state holder and rng; the first callable runs one step."""
    optim = OptimConfig(max_steps=total_steps, bf16=bf16, **OPTIM)
    module = training_module(config, optim)
    train_step = make_train_step(module, LossConfig.from_relex_config(config), optim, dropout=False)
    holder = {"state": create_train_state(variables, make_optimizer(optim))}
    rng = jax.random.PRNGKey(0)

    def step(batch) -> float:
        holder["state"], metrics = train_step(holder["state"], batch, rng)
        return float(metrics["loss"])  # blocks until the step is done

    return step, train_step, holder, rng


# ------------------------------------------------------------------------------------------------
# FLOPs and peak
# ------------------------------------------------------------------------------------------------


def step_flops(train_step, state, batch, rng, params) -> dict:
    """XLA's FLOP count of the compiled step plus the BiLSTM recurrence's uncounted scan iterations."""
    start = time.perf_counter()
    compiled = train_step.lower(state, batch, rng).compile()
    aot_s = time.perf_counter() - start
    return dict(compiled_flops(compiled, params, batch.input_ids.shape[0]), aot_s=aot_s)


def compiled_flops(compiled, params, rows: int) -> dict:
    """`step_flops` for a step already compiled (`jit(...).lower(...).compile()`) on `rows` rows."""
    analysis = compiled.cost_analysis()
    if isinstance(analysis, (list, tuple)):
        analysis = analysis[0]
    xla = float(analysis["flops"])
    trips = [int(n) for n in re.findall(r'"known_trip_count":\{"n":"(\d+)"\}', compiled.as_text())]
    whiles = compiled.as_text().count(" while(")
    hidden = [leaf.shape for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]
              if "hidden_kernel" in jax.tree_util.keystr(path)]
    layers = len(hidden) // 2  # forward + backward direction per layer
    added, note = 0.0, ""
    if layers and whiles == 2 * layers and len(trips) == whiles and len(set(trips)) == 1:
        h = hidden[0][0]
        added = layers * (trips[0] - 1) * 48.0 * rows * h * h  # 16 B H^2 forward + 32 B H^2 backward per step
        note = (f"BiLSTM recurrence: {layers} layer(s) x {trips[0]} steps, {2 * layers} while loops; "
                f"+{added / 1e9:.3f} GFLOP added to XLA's {xla / 1e9:.3f}")
    elif whiles:
        note = (f"WARNING: {whiles} while loops (trip counts {trips}) not recognised as the BiLSTM's: "
                "their bodies are counted once, the FLOP count is low")
    return dict(flops=xla + added, xla_flops=xla, added_flops=added, transcendentals=float(analysis.get(
        "transcendentals", 0.0)), flops_note=note)


def matmul_peak(n: int, reps: int = 5, dtype: str = "float32", torch_device: str = "cpu", chain: int = 1) -> dict:
    """Achieved FLOP/s of an n x n @ n x n matmul in `dtype`: jax (jit, its default device) and
    torch (on `torch_device`), medians of `reps` timings of `chain` products issued back to back
    (on an accelerator a few, so that launch latency does not count)."""
    flops = 2.0 * n**3 * chain
    key_a, key_b = jax.random.split(jax.random.PRNGKey(1))
    a, b = (jax.random.normal(key, (n, n), jnp.float32).astype(dtype) for key in (key_a, key_b))
    matmul = jax.jit(jnp.matmul)
    matmul(a, b).block_until_ready()
    jax_s = []
    for _ in range(reps):
        start = time.perf_counter()
        out = [matmul(a, b) for _ in range(chain)]
        jax.block_until_ready(out)
        jax_s.append(time.perf_counter() - start)
    ta, tb = (torch.from_numpy(np.asarray(x, np.float32)).to(torch_device, getattr(torch, dtype)) for x in (a, b))
    sync = torch.cuda.synchronize if torch.device(torch_device).type == "cuda" else (lambda: None)
    torch.mm(ta, tb)
    sync()
    torch_s = []
    for _ in range(reps):
        start = time.perf_counter()
        for _ in range(chain):
            torch.mm(ta, tb)
        sync()
        torch_s.append(time.perf_counter() - start)
    jax_rate, torch_rate = flops / statistics.median(jax_s), flops / statistics.median(torch_s)
    return dict(n=n, dtype=dtype, jax=jax_rate, torch=torch_rate, peak=max(jax_rate, torch_rate))


# ------------------------------------------------------------------------------------------------
# One model
# ------------------------------------------------------------------------------------------------


def relative(a: float, b: float) -> float:
    return abs(a - b) / max(abs(b), 1e-30)


def bench_model(name: str, examples, source: str, args, compiles: CompileCounter) -> dict:
    warmup = max(args.warmup, args.batches) if args.shapes == "per-batch" else args.warmup  # compile every shape
    total_steps = warmup + args.rounds * args.steps  # per side; the schedule spans them all
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        model, path = build(name, Path(tmp))
        config, variables, _ = load_gliner_checkpoint(path)
        tokenizer = load_tokenizer(path)
        collator = gliner_collator(model)
        trainer = gliner_trainer(model, Path(tmp), total_steps, args.batch_size)
        build_s = time.perf_counter() - t0
        params = sum(p.numel() for p in model.parameters())
        optimizer = optimizer_name(trainer)
        print(f"[{name}] built and loaded in {build_s:.1f} s ({params / 1e6:.2f}M parameters; encoder hidden "
              f"{config.encoder.hidden_size}, {config.encoder.num_hidden_layers} layers; gliner width "
              f"{config.hidden_size}, max_width {config.max_width}); gliner {optimizer}, "
              f"scheduler {type(trainer.lr_scheduler).__name__}", flush=True)

        data = prepare_batches(examples, args.batch_size, tokenizer, config, collator, args.shapes)
        s = data["sizes"]
        padding = (f"relex-jax pads all to tokens {s['tokens']}, words {s['words']}, gold entities "
                   f"{s['gold_entities']}" if args.shapes == "common" else "relex-jax batches at gliner's shapes")
        print(f"[{name}] {len(data['relex'])} batches of {args.batch_size} ({source}); {padding} (gliner per batch, "
              f"mean: tokens {data['gliner_tokens']:.1f}, words {data['gliner_words']:.1f}, gold entities "
              f"{data['gliner_gold']:.1f}, scored pairs {data['gliner_pairs']:.1f}); collation per batch: "
              f"relex-jax {data['relex_collate_ms']:.1f} ms, gliner {data['gliner_collate_ms']:.1f} ms", flush=True)
        if data["mismatched"]:
            print(f"[{name}] WARNING: gliner's collator and ours differ: {', '.join(data['mismatched'][:8])}",
                  flush=True)

        gliner_step = make_gliner_step(trainer)
        relex_step, train_step, holder, rng = make_relex_step(config, variables, total_steps)
        n_batches = len(data["relex"])
        losses = {"gliner": [], "relex": []}
        counters = {"gliner": 0, "relex": 0}

        def run(side: str) -> float:
            """One step of `side` on its next batch; returns its wall time."""
            i = counters[side] % n_batches
            start = time.perf_counter()
            if side == "gliner":
                loss = gliner_step(data["gliner"][i])
            else:
                loss = relex_step(data["relex"][i])
            elapsed = time.perf_counter() - start
            losses[side].append(loss)
            counters[side] += 1
            return elapsed

        # Warm-up: relex-jax's first step compiles.
        gliner_first_s = run("gliner")
        mark, trace_mark = compiles.mark(), compiles.trace_s
        cold_s = run("relex")
        cold_compiles, cold_compile_s = compiles.since(mark)
        cold_trace_s = compiles.trace_s - trace_mark
        first_diff = relative(losses["relex"][0], losses["gliner"][0])
        print(f"[{name}] first step: gliner {gliner_first_s:.2f} s, relex-jax cold {cold_s:.2f} s ({cold_compiles} "
              f"XLA compilation(s), {cold_compile_s:.1f} s in XLA compile, {cold_trace_s:.1f} s tracing + lowering); "
              f"loss gliner {losses['gliner'][0]:.6g}, relex-jax {losses['relex'][0]:.6g}, relative difference "
              f"{first_diff:.1e}", flush=True)
        for _ in range(warmup - 1):
            run("gliner")
            run("relex")

        per_batch = [step_flops(train_step, holder["state"], b, rng, holder["state"].params) for b in data["relex"]]
        flops = dict(per_batch[0], **{k: statistics.mean(f[k] for f in per_batch)
                                      for k in ("flops", "xla_flops", "added_flops", "transcendentals", "aot_s")})
        print(f"[{name}] XLA cost analysis: {flops['flops'] / 1e9:.3f} GFLOP per step "
              f"({flops['flops_note'] or 'no while loops'}); lower + compile for it took {flops['aot_s']:.1f} s",
              flush=True)

        times = {"gliner": [], "relex": []}
        mark = compiles.mark()
        for round_ in range(args.rounds):
            order = ("gliner", "relex") if round_ % 2 == 0 else ("relex", "gliner")
            for side in order:
                times[side] += [run(side) for _ in range(args.steps)]
            g, r = times["gliner"][-args.steps :], times["relex"][-args.steps :]
            print(f"[{name}] round {round_ + 1}/{args.rounds} ({order[0]} first): gliner median "
                  f"{statistics.median(g):.3f} s/step, relex-jax median {statistics.median(r):.3f} s/step", flush=True)
        timed_compiles, timed_compile_s = compiles.since(mark)

        peak = matmul_peak(args.matmul_size)
        print(f"[{name}] {args.matmul_size}^2 float32 matmul: jax {peak['jax'] / 1e9:.1f} GFLOP/s, torch "
              f"{peak['torch'] / 1e9:.1f} GFLOP/s", flush=True)

    all_diffs = [relative(r, g) for r, g in zip(losses["relex"], losses["gliner"])]
    t_gliner, t_relex = statistics.median(times["gliner"]), statistics.median(times["relex"])
    result = dict(
        name=name, batch_size=args.batch_size, params=params, t_gliner=t_gliner, t_relex=t_relex,
        gliner_first_s=gliner_first_s, cold_s=cold_s, cold_compiles=cold_compiles, cold_compile_s=cold_compile_s,
        cold_trace_s=cold_trace_s, timed_compiles=timed_compiles, timed_compile_s=timed_compile_s,
        first_losses=(losses["gliner"][0], losses["relex"][0]), first_diff=first_diff, max_diff=max(all_diffs),
        last_losses=(losses["gliner"][-1], losses["relex"][-1]), steps_compared=len(all_diffs),
        spread=(min(times["gliner"]), max(times["gliner"]), min(times["relex"]), max(times["relex"])),
        encoder=f"{config.encoder.num_hidden_layers}x{config.encoder.hidden_size}",
        head=f"width {config.hidden_size}, max_width {config.max_width}",
        optimizer=optimizer,
        **flops, **{f"peak_{k}": v for k, v in peak.items()},
        **{k: v for k, v in data.items() if k not in ("relex", "gliner")},
    )
    del model, trainer, holder, data
    gc.collect()
    return result


# ------------------------------------------------------------------------------------------------
# Report
# ------------------------------------------------------------------------------------------------


def tables(results: list[dict]) -> str:
    import gliner

    speed = [
        "| model | implementation | median step (s) | steps/s | examples/s | vs gliner | achieved GFLOP/s "
        "| of measured matmul peak |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        for label, t in ((f"gliner {gliner.__version__} training step", r["t_gliner"]),
                         ("relex-jax `make_train_step` (jit)", r["t_relex"])):
            rate = r["flops"] / t
            speed.append(f"| {r['name']} | {label} | {t:.3f} | {1 / t:.2f} | {r['batch_size'] / t:.1f} "
                         f"| {r['t_gliner'] / t:.2f}x | {rate / 1e9:.1f} | {100 * rate / r['peak_peak']:.1f}% |")
    details = [
        "| model | relex-jax padded tokens / words / gold entities (gliner mean per batch) | GFLOP per step "
        "(XLA + BiLSTM scan) | matmul peak GFLOP/s (jax, torch) | relex-jax first step (s): XLA compiles (s) "
        "| collation ms per batch (relex-jax, gliner) | first-step loss (gliner, relex-jax) | loss relative difference "
        "(first step, max over steps) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        s = r["sizes"]
        details.append(
            f"| {r['name']} | {s['tokens']:g} / {s['words']:g} / {s['gold_entities']:g} ({r['gliner_tokens']:.1f} / "
            f"{r['gliner_words']:.1f} / {r['gliner_gold']:.1f}) | {r['flops'] / 1e9:.2f} ({r['xla_flops'] / 1e9:.2f} + "
            f"{r['added_flops'] / 1e9:.2f}) | {r['peak_jax'] / 1e9:.1f}, {r['peak_torch'] / 1e9:.1f} "
            f"| {r['cold_s']:.1f}: {r['cold_compiles']} ({r['cold_compile_s']:.1f}) "
            f"| {r['relex_collate_ms']:.1f}, {r['gliner_collate_ms']:.1f} "
            f"| {r['first_losses'][0]:.6g}, {r['first_losses'][1]:.6g} | {r['first_diff']:.1e}, {r['max_diff']:.1e} |"
        )
    return "\n".join(speed) + "\n\n" + "\n".join(details)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", choices=(*MODELS, "both"), default="both")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--batches", type=int, default=4, help="distinct batches, cycled through by both sides")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps per side (the first compiles relex-jax)")
    parser.add_argument("--steps", type=int, default=10, help="timed steps per side per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--matmul-size", type=int, default=2048, help="n of the n x n float32 matmul peak")
    parser.add_argument("--shapes", choices=("per-batch", "common"), default="per-batch",
                        help="relex-jax batch shapes: gliner's own per batch (same work), or one common padded shape")
    parser.add_argument("--record", action="store_true", help="append the result to benchmarks/RESULTS.md")
    args = parser.parse_args()
    if min(args.batch_size, args.batches, args.warmup, args.steps, args.rounds, args.matmul_size) < 1:
        parser.error("--batch-size, --batches, --warmup, --steps, --rounds and --matmul-size must be positive")

    started = time.perf_counter()
    torch.set_num_threads(os.cpu_count() or 1)
    examples, source = load_examples(args.batches * args.batch_size)
    compiles = CompileCounter()
    names = MODELS if args.model == "both" else (args.model,)
    results = [bench_model(name, examples, source, args, compiles) for name in names]

    table = tables(results)
    notes = []
    for r in results:
        extra = []
        if r["timed_compiles"]:
            extra.append(f"{r['timed_compiles']} XLA compilations ({r['timed_compile_s']:.1f} s) during the timed "
                         "rounds")
        if r["mismatched"]:
            extra.append(f"GLINER'S COLLATOR AND OURS DIFFER ({', '.join(r['mismatched'][:4])})")
        if r["first_diff"] > 1e-4:
            extra.append(f"FIRST-STEP LOSSES DIFFER by {r['first_diff']:.1e}")
        if r["flops_note"].startswith("WARNING"):
            extra.append(r["flops_note"])
        notes.append(
            f"{r['name']} ({r['encoder']} encoder, head {r['head']}, {r['params'] / 1e6:.2f}M parameters): step times "
            f"min-max gliner {r['spread'][0]:.3f}-{r['spread'][1]:.3f} s, relex-jax {r['spread'][2]:.3f}-"
            f"{r['spread'][3]:.3f} s; gliner's first step {r['gliner_first_s']:.2f} s; relex-jax cold step "
            f"{r['cold_s']:.1f} s ({r['cold_trace_s']:.1f} s tracing + lowering); {r['real_tokens']:.0f} real tokens "
            f"per batch; losses over {r['steps_compared']} steps per side, last gliner {r['last_losses'][0]:.6g}, "
            f"relex-jax {r['last_losses'][1]:.6g}; gliner optimizer {r['optimizer']}"
            + ("; " + "; ".join(extra) if extra else "")
        )
    small_note = f"; small re-drawn at std {SMALL_STD}" if "small" in names else ""
    summary = (
        f"Batch size {args.batch_size}, {args.batches} distinct batches ({source}) cycled in the same order by both "
        f"sides, {len(LABELS)} entity and {len(RELATIONS)} relation labels fixed per text, float32, random weights "
        f"(tests/gliner_fixtures.py{small_note}), dropout off on both sides; AdamW with gliner's four parameter "
        f"groups (encoder lr {OPTIM['learning_rate']:g}, others lr {OPTIM['others_lr']:g}, weight decay "
        f"{OPTIM['weight_decay']:g}), linear schedule with {OPTIM['warmup_ratio']:.0%} warmup, clipping at "
        f"{OPTIM['max_grad_norm']:g}. gliner step: its Trainer's `training_step` (forward with labels, loss, "
        f"backward) + clip_grad_norm_ + optimizer / scheduler step + zero_grad, no Trainer loop overhead (data "
        f"loader, callbacks, logging); relex-jax step: `make_train_step` (jit, donated state) including the "
        f"batch's host-to-device transfer; both read the loss back every step; collation done beforehand "
        f"(timed separately, median per batch). relex-jax shapes: "
        f"{'each batch at gliner' + chr(39) + 's padded size (one compilation per batch shape, in the warm-up)' if args.shapes == 'per-batch' else 'one common padded shape (the largest sizes over the batches)'}. "
        f"{max(args.warmup, args.batches) if args.shapes == 'per-batch' else args.warmup} untimed warm-up step(s) per side, then {args.rounds} "
        f"alternating round(s) of {args.steps} timed steps per side, medians over all timed steps. GFLOP per step: "
        f"XLA's cost analysis of the compiled relex-jax step (its padded shapes, mean over the batches) plus the BiLSTM scan iterations it "
        f"does not count, applied to both sides' step times; peak = the better of jax and torch on a "
        f"{args.matmul_size}x{args.matmul_size} float32 matmul in the same run. {'; '.join(notes)}. "
        f"Machine: {machine_line()}"
    )
    command = (
        f"python benchmarks/train_step.py --model {args.model} --batch-size {args.batch_size} --batches {args.batches} "
        f"--warmup {args.warmup} --steps {args.steps} --rounds {args.rounds} --matmul-size {args.matmul_size} "
        f"--shapes {args.shapes} --record"
    )
    title = "Training step, " + (
        "tiny and deberta-v3-small-shaped models" if args.model == "both"
        else {"tiny": "tiny test model", "small": "deberta-v3-small-shaped model"}[args.model]
    )
    finish(title, command, table, summary, args.record, started)


if __name__ == "__main__":
    main()
