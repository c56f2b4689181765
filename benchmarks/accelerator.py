"""One accelerator run: correctness on the device, training step (MFU) and inference, side by side with gliner.

    python benchmarks/accelerator.py --out DIR [--smoke] [--data DIR] [--time-limit S] [sizes...]
    python benchmarks/accelerator.py --record-from DIR/accelerator.json [--results benchmarks/RESULTS.md]

Written for the 15 minutes of GPU time a session may be lent (the `device` tool): after its
imports a run stops within --time-limit seconds (default 450; with the wheel install and imports
about 8 minutes on one H100, compilations included), so a rerun still fits. It needs CUDA (the
gliner side runs on torch's GPU), so it does not cover TPUs. `--smoke` runs the same flow at tiny
shapes on the CPU in under a minute (tests/test_accelerator.py runs it).

Preparation, once, in the repository root of a machine with the package registry (both folders
are git-ignored through .git/info/exclude and travel with `carry`):

    echo /.whl/ >> .git/info/exclude; echo /.data/ >> .git/info/exclude
    python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \\
        --platform manylinux2014_x86_64 -d .whl gliner==0.2.29 transformers==5.16.1
    mkdir -p .data/conll04 && cp ../shared/data/conll04/{train,test}.jsonl .data/conll04/

(gliner 0.2.29 needs transformers<5.17 and the device ships 5.17.0; its other requirements,
and relex_jax's, are on the device. relex_jax needs no install: PYTHONPATH holds the checkout.)

Device invocation: the `command` of the device tool's `run`, with carry [".whl", ".data"] and
timeout_s 540 (results come back as $OUT/accelerator.json, accelerator.md and log.txt):

    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site:$PWD || exit; nvidia-smi -L; PYTHONUNBUFFERED=1 python3 benchmarks/accelerator.py --out $OUT --data .data 2>&1 | tee $OUT/log.txt

Then, here: `python benchmarks/accelerator.py --record-from <files_at>/accelerator.json` appends
the Markdown to benchmarks/RESULTS.md.

Parts (each writes the JSON when it ends, so a run cut off later still returns them):
  setup          versions, the device, and the measured bf16 peak: an n x n bf16 matmul
                 (--matmul-size, default 8192) in jax and torch, the better of the two, next to
                 the datasheet figure of the chip (H100 SXM / H200: 989 TFLOP/s dense bf16).
  correctness    random checkpoints built as the parity tests build them (tests/gliner_fixtures.py
                 via benchmarks/inference.py `build`: tiny, and on a device also the
                 deberta-v3-small-shaped one), gliner on the same device: float32 on both sides
                 (jax_default_matmul_precision "highest", torch TF32 off): entity and relation
                 logits of one batch (gliner's own collated tensors) as max relative error
                 (max |ours - theirs| / max |theirs|, bar 1e-5), entity counts and scored pairs
                 equal, then `inference` outputs (entities, relations) text by text equal with
                 scores within 1e-4. relex-jax bfloat16 against its own float32: logits error,
                 texts decoded identically, max score difference (measured; its bar, BF16_SANITY, only
                 catches a broken path: re-drawn random weights amplify rounding).
  build          the large-shaped model for the rest: deberta-v3-large's encoder (24 x 1024,
                 16 heads, intermediate 4096; benchmarks/convert_memory.py LARGE_ENCODER) under the
                 released relex head (width 1024, max_width 12, one BiLSTM layer, all pairs + pair
                 MLP: LARGE_GLINER), random weights re-drawn at std 0.1 by the fixtures. Its
                 vocabulary is the fixtures' small tokenizer's (~600 pieces), not deberta-v3's
                 128,100: the real embedding table (131M parameters) is missing from memory and
                 from the optimizer update, not from the matmuls. --smoke uses the tiny model.
  gliner_inference / relex_inference
                 the first --texts CoNLL04 test sentences (--data/conll04/test.jsonl; generated
                 sentences without it) at --batch-size, entity threshold calibrated on gliner's
                 float32 forward for ~12 candidate spans per text (benchmarks/inference.py), one
                 untimed (cold) pass per side, then --rounds timed passes; texts/s from the median.
                 gliner: float32, float32 + InferencePackingConfig(max_length=512), bfloat16
                 (gliner's own `dtype=` path: weights cast), bfloat16 + packing. relex-jax:
                 float32, bfloat16 (`RelexModel(dtype=bfloat16)`: float32 weights), bfloat16 +
                 `packing=True`; its cold pass (compilations) is reported apart. Latency: one
                 median-length text, batch 1, median of --latency-calls. Outputs compared text by
                 text against gliner float32 (and bf16 against float32): reported, not enforced.
  gliner_training / relex_training
                 documents of whole consecutive CoNLL04 train sentences (--data/conll04/train.jsonl,
                 generated ones without it) filling up to --seq-len tokens with the prompt, all 4
                 entity and 5 relation labels; both sides get the same collated batches
                 (benchmarks/train_step.py `prepare_batches`, one common padded shape). One step is
                 what benchmarks/train_step.py times (gliner: its Trainer's training_step, clipping,
                 AdamW, scheduler; relex-jax: the jitted `make_train_step`, host batch included,
                 loss read back). Float32 and bf16 (relex-jax `optim.bf16`; gliner: its step under
                 torch.autocast(bfloat16), float32 weights, as Trainer(bf16=True)) at --train-batch
                 rows, then the largest batch that fits (--ladder-dtypes): the rungs of --ladder are
                 tried from the largest that the memory at --train-batch predicts to fit, downwards,
                 stopping at the first that runs.
                 relex-jax runs the AOT-compiled step (lower + compile timed apart: compile time
                 is not step time). Memory: torch's max_memory_allocated; relex-jax: XLA's memory
                 analysis of the compiled step (arguments + outputs - aliased + temporaries) and
                 the device's peak_bytes_in_use so far. FLOPs: XLA's cost analysis of the compiled
                 relex-jax step plus the BiLSTM scan iterations it misses (train_step.py
                 `compiled_flops`), counted on the padded batch; the same count divides gliner's
                 step time. MFU = FLOPs / (step time x peak), against both the datasheet and the
                 measured matmul peak.

Order on the device: all torch work (gliner) runs before relex-jax's large programs, torch's cache
is emptied in between, and jax grows its memory on demand (XLA_PYTHON_CLIENT_PREALLOCATE=false,
up to 92% of the device), so that each framework meets the memory the other left free.

Time guards: the run has --time-limit seconds; each part gets a share of what is left; optional
measurements (ladder rungs, extra sides) start only if their estimated time fits the part's
share; a watchdog thread writes the JSON with a `cut_off` note and exits at the limit.
"""

from __future__ import annotations

import os

# Before jax starts a backend: torch shares the device in this process, so jax allocates as it
# goes instead of taking 75% of the memory up front.
os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
os.environ.setdefault("XLA_PYTHON_CLIENT_MEM_FRACTION", "0.92")
if "--smoke" in __import__("sys").argv:  # tiny CPU programs: half the compile time, same results
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_backend_optimization_level=0").strip()

import argparse  # noqa: E402
import contextlib  # noqa: E402
import dataclasses  # noqa: E402
import datetime  # noqa: E402
import gc  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
import traceback  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
from common import RESULTS, report  # noqa: E402
from convert_memory import LARGE_ENCODER, LARGE_GLINER  # noqa: E402
from inference import (LABELS, RELATIONS, SMALL_STD, CompileCounter, build, calibrate_threshold,  # noqa: E402
                       compare, load_texts, span_logits)
from relex_forward import model_inputs  # noqa: E402
from train_step import (compiled_flops, generated_examples, gliner_collator, gliner_trainer,  # noqa: E402
                        load_examples, load_tokenizer, make_gliner_step, make_relex_step, matmul_peak,
                        optimizer_name, prepare_batches, torch)

from gliner.infer_packing import InferencePackingConfig  # noqa: E402
from gliner_fixtures import build_relex_model, reference_forward  # noqa: E402
from relex_jax import RelexModel  # noqa: E402
from relex_jax.checkpoint.gliner import load_gliner_checkpoint  # noqa: E402
from relex_jax.data.collate import CollateConfig, collate  # noqa: E402
from relex_jax.data.readers import Example  # noqa: E402
from relex_jax.modeling.relex import RelexModule  # noqa: E402

TORCH_DEVICE = "cuda" if torch.cuda.is_available() else "cpu"

DEFAULT_DATA = ROOT.parent / "shared" / "data"
# Dense bf16 datasheet peaks (FLOP/s) by device name; the first matching key wins.
DATASHEET_BF16 = (("H100 PCIe", 756e12), ("H100", 989e12), ("H200", 989e12))
DATASHEET_NOTE = "H100 SXM and H200: 989 TFLOP/s dense bf16 (H100 PCIe 756); float32 without tensor cores: 67"
# Seconds each part may take out of --time-limit (scaled to what is left when the part starts).
BUDGET = {"setup": 15, "correctness": 40, "build": 50, "gliner_inference": 45, "gliner_training": 55,
          "relex_training": 160, "relex_inference": 85}
DEVICE_SIZES = dict(time_limit=450, matmul_size=8192, correctness_models="tiny,small", correctness_texts=32,
                    train_sentences=922, seq_len=512, train_batch=8, ladder="12,16,24,32,48,64,96,128",
                    ladder_dtypes="bf16,float32", warmup=2, steps=8, texts=288, batch_size=96, rounds=3,
                    latency_calls=10)
SMOKE_SIZES = dict(time_limit=900, matmul_size=256, correctness_models="tiny", correctness_texts=4,
                   train_sentences=40, seq_len=160, train_batch=2, ladder="4", ladder_dtypes="bf16", warmup=1,
                   steps=2, texts=4, batch_size=4, rounds=1, latency_calls=1)
SCORE_TOLERANCE = 1e-4  # float32 decoded scores, relex-jax vs gliner on the same device
LOGIT_TOLERANCE = 1e-5  # float32 logits, relative to their scale
# bf16 against float32 is a measurement, not parity: the fixtures' re-drawn weights amplify rounding
# (benchmarks/inference.py saw float32 differences grow to 6e-2 of the logits at std 0.15), and bf16
# rounds 2^16 times coarser (0.13 of the scale on the tiny model, measured on a CPU). The bar only
# catches a broken path: non-finite or unrelated outputs.
BF16_SANITY = 0.5  # largest entity-logit error of bf16 against float32, relative to the logit scale
TOTAL_STEPS = 1000  # the learning-rate schedule's length on both sides (only its shape matters here)
GiB = 2**30


# ------------------------------------------------------------------------------------------------
# The run: parts, time shares, the watchdog, partial output
# ------------------------------------------------------------------------------------------------


class Run:
    """The result being built, written to OUT/accelerator.json (and .md) after every part."""

    def __init__(self, out: Path, limit_s: float, data: dict):
        self.out, self.limit_s, self.data = out, limit_s, data
        self.started = time.monotonic()
        self.deadline = self.started + limit_s
        self.part_deadline = self.deadline
        self.current = None
        self.lock = threading.Lock()
        watchdog = threading.Timer(limit_s, self._cut_off)
        watchdog.daemon = True
        watchdog.start()

    def _cut_off(self) -> None:
        with self.lock:
            self.data["cut_off"] = (f"stopped by the watchdog at --time-limit {self.limit_s:.0f} s, in part "
                                    f"{self.current}")
            if self.current in self.data["parts"]:
                self.data["parts"][self.current]["status"] = "cut off"
            self._write()
        print(f"\n{self.data['cut_off']}; partial results in {self.out}", flush=True)
        os._exit(3)

    def save(self) -> None:
        with self.lock:
            self._write()

    def _write(self) -> None:
        self.data["elapsed_s"] = time.monotonic() - self.started
        for name, text in (("accelerator.json", json.dumps(self.data, indent=1, default=_plain)),
                           ("accelerator.md", render_markdown(self.data))):
            tmp = self.out / f".{name}.tmp"
            tmp.write_text(text)
            os.replace(tmp, self.out / name)

    def left(self) -> float:
        """Seconds left in the current part's share."""
        return self.part_deadline - time.monotonic()

    @contextlib.contextmanager
    def part(self, name: str):
        """Run one part: its share of the time left, its status and errors recorded, JSON written.
        An error ends the part, not the run (later parts that need its results fail in turn)."""
        later = list(BUDGET)[list(BUDGET).index(name):]
        now = time.monotonic()
        self.part_deadline = now + (self.deadline - now) * BUDGET[name] / sum(BUDGET[p] for p in later)
        self.current = name
        record = {"status": "running", "budget_s": round(self.part_deadline - now, 1)}
        self.data["parts"][name] = record
        self.save()
        print(f"\n=== {name} (share {record['budget_s']:.0f} s) ===", flush=True)
        start = time.perf_counter()
        try:
            yield record
            record["status"] = "done"
        except Exception as error:  # noqa: BLE001 -- one part's failure must not lose the others
            record["status"] = "failed"
            record["error"] = f"{type(error).__name__}: {error}"[:2000]
            traceback.print_exc()
        finally:
            record["seconds"] = time.perf_counter() - start
            print(f"=== {name}: {record['status']} in {record['seconds']:.1f} s ===", flush=True)
            self.save()


def _plain(value):
    """JSON for numpy scalars and arrays, paths and the like."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return str(value)


def is_oom(error: BaseException) -> bool:
    text = f"{type(error).__name__} {error}"
    return "RESOURCE_EXHAUSTED" in text or "out of memory" in text.lower() or "OutOfMemory" in text


def median(values) -> float:
    return float(statistics.median(values))


def free_torch_cache() -> None:
    gc.collect()
    if TORCH_DEVICE == "cuda":
        torch.cuda.empty_cache()


# ------------------------------------------------------------------------------------------------
# Setup
# ------------------------------------------------------------------------------------------------


def environment(args) -> dict:
    """Versions, the devices both frameworks see, and the sizes of this run."""
    import flax
    import gliner
    import jaxlib
    import optax
    import tokenizers
    import transformers

    device = jax.devices()[0]
    commit = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    cuda = TORCH_DEVICE == "cuda"
    return dict(
        date=datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        smoke=args.smoke, commit=commit.stdout.strip() or "unknown",
        jax_device=f"{device.platform}: {device.device_kind}", jax_devices=jax.device_count(),
        torch_device=torch.cuda.get_device_name(0) if cuda else "cpu",
        device_memory_gib=torch.cuda.get_device_properties(0).total_memory / GiB if cuda else None,
        host=f"{platform.machine()}, {os.cpu_count()} cores",
        versions={"python": platform.python_version(), "jax": jax.__version__, "jaxlib": jaxlib.__version__,
                  "flax": flax.__version__, "optax": optax.__version__, "torch": torch.__version__,
                  "torch cuda": torch.version.cuda, "gliner": gliner.__version__,
                  "transformers": transformers.__version__, "tokenizers": tokenizers.__version__},
        sizes={key: getattr(args, key) for key in DEVICE_SIZES},
    )


def datasheet_peak(device_kind: str) -> float | None:
    return next((peak for key, peak in DATASHEET_BF16 if key in device_kind), None)


@contextlib.contextmanager
def precision(bf16: bool):
    """float32 sides at full float32 matmul precision (as torch with TF32 off); bf16 sides at
    jax's default (what a bf16 user gets)."""
    with jax.default_matmul_precision("default" if bf16 else "highest"):
        yield


# ------------------------------------------------------------------------------------------------
# Correctness
# ------------------------------------------------------------------------------------------------


def relative_error(ours, theirs) -> float:
    """max |ours - theirs| / max |theirs|: the parity tests' error relative to the output scale."""
    ours, theirs = np.asarray(ours, np.float64), np.asarray(theirs, np.float64)
    return float(np.abs(ours - theirs).max(initial=0.0) / max(np.abs(theirs).max(initial=0.0), 1e-12))


def relation_pairs(out, ref) -> tuple[bool, np.ndarray, np.ndarray]:
    """(same pairs scored, our relation logits, gliner's) over the pairs gliner scores, row-major."""
    pair_mask, logits = np.asarray(out.pair_mask), np.asarray(out.relation_logits, np.float32)
    same, ours, theirs = True, [], []
    for row in range(pair_mask.shape[0]):
        pairs = np.argwhere(pair_mask[row])
        expected = ref["rel_idx"][row][ref["rel_mask"][row]]
        same &= pairs.shape == expected.shape and bool((pairs == expected).all())
        ours.append(logits[row, pairs[:, 0], pairs[:, 1]])
        theirs.append(ref["rel_logits"][row][ref["rel_mask"][row]])
    return same, np.concatenate(ours), np.concatenate(theirs)


def check_model(name: str, model, relex: RelexModel, texts: list[str], batch_size: int) -> dict:
    """relex-jax against gliner (float32, same device), then relex-jax bf16 against its float32."""
    threshold, passing, _ = calibrate_threshold(span_logits(model, texts, 0, batch_size), 6.0, 24)
    ref = reference_forward(model, texts, LABELS, RELATIONS, threshold=threshold)
    inputs = model_inputs(relex, ref)
    with precision(bf16=False):
        out = relex.forward(inputs, threshold)
    same_pairs, ours, theirs = relation_pairs(out, ref)
    counts_equal = bool((np.asarray(out.entity_count) == ref["entity_mask"].sum(1)).all())
    result = dict(threshold=threshold, spans_passing=float(passing.mean()), pairs=int(ref["rel_mask"].sum()),
                  entity_logit_error=relative_error(out.entity_logits, ref["logits"]),
                  relation_logit_error=relative_error(ours, theirs), same_entity_counts=counts_equal,
                  same_pairs=same_pairs)

    kwargs = dict(relations=RELATIONS, threshold=threshold, relation_threshold=0.5, batch_size=batch_size)
    gliner_out = model.inference(texts, LABELS, **kwargs)
    with precision(bf16=False):
        relex_out = relex.inference(texts, LABELS, **kwargs)
    result["decoded"], problem = compare(name, texts, threshold, SCORE_TOLERANCE, gliner_out, relex_out,
                                         ("gliner", "relex-jax"))
    result["decoded_problem"] = problem
    result["passed"] = bool(max(result["entity_logit_error"], result["relation_logit_error"]) <= LOGIT_TOLERANCE
                            and counts_equal and same_pairs and problem is None)

    relex16 = dataclasses.replace(relex, module=RelexModule(relex.config, dtype=jnp.bfloat16), compiled_shapes=set())
    with precision(bf16=True):
        out16 = relex16.forward(inputs, threshold)
        relex16_out = relex16.inference(texts, LABELS, **kwargs)
    diff, _ = compare(name, texts, threshold, np.inf, relex_out, relex16_out, ("relex-jax", "relex-jax bf16"))
    identical = 1 - max(diff["entity_mismatch"], diff["relation_mismatch"]) / len(texts)
    bf16 = dict(entity_logit_error=relative_error(out16.entity_logits, out.entity_logits), identical_share=identical,
                entity_score=diff["entity_score"], relation_score=diff["relation_score"])
    bf16["passed"] = bool(np.isfinite(np.asarray(out16.entity_logits, np.float32)).all()
                          and bf16["entity_logit_error"] <= BF16_SANITY)
    result["bf16"] = bf16
    print(f"[{name}] float32 vs gliner: entity logits {result['entity_logit_error']:.1e}, relation logits "
          f"{result['relation_logit_error']:.1e} ({result['pairs']} pairs), decoded "
          f"{'identical' if problem is None else 'DIFFERENT: ' + problem}; bf16 vs float32: logits "
          f"{bf16['entity_logit_error']:.1e}, {identical:.0%} of texts identical, scores within "
          f"{bf16['entity_score']:.1e} / {bf16['relation_score']:.1e}", flush=True)
    return result


def part_correctness(run: Run, args, tmp: Path, texts: list[str], record: dict) -> None:
    record["models"] = {}
    for name in args.correctness_models.split(","):
        model, path = build(name, tmp / name)
        model.to(TORCH_DEVICE)
        record["models"][name] = check_model(name, model, RelexModel.from_pretrained(path), texts, args.batch_size)
        del model
        free_torch_cache()
        run.save()
    record["passed"] = all(m["passed"] for m in record["models"].values())
    record["bf16_passed"] = all(m["bf16"]["passed"] for m in record["models"].values())


# ------------------------------------------------------------------------------------------------
# The large-shaped model and its training documents
# ------------------------------------------------------------------------------------------------


def build_large(args, tmp: Path, record: dict) -> dict:
    """The model of the training and inference parts (gliner on the device, relex-jax's float32
    variables on the host: each train state copies them, the step donates its copy)."""
    if args.smoke:
        model, path = build("tiny", tmp / "large")
    else:
        model, path = build_relex_model(tmp / "large", seed=0, std=SMALL_STD, encoder=LARGE_ENCODER, **LARGE_GLINER)
    config, variables, _ = load_gliner_checkpoint(path)
    enc = config.encoder
    record.update(encoder=f"{enc.num_hidden_layers} x {enc.hidden_size}, {enc.num_attention_heads} heads, "
                          f"intermediate {enc.intermediate_size}, vocabulary {enc.vocab_size}",
                  head=f"width {config.hidden_size}, max_width {config.max_width}, relations_layer "
                       f"{config.relations_layer!r}", params=sum(p.numel() for p in model.parameters()))
    original = {key: value.detach().clone() for key, value in model.model.state_dict().items()}
    model.to(TORCH_DEVICE)
    return dict(model=model, path=path, config=config, variables=jax.tree_util.tree_map(np.asarray, variables),
                tokenizer=load_tokenizer(path), original=original)


def join(examples: list[Example]) -> Example:
    """Consecutive sentences as one document (entity and relation indices shifted)."""
    tokens, entities, relations = [], [], []
    for ex in examples:
        offset, first = len(tokens), len(entities)
        tokens += ex.tokens
        entities += [(s + offset, e + offset, t) for s, e, t in ex.entities]
        relations += [(h + first, t + first, r) for h, t, r in ex.relations]
    return dataclasses.replace(examples[0], tokens=tuple(tokens), entities=tuple(entities),
                               relations=tuple(relations), source="")


def documents(examples: list[Example], tokenizer, config, max_tokens: int) -> list[Example]:
    """Whole consecutive sentences joined while the document, prompt included, stays within
    `max_tokens` tokens and gliner's `max_len` words; a sentence too long alone is left out."""
    cfg = CollateConfig.from_relex_config(config).deterministic()

    def fits(parts: list[Example]) -> bool:
        joined = join(parts)
        return (len(joined.tokens) <= config.max_len
                and collate([joined], tokenizer, cfg).inputs.input_ids.shape[1] <= max_tokens)

    docs, current = [], []
    for ex in examples:
        if current and not fits(current + [ex]):
            docs.append(join(current))
            current = []
        if fits([ex]):
            current.append(ex)
    if current:
        docs.append(join(current))
    if not docs:
        raise ValueError(f"no training sentence fits {max_tokens} tokens with the prompt")
    return docs


def training_data(state: dict, rows: int, batches: int) -> dict:
    """`batches` collated batches of `rows` documents for both sides (cached: both parts use them)."""
    key = (rows, batches)
    if key not in state["batches"]:
        docs = state["documents"]
        examples = [docs[i % len(docs)] for i in range(rows * batches)]
        state["batches"][key] = prepare_batches(examples, rows, state["tokenizer"], state["config"],
                                                state["collator"], "common")
    return state["batches"][key]


def batch_shape(data: dict) -> dict:
    first = data["relex"][0]
    return dict(rows=int(first.input_ids.shape[0]), tokens=int(first.input_ids.shape[1]),
                words=int(first.span_mask.shape[1]), real_tokens=float(data["real_tokens"]),
                collators_differ=data["mismatched"])


# ------------------------------------------------------------------------------------------------
# Training
# ------------------------------------------------------------------------------------------------


def gliner_training_config(trainer, data: dict, bf16: bool, args) -> dict:
    """Step time and memory of gliner's step on `data`'s batches (cycled); the first step apart."""
    step = make_gliner_step(trainer, torch.bfloat16 if bf16 else None)
    cuda = TORCH_DEVICE == "cuda"
    batches = data["gliner"]
    try:
        if cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        resident = torch.cuda.memory_allocated() if cuda else None
        start = time.perf_counter()
        losses = [step(batches[0])]
        first_s = time.perf_counter() - start
        losses += [step(batches[i % len(batches)]) for i in range(1, args.warmup)]
        times = []
        for i in range(args.steps):
            start = time.perf_counter()
            losses.append(step(batches[i % len(batches)]))
            times.append(time.perf_counter() - start)
        peak = torch.cuda.max_memory_allocated() if cuda else None
    except Exception as error:  # noqa: BLE001 -- out of memory ends a ladder, anything else the part
        if not is_oom(error):
            raise
        trainer.model.zero_grad(set_to_none=True)
        free_torch_cache()
        return dict(oom=True, error=str(error)[:300])
    return dict(first_s=first_s, t=median(times), spread=(min(times), max(times)), losses=losses, peak_bytes=peak,
                resident_bytes=resident)


def relex_training_config(config, variables, data: dict, bf16: bool, args) -> dict:
    """relex-jax's step compiled ahead of time (timed apart), its cost and memory analysis, then
    its step time; a fresh train state from `variables` each time."""
    _, train_step, holder, rng = make_relex_step(config, variables, TOTAL_STEPS, bf16=bf16)
    batches = data["relex"]
    try:
        start = time.perf_counter()
        with precision(bf16):
            compiled = train_step.lower(holder["state"], batches[0], rng).compile()
        compile_s = time.perf_counter() - start
        flops = compiled_flops(compiled, holder["state"].params, batches[0].input_ids.shape[0])
        memory = compiled.memory_analysis()

        def step(batch) -> float:
            holder["state"], metrics = compiled(holder["state"], batch, rng)
            return float(metrics["loss"])  # blocks until the step is done

        losses = [step(batches[i % len(batches)]) for i in range(args.warmup)]
        times = []
        for i in range(args.steps):
            start = time.perf_counter()
            losses.append(step(batches[i % len(batches)]))
            times.append(time.perf_counter() - start)
    except Exception as error:  # noqa: BLE001 -- out of memory ends a ladder, anything else the part
        if not is_oom(error):
            raise
        return dict(oom=True, error=str(error)[:300])
    finally:
        holder.clear()
        gc.collect()
    analysed = arguments = None
    if memory is not None:
        arguments = memory.argument_size_in_bytes
        analysed = (arguments + memory.output_size_in_bytes - memory.alias_size_in_bytes
                    + memory.temp_size_in_bytes)
    return dict(compile_s=compile_s, t=median(times), spread=(min(times), max(times)), losses=losses,
                flops=flops["flops"], flops_note=flops["flops_note"], analysed_bytes=analysed,
                argument_bytes=arguments,
                process_peak_bytes=(jax.devices()[0].memory_stats() or {}).get("peak_bytes_in_use"))


def describe(result: dict) -> str:
    if result.get("oom"):
        return "out of memory"
    if result.get("skipped"):
        return result["skipped"]
    memory = result.get("peak_bytes") or result.get("analysed_bytes")
    cold = f"compile {result['compile_s']:.1f} s" if "compile_s" in result else f"first step {result['first_s']:.2f} s"
    return (f"{result['t'] * 1e3:.1f} ms/step, {cold}" + (f", {memory / GiB:.2f} GiB" if memory else "")
            + f", first loss {result['losses'][0]:.6g}")


def training_part(run: Run, args, state: dict, record: dict, measure, fixed_and_per_row, limit, seconds) -> None:
    """Float32 and bf16 at --train-batch rows (two batches alternating), then for each of
    --ladder-dtypes the largest batch that fits: the rungs of --ladder from the largest whose
    predicted memory (`fixed_and_per_row(base result)`, within 5% of `limit`; all rungs when
    either is unknown, e.g. on a CPU) downwards, stopping at the first that runs; a rung starts
    only if `seconds(base result, rows)` fits the part's time left."""
    base_data = training_data(state, args.train_batch, 2)
    record.update(batch=batch_shape(base_data), configs=[])

    def attempt(rows: int, bf16: bool, batches: int = 1, **extra) -> dict:
        data = training_data(state, rows, batches)
        result = dict(measure(data, bf16), bf16=bf16, **batch_shape(data), **extra)
        print(f"[{run.current}] {'bf16' if bf16 else 'float32'} batch {rows}: {describe(result)}", flush=True)
        record["configs"].append(result)
        run.save()
        return result

    base = {bf16: attempt(args.train_batch, bf16, batches=2) for bf16 in (False, True)}
    for dtype in args.ladder_dtypes.split(","):
        at_base = base[dtype == "bf16"]
        if at_base.get("oom"):
            continue
        fixed, per_row = fixed_and_per_row(at_base)
        rungs = sorted(args.ladder_rungs)
        if None not in (fixed, per_row, limit):
            rungs = rungs[: max(1, sum(fixed + per_row * rows <= 1.05 * limit for rows in rungs))]
        for rows in reversed(rungs):
            predicted = None if None in (fixed, per_row) else fixed + per_row * rows
            if run.left() < seconds(at_base, rows):
                record["configs"].append(dict(bf16=dtype == "bf16", rows=rows, ladder=True,
                                              skipped="time share spent"))
                continue
            if not attempt(rows, dtype == "bf16", ladder=True, predicted_bytes=predicted).get("oom"):
                break


def part_gliner_training(run: Run, args, state: dict, record: dict) -> None:
    model = state["model"]
    state["collator"] = gliner_collator(model)
    trainer = gliner_trainer(model, state["tmp"], TOTAL_STEPS, args.train_batch, use_cpu=TORCH_DEVICE == "cpu")
    record["optimizer"] = optimizer_name(trainer)
    cuda = TORCH_DEVICE == "cuda"
    training_part(
        run, args, state, record,
        measure=lambda data, bf16: gliner_training_config(trainer, data, bf16, args),
        fixed_and_per_row=lambda base: (base["resident_bytes"], None if base["peak_bytes"] is None else
                                        (base["peak_bytes"] - base["resident_bytes"]) / args.train_batch),
        limit=torch.cuda.get_device_properties(0).total_memory if cuda else None,
        seconds=lambda base, rows: base["first_s"] + 3 * (args.warmup + args.steps) * base["t"] * rows
        / args.train_batch)
    state["gliner_losses"] = record["configs"][0].get("losses")
    del trainer
    state.pop("model")
    free_torch_cache()


def part_relex_training(run: Run, args, state: dict, record: dict) -> None:
    config, variables = state["config"], state["variables"]
    limit = (jax.devices()[0].memory_stats() or {}).get("bytes_limit")
    if limit is None and TORCH_DEVICE == "cuda":  # jax's share of the device, as set at the top
        limit = float(os.environ["XLA_PYTHON_CLIENT_MEM_FRACTION"]) * torch.cuda.get_device_properties(0).total_memory
    record["bytes_limit"] = limit
    training_part(
        run, args, state, record,
        measure=lambda data, bf16: relex_training_config(config, variables, data, bf16, args),
        fixed_and_per_row=lambda base: (base["argument_bytes"], None if base["analysed_bytes"] is None else
                                        (base["analysed_bytes"] - base["argument_bytes"]) / args.train_batch),
        limit=limit,
        seconds=lambda base, rows: 1.5 * base["compile_s"] + 3 * (args.warmup + args.steps) * base["t"] * rows
        / args.train_batch)
    gliner_losses, relex_losses = state.get("gliner_losses"), record["configs"][0].get("losses")
    if gliner_losses and relex_losses:
        record["first_loss"] = dict(gliner=gliner_losses[0], relex=relex_losses[0],
                                    relative_difference=abs(relex_losses[0] - gliner_losses[0]) / abs(gliner_losses[0]))


# ------------------------------------------------------------------------------------------------
# Inference
# ------------------------------------------------------------------------------------------------


def median_text(texts: list[str]) -> str:
    return sorted(texts, key=lambda t: len(t.split()))[len(texts) // 2]


def timed_passes(fn, rounds: int) -> tuple[float, list[float], object]:
    """(first pass seconds, timed pass seconds, the first pass's output)."""
    start = time.perf_counter()
    output = fn()
    first_s = time.perf_counter() - start
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return first_s, times, output


def latency_ms(fn, calls: int) -> float:
    """Median milliseconds of `calls` calls after one untimed call."""
    fn()
    times = []
    for _ in range(calls):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return 1e3 * median(times)


def side_fits(run: Run, sides: dict, rounds: int) -> bool:
    """Whether another side (first pass + timed passes, estimated from the slowest so far) fits."""
    done = [s for s in sides.values() if "t" in s]
    return not done or run.left() > 1.2 * max(s["first_s"] + rounds * s["t"] for s in done)


def inference_side(run: Run, key: str, record: dict, outputs: dict, texts: list[str], rounds: int, calls: int,
                   passes, single) -> dict:
    """Time one side: a first pass, `rounds` timed passes and (with `single`) batch-1 latency."""
    first_s, times, outputs[key] = timed_passes(passes, rounds)
    side = dict(first_s=first_s, t=median(times), texts_per_s=len(texts) / median(times))
    if single is not None:
        side["latency_ms"] = latency_ms(single, calls)
    record["sides"][key] = side
    print(f"[{key}] first pass {first_s:.2f} s, {side['texts_per_s']:.1f} texts/s"
          + (f", batch-1 latency {side['latency_ms']:.1f} ms" if "latency_ms" in side else ""), flush=True)
    run.save()
    return side


def part_gliner_inference(run: Run, args, state: dict, texts: list[str], record: dict) -> None:
    model = state["model"]
    start = time.perf_counter()
    threshold, passing, capped = calibrate_threshold(span_logits(model, texts, 0, args.batch_size), 12.0, 64)
    state["threshold"] = threshold
    record.update(threshold=threshold, spans_passing=(float(passing.mean()), int(passing.max())), capped=capped,
                  calibration_s=time.perf_counter() - start, texts=len(texts), sides={})
    kwargs = dict(relations=RELATIONS, threshold=threshold, relation_threshold=0.5)
    one = median_text(texts)
    state["outputs"] = outputs = {}
    packing = InferencePackingConfig(max_length=512)
    for key, bf16, packed in (("gliner", False, None), ("gliner_packed", False, packing), ("gliner_bf16", True, None),
                              ("gliner_bf16_packed", True, packing)):
        if bf16:
            model.model.to(torch.bfloat16)  # what GLiNER.from_pretrained(..., dtype=torch.bfloat16) does
        if not side_fits(run, record["sides"], args.rounds):
            record["sides"][key] = dict(skipped="time share spent")
            continue
        inference_side(
            run, key, record, outputs, texts, args.rounds, args.latency_calls,
            passes=lambda packed=packed: model.inference(texts, LABELS, packing_config=packed,
                                                         batch_size=args.batch_size, **kwargs),
            single=None if packed else (lambda: model.inference([one], LABELS, batch_size=1, **kwargs)))
    model.model.to(torch.float32)
    model.model.load_state_dict(state["original"])  # training starts from the built weights


def part_relex_inference(run: Run, args, state: dict, texts: list[str], compiles: CompileCounter,
                         record: dict) -> None:
    config, path, threshold = state["config"], state["path"], state["threshold"]
    kwargs = dict(relations=RELATIONS, threshold=threshold, relation_threshold=0.5)
    one = median_text(texts)
    outputs = state["outputs"]
    record.update(threshold=threshold, texts=len(texts), sides={})
    for key, bf16, packing in (("relex", False, False), ("relex_bf16", True, False), ("relex_bf16_packed", True, True)):
        if not side_fits(run, record["sides"], args.rounds):
            record["sides"][key] = dict(skipped="time share spent")
            continue
        module = RelexModule(config, dtype=jnp.bfloat16) if bf16 else RelexModule(config)
        relex = RelexModel(config, module, state["variables"], load_tokenizer(path), Path(path))
        mark = compiles.mark()
        with precision(bf16):
            side = inference_side(
                run, key, record, outputs, texts, args.rounds, args.latency_calls,
                passes=lambda: relex.inference(texts, LABELS, packing=packing, batch_size=args.batch_size, **kwargs),
                single=None if packing else (lambda: relex.inference([one], LABELS, batch_size=1, **kwargs)))
        # compilations of the first pass and of the latency's untimed call (batch 1 is a new shape)
        side["compiles"], side["compile_s"] = compiles.since(mark)
        side["shapes"] = len(relex.compiled_shapes)
        del relex
    record["comparisons"] = {}
    for reference, other in (("gliner", "relex"), ("gliner", "gliner_packed"), ("gliner", "gliner_bf16"),
                             ("relex", "relex_bf16"), ("relex_bf16", "relex_bf16_packed")):
        if reference in outputs and other in outputs:
            diff, problem = compare("large", texts, threshold, args.score_tolerance, outputs[reference],
                                    outputs[other], (reference, other))
            record["comparisons"][f"{other} vs {reference}"] = dict(diff, identical=problem is None)


# ------------------------------------------------------------------------------------------------
# Markdown
# ------------------------------------------------------------------------------------------------

SIDE_LABELS = {
    "gliner": "gliner float32", "gliner_packed": "gliner float32 + InferencePackingConfig(512)",
    "gliner_bf16": "gliner bf16", "gliner_bf16_packed": "gliner bf16 + InferencePackingConfig(512)",
    "relex": "relex-jax float32", "relex_bf16": "relex-jax bf16", "relex_bf16_packed": "relex-jax bf16, packing=True",
}


def _gib(value) -> str:
    return "-" if value is None else f"{value / GiB:.2f}"


def _share(value, peak) -> str:
    return "-" if not (value and peak) else f"{100 * value / peak:.1f}%"


def correctness_table(check: dict) -> str:
    rows = ["| model | float32 vs gliner: entity, relation logits (max rel. error) | pairs scored | decoded "
            "outputs (max score diff) | bf16 vs float32: entity logits | bf16 texts identical | bf16 max score diff "
            "(entities, relations) | float32 parity / bf16 sanity |", "|---|---|---|---|---|---|---|---|"]
    for name, m in check["models"].items():
        d, b = m["decoded"], m["bf16"]
        decoded = "identical" if d["entity_mismatch"] == d["relation_mismatch"] == 0 else (
            f"{d['entity_mismatch']} / {d['relation_mismatch']} texts DIFFER")
        rows.append(
            f"| {name} | {m['entity_logit_error']:.1e}, {m['relation_logit_error']:.1e} | {m['pairs']}"
            f"{'' if m['same_pairs'] else ' (NOT THE SAME)'} | {decoded} ({d['entity_score']:.1e}, "
            f"{d['relation_score']:.1e}) | {b['entity_logit_error']:.1e} | {b['identical_share']:.0%} | "
            f"{b['entity_score']:.1e}, {b['relation_score']:.1e} | {'pass' if m['passed'] else 'FAIL'} / "
            f"{'pass' if b['passed'] else 'FAIL'} |")
    return "\n".join(rows)


def training_table(gliner_part: dict, relex_part: dict, sheet, measured) -> str:
    flops_at = {(c["bf16"], c["rows"]): c["flops"] for c in relex_part.get("configs", []) if c.get("flops")}
    rows = ["| implementation | precision | batch: rows x tokens | step (ms) | tokens/s | peak memory (GiB) | "
            "TFLOP/s | MFU (datasheet) | MFU (measured peak) | compile / first step (s) |",
            "|---|---|---|---|---|---|---|---|---|---|"]
    for label, part in (("gliner", gliner_part), ("relex-jax", relex_part)):
        for c in part.get("configs", []):
            name = label + (" (largest batch)" if c.get("ladder") else "")
            dtype = "bf16" if c["bf16"] else "float32"
            if c.get("skipped") or c.get("oom"):
                rows.append(f"| {name} | {dtype} | {c['rows']} x {c.get('tokens', '?')} | "
                            f"{c.get('skipped') or 'out of memory'} | - | - | - | - | - | - |")
                continue
            flops = flops_at.get((c["bf16"], c["rows"]))
            rate = flops / c["t"] if flops else None
            cold = c.get("compile_s", c.get("first_s"))
            rows.append(
                f"| {name} | {dtype} | {c['rows']} x {c['tokens']} | {c['t'] * 1e3:.1f} | "
                f"{c['rows'] * c['tokens'] / c['t']:,.0f} | {_gib(c.get('peak_bytes') or c.get('analysed_bytes'))} | "
                f"{'-' if rate is None else f'{rate / 1e12:.2f}'} | {_share(rate, sheet)} | {_share(rate, measured)} "
                f"| {cold:.1f} |")
    return "\n".join(rows)


def inference_table(sides: dict) -> str:
    base = sides.get("gliner", {}).get("t")
    rows = ["| implementation | texts/s | vs gliner float32 | first pass, s (relex-jax: compilations, s) | "
            "batch-1 latency (ms) |", "|---|---|---|---|---|"]
    for key, s in sides.items():
        label = SIDE_LABELS.get(key, key)
        if "t" not in s:
            rows.append(f"| {label} | {s.get('skipped', 'not run')} | - | - | - |")
            continue
        first = f"{s['first_s']:.1f}" + (f" ({s['compiles']}, {s['compile_s']:.1f})" if "compiles" in s else "")
        speedup = f"{base / s['t']:.2f}x" if base else "-"
        latency = f"{s['latency_ms']:.1f}" if "latency_ms" in s else "-"
        rows.append(f"| {label} | {s['texts_per_s']:.1f} | {speedup} | {first} | {latency} |")
    return "\n".join(rows)


def summary_notes(data: dict) -> list[str]:
    env, parts = data.get("environment", {}), data.get("parts", {})
    notes = []
    if env:
        versions = ", ".join(f"{key} {value}" for key, value in env["versions"].items())
        memory = f", {env['device_memory_gib']:.1f} GiB" if env.get("device_memory_gib") else ""
        notes.append(f"Device: {env['torch_device']}{memory} (jax: {env['jax_device']}, {env['jax_devices']} "
                     f"device(s)); host {env['host']}; {versions}; commit {env['commit']}; run {env['date']}")
    peak = parts.get("setup", {}).get("peak")
    if peak:
        sheet = peak.get("datasheet")
        notes.append(f"Peak: a {peak['n']}^3 bf16 matmul ran at {peak['jax'] / 1e12:.2f} TFLOP/s in jax and "
                     f"{peak['torch'] / 1e12:.2f} in torch (the better is the measured peak); datasheet "
                     + (f"{sheet / 1e12:.0f} TFLOP/s" if sheet else "unknown for this device")
                     + f" ({DATASHEET_NOTE}). MFU is against the bf16 peaks for every row, float32 ones included")
    large = parts.get("build", {})
    if large.get("encoder"):
        notes.append(f"Large-shaped model: encoder {large['encoder']}, head {large['head']}, "
                     f"{large['params'] / 1e6:.3g}M parameters, random weights; training texts: "
                     f"{large.get('training_texts', '?')}")
    relex_training = parts.get("relex_training", {})
    if relex_training.get("configs"):
        b = relex_training["batch"]
        flops_note = next((c["flops_note"] for c in relex_training["configs"] if c.get("flops_note")), "")
        notes.append(
            f"Training: both sides get the same collated batches, padded to one shape ({b['tokens']} tokens, "
            f"{b['words']} words; {b['real_tokens']:.0f} real tokens in a batch of {b['rows']}), 4 entity and 5 "
            f"relation labels, dropout off; gliner: {parts.get('gliner_training', {}).get('optimizer', '?')}, bf16 = "
            f"torch.autocast(bfloat16); relex-jax: the AOT-compiled `make_train_step`, bf16 = `optim.bf16`. "
            f"FLOPs per step: XLA's cost analysis of the compiled relex-jax step (2 per multiply-add, padded "
            f"batch){'; ' + flops_note if flops_note else ''}; the same count divides gliner's step time. Tokens/s "
            f"count padded tokens. Memory: relex-jax = XLA's analysis of the compiled step (arguments + outputs - "
            f"aliased + temporaries), gliner = torch.cuda.max_memory_allocated. Largest batch: rungs "
            f"{env.get('sizes', {}).get('ladder')} tried from the largest predicted to fit, downwards")
        if relex_training.get("first_loss"):
            first = relex_training["first_loss"]
            notes.append(f"First-step loss, float32, same batch and weights: gliner {first['gliner']:.6g}, relex-jax "
                         f"{first['relex']:.6g} (relative difference {first['relative_difference']:.1e})")
    inference = parts.get("gliner_inference", {})
    if inference.get("threshold") is not None:
        compared = []
        for name, c in parts.get("relex_inference", {}).get("comparisons", {}).items():
            compared.append(f"{name}: {c['entity_mismatch']} / {c['relation_mismatch']} texts with other entities / "
                            f"relations, max score difference {c['entity_score']:.1e} / {c['relation_score']:.1e}")
        notes.append(
            f"Inference: {inference['texts']} texts ({parts.get('setup', {}).get('texts', '?')}), batch "
            f"{env.get('sizes', {}).get('batch_size')}, 4 entity and 5 relation labels, entity threshold "
            f"{inference['threshold']:.4g} (calibrated on gliner float32: {inference['spans_passing'][0]:.1f} "
            f"candidate spans per text pass it, at most {inference['spans_passing'][1]}), relation threshold 0.5; "
            f"texts/s from the median of the timed passes after one untimed first pass; outputs: "
            + ("; ".join(compared) or "not compared"))
    status = ", ".join(f"{name} {p.get('status')} ({p.get('seconds', 0):.0f} s)" for name, p in parts.items())
    errors = "; ".join(f"{name}: {p['error']}" for name, p in parts.items() if p.get("error"))
    notes.append("Float32 sides at full float32 precision (jax 'highest', torch TF32 off), bf16 sides at jax's "
                 f"default precision. Parts: {status}" + (f". Errors: {errors}" if errors else ""))
    if data.get("cut_off"):
        notes.append(data["cut_off"])
    return notes


def markdown_parts(data: dict) -> tuple[str, str, str, str]:
    """(title, command, tables, summary) of a result, as common.report records them."""
    env, parts = data.get("environment", {}), data.get("parts", {})
    device = env.get("torch_device") if env.get("torch_device") not in (None, "cpu") else env.get("jax_device", "?")
    title = f"Accelerator run{' (smoke, CPU)' if env.get('smoke') else ''}: {device}"
    tables = []
    if parts.get("correctness", {}).get("models"):
        tables.append(correctness_table(parts["correctness"]))
    gliner_training, relex_training = parts.get("gliner_training", {}), parts.get("relex_training", {})
    if gliner_training.get("configs") or relex_training.get("configs"):
        peak = parts.get("setup", {}).get("peak", {})
        tables.append(training_table(gliner_training, relex_training, peak.get("datasheet"), peak.get("peak")))
    sides = {**parts.get("gliner_inference", {}).get("sides", {}), **parts.get("relex_inference", {}).get("sides", {})}
    if sides:
        tables.append(inference_table(sides))
    return (title, data.get("command", "python benchmarks/accelerator.py"),
            "\n\n".join(tables) or "(no part finished)", ". ".join(summary_notes(data)))


def render_markdown(data: dict) -> str:
    title, command, table, summary = markdown_parts(data)
    return f"## {title}\n\nCommand: `{command}`\n\n{table}\n\n{summary}.\n"


# ------------------------------------------------------------------------------------------------
# Main
# ------------------------------------------------------------------------------------------------


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, help="output folder (on the device: $OUT)")
    parser.add_argument("--smoke", action="store_true", help="the whole flow at tiny shapes on the CPU (< 1 minute)")
    parser.add_argument("--data", type=Path, default=Path(os.environ.get("RELEX_DATA", DEFAULT_DATA)),
                        help="folder holding conll04/{train,test}.jsonl (env RELEX_DATA; default ../shared/data)")
    parser.add_argument("--record-from", type=Path, metavar="JSON",
                        help="append the Markdown of a run's accelerator.json to --results, and exit")
    parser.add_argument("--results", type=Path, default=RESULTS, help="where --record-from appends")
    parser.add_argument("--score-tolerance", type=float, default=1e-3,
                        help="large-model inference outputs count as identical within this score difference")
    for key, value in DEVICE_SIZES.items():
        parser.add_argument(f"--{key.replace('_', '-')}", type=type(value), default=None,
                            help=f"default {value} ({SMOKE_SIZES[key]} with --smoke)")
    args = parser.parse_args()
    if args.record_from is None and args.out is None:
        parser.error("--out is required (or --record-from)")
    for key, value in (SMOKE_SIZES if args.smoke else DEVICE_SIZES).items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    args.ladder_rungs = [int(rows) for rows in args.ladder.split(",") if rows]
    if set(args.ladder_dtypes.split(",")) - {"bf16", "float32"}:
        parser.error("--ladder-dtypes takes bf16 and/or float32, comma-separated")
    return args


def main() -> int:
    args = parse_args()
    if args.record_from:
        title, command, table, summary = markdown_parts(json.loads(args.record_from.read_text()))
        report(title, command, table, summary, record=True, results=args.results)
        print(f"\n(appended to {args.results})")
        return 0
    if not args.smoke and (jax.default_backend() != "gpu" or TORCH_DEVICE != "cuda"):
        # jax falls back to the CPU silently when its CUDA plugin fails; the large shapes would take hours there
        sys.exit(f"error: a full run needs a GPU seen by jax and torch alike (jax: {jax.default_backend()}, torch: "
                 f"{TORCH_DEVICE}); on a CPU use --smoke")
    args.out.mkdir(parents=True, exist_ok=True)
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    if args.smoke:
        torch.set_num_threads(1)  # tiny shapes: threads only contend (timings mean nothing here anyway)
    compiles = CompileCounter()
    run = Run(args.out, args.time_limit, dict(command="python benchmarks/accelerator.py " + " ".join(sys.argv[1:]),
                                              parts={}))
    test_path, train_path = args.data / "conll04" / "test.jsonl", args.data / "conll04" / "train.jsonl"
    texts: list[str] = []

    with run.part("setup") as record:
        run.data["environment"] = environment(args)
        peak = matmul_peak(args.matmul_size, reps=3, dtype="bfloat16", torch_device=TORCH_DEVICE,
                           chain=10 if TORCH_DEVICE == "cuda" else 1)
        record["peak"] = dict(peak, datasheet=datasheet_peak(jax.devices()[0].device_kind))
        if test_path.is_file():
            texts, distinct = load_texts(args.texts, test_path)
            record["texts"] = (f"CoNLL04 test, {test_path}: " + (f"the first {args.texts} of {distinct} sentences"
                               if args.texts <= distinct else f"its {distinct} sentences repeated to {args.texts}"))
        else:
            texts = [" ".join(ex.tokens) for ex in generated_examples(args.texts)]
            record["texts"] = f"generated sentences (CoNLL04 test not found at {test_path})"
        print(f"{run.data['environment']['torch_device']} / {run.data['environment']['jax_device']}: bf16 matmul "
              f"{peak['peak'] / 1e12:.3f} TFLOP/s; texts: {record['texts']}", flush=True)

    with tempfile.TemporaryDirectory() as tmp, run.part("correctness") as record:
        part_correctness(run, args, Path(tmp), texts[: args.correctness_texts], record)

    with tempfile.TemporaryDirectory() as tmp:
        state = {"tmp": Path(tmp), "batches": {}}
        with run.part("build") as record:
            state.update(build_large(args, Path(tmp), record))
            examples, source = load_examples(args.train_sentences, train_path)
            state["documents"] = documents(examples, state["tokenizer"], state["config"], args.seq_len)
            record["training_texts"] = (f"{len(state['documents'])} documents of up to {args.seq_len} tokens from "
                                        f"{source}")
        with run.part("gliner_inference") as record:
            part_gliner_inference(run, args, state, texts, record)
        with run.part("gliner_training") as record:
            part_gliner_training(run, args, state, record)
        state.pop("model", None)  # torch hands its cached memory back before jax's large programs
        free_torch_cache()
        with run.part("relex_training") as record:
            part_relex_training(run, args, state, record)
        with run.part("relex_inference") as record:
            part_relex_inference(run, args, state, texts, compiles, record)

    print("\n" + render_markdown(run.data), flush=True)
    not_done = [name for name, p in run.data["parts"].items() if p["status"] != "done"]
    passed = run.data["parts"]["correctness"].get("passed", False)
    print(f"(total {time.monotonic() - run.started:.0f} s; results in {args.out}"
          + (f"; parts not done: {', '.join(not_done)}" if not_done else "")
          + ("" if passed else "; CORRECTNESS NOT PASSED") + ")", flush=True)
    return 0 if passed and not not_done else 1


if __name__ == "__main__":
    sys.exit(main())
