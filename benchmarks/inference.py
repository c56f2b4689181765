"""End-to-end inference (strings in, dicts out): relex-jax `RelexModel.inference` vs gliner's `inference`, in one run,
each with and without packing.

    python benchmarks/inference.py [--model tiny|small|both] [--model-dir PATH] [--texts 576] [--batch-size 32]
                                   [--rounds 3] [--packing 256] [--gliner-packing-length 512]
                                   [--spans-per-text 12] [--max-spans-per-text 64] [--threshold T]
                                   [--relation-threshold 0.5] [--calibration-texts 0] [--score-tolerance 1e-3]
                                   [--record]

Sides (timed in alternating rounds):
  gliner                        gliner's `inference`, one padded row per text (pads to the batch's longest);
  gliner + InferencePackingConfig  the same with `packing_config=InferencePackingConfig(max_length=
                                --gliner-packing-length)`: the encoder reads the batch's texts packed first fit,
                                in input order, into streams of at most that many tokens (padded to the longest
                                stream; `streams_per_batch` is only validated by gliner 0.2.29, so left at 1).
                                gliner CUTS a text longer than max_length without a word, so the script refuses
                                a max_length below the longest text (prompt included). On a BERT backbone
                                gliner 0.2.29's packed encoder call fails (it drops input_ids: "You must specify
                                exactly one of input_ids or inputs_embeds"); the side is then left out, with a
                                warning and a note in the result;
  relex-jax                     `RelexModel.inference`, one row per text, shapes padded to buckets;
  relex-jax packing             `RelexModel.inference(packing=--packing)`: the texts of a batch share encoder
                                rows of that many tokens (rows grow to the token bucket of a longer text).
--packing 0 leaves out both packed sides (the runs recorded before packing).

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
  --model-dir PATH  instead: a relex-jax model directory (e.g. a trained one from `python -m relex_jax
         train`); gliner reads it converted by `relex_jax.checkpoint.convert.relex_to_gliner`. Its
         entity threshold is --threshold (default 0.5), not calibrated: a trained model lets few spans
         through, and then the encoder and padding decide the speed (GUIDE section 7).
Texts: the CoNLL04 test sentences (../shared/data/conll04/test.jsonl; words joined by spaces), in
file order, repeated to --texts. Labels: person / location / organization / other; relations:
works for / located in / based in / lives in / kills.

For the random models the entity threshold is calibrated per model with a gliner forward over the
distinct texts (or --calibration-texts of them) so that on average about --spans-per-text candidate
spans per text pass it: every passing span takes part in relations, so gliner's all-pairs MLP
(quadratic in that count) has real work. It is raised if needed so that no calibrated text keeps
more than --max-spans-per-text spans (the pair tensors of a batch grow with the square of the
largest count), and put in the widest gap between span scores near the target, so that float32
differences between the implementations do not move spans across it. --threshold fixes it instead.
Relations are decoded at --relation-threshold.

Each side first runs one full untimed pass (relex-jax's, on a freshly loaded model, one model per
relex-jax side, is its cold pass: it compiles there and is timed for the compile overhead, with XLA
compilations counted by a jax.monitoring listener; the encoder token grid of every forward is
recorded there). Their outputs must be identical: entity labels and character offsets, and
relations, text by text, equal to plain gliner's, and entity and relation scores within
--score-tolerance of it (and packed relex-jax's of unpacked relex-jax's); otherwise the script stops
with an error before timing. Then --rounds timed passes alternate over the sides; medians are
reported. During relex-jax's timed passes its host-side steps are timed on the side (word splitting
+ tokenization/batch building/packing, and decoding to dicts) to give their share of the pass.
Encoder token grids: relex-jax's as recorded (rows x tokens of every forward; padding = grid minus
the real tokens of the batch's texts, so filler rows count as padding); gliner's computed from the
same per-text token counts (identical tokenization) as gliner batches them: input order, padded to
the batch's longest text, or packed first fit into streams padded to the longest stream.
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
MODEL_DIR_THRESHOLD = 0.5  # entity threshold of a --model-dir model without --threshold (gliner's default)
# The sides, in the order each round runs them: key, whether packed, whether relex-jax.
SIDES = (("gliner", False, False), ("gliner_packed", True, False), ("relex", False, True), ("relex_packed", True, True))
# Event names of jax/_src/dispatch.py (jax 0.10): XLA compilation, and tracing + lowering before it.
BACKEND_COMPILE_EVENT = "/jax/core/compile/backend_compile_duration"
TRACE_EVENTS = ("/jax/core/compile/jaxpr_trace_duration", "/jax/core/compile/jaxpr_to_mlir_module_duration")

sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import jax  # noqa: E402
from gliner_fixtures import build_relex_model, reference_forward, torch  # noqa: E402

import relex_jax.inference as relex_inference  # noqa: E402
from common import finish  # noqa: E402
from gliner.infer_packing import InferencePackingConfig  # noqa: E402
from relex_forward import V3_SMALL_SHAPED  # noqa: E402
from relex_jax import RelexModel  # noqa: E402
from relex_jax.checkpoint.convert import relex_to_gliner  # noqa: E402
from relex_jax.data.packing import first_fit  # noqa: E402
from relex_jax.settings import PACKED_ROW_TOKENS  # noqa: E402


# ------------------------------------------------------------------------------------------------
# Inputs
# ------------------------------------------------------------------------------------------------


def load_texts(count: int, path: Path = CONLL04_TEST) -> tuple[list[str], int]:
    """`count` texts (the test sentences at `path` in file order, repeated) and the number of
    distinct ones."""
    if not path.is_file():
        sys.exit(
            f"error: CoNLL04 test split not found at {path}\n"
            "This benchmark reads its texts from ../shared/data/conll04/test.jsonl relative to the repository "
            "root (one JSON object per line with a 'tokens' list); put the file there and rerun."
        )
    sentences = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if line.strip():
            try:
                sentences.append(" ".join(json.loads(line)["tokens"]))
            except (ValueError, KeyError, TypeError) as error:
                sys.exit(f"error: {path}:{number} is not a JSON object with a 'tokens' list ({error})")
    if not sentences:
        sys.exit(f"error: {path} holds no sentences")
    return [sentences[i % len(sentences)] for i in range(count)], len(sentences)


def build(name: str, directory: Path, model_dir: Path | None = None):
    """(gliner model, the path relex-jax loads): a random model built by the test fixtures, or with
    `model_dir` that relex-jax model directory, converted for gliner into `directory`."""
    if model_dir is not None:
        from gliner import GLiNER

        model = GLiNER.from_pretrained(str(relex_to_gliner(model_dir, directory / "gliner")), local_files_only=True)
        model.eval()
        return model, model_dir
    if name == "tiny":
        return build_relex_model(directory / "tiny", seed=0)
    return build_relex_model(directory / "small", seed=0, std=SMALL_STD, encoder=V3_SMALL_SHAPED, hidden_size=768,
                             max_width=12)


def span_logits(model, texts: list[str], sample: int, batch_size: int) -> list[np.ndarray]:
    """Per distinct text (`sample` > 0: that many spread over them), the best class logit of every
    in-text span, descending, from gliner's forward."""
    unique = list(dict.fromkeys(texts))
    if 0 < sample < len(unique):
        unique = [unique[i] for i in sorted(set(np.linspace(0, len(unique) - 1, sample).round().astype(int).tolist()))]
    rows = []
    for start in range(0, len(unique), batch_size):
        out = reference_forward(model, unique[start : start + batch_size], LABELS, RELATIONS, threshold=1.0)
        best = out["logits"].max(-1).reshape(out["span_mask"].shape).astype(np.float64)
        rows.extend(np.sort(row[mask])[::-1] for row, mask in zip(best, out["span_mask"]))
    return rows


def passing_at(rows: list[np.ndarray], threshold: float) -> np.ndarray:
    """Candidate spans per text whose best score passes `threshold`."""
    with np.errstate(divide="ignore"):
        logit = np.log(threshold) - np.log1p(-threshold)
    return np.array([int((row > logit).sum()) for row in rows])


def calibrate_threshold(rows: list[np.ndarray], target: float, cap: int):
    """Entity threshold at which on average `target` candidate spans per text pass, raised if needed
    so that no text keeps more than `cap`, from the span logits of `span_logits`. Returns
    (threshold, passing spans per calibrated text, whether the cap raised the threshold)."""
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
    tokenization, padded numpy inputs) + first_fit and pack_batch (packed rows, with packing),
    'decode' = the decoders and the dict builders."""
    groups = {
        "prepare": ("split_words", "build_batch", "first_fit", "pack_batch"),
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


@contextlib.contextmanager
def encoder_grids(relex: RelexModel, grids: list[dict]):
    """Record the encoder token grid of every forward of `relex` (instance attributes shadow its
    `_run` and `forward` meanwhile): per forward its (rows, tokens), the real tokens of the batch's
    texts (not of the filler rows that round the row count up) and, unpacked, each text's token
    count (prompt included) by text index."""
    run, forward = relex._run, relex.forward
    batch_texts: list[list[int]] = []

    def recording_run(pieces, *args, **kwargs):
        batch_texts.append([piece.text for piece in pieces])
        return run(pieces, *args, **kwargs)

    def recording_forward(inputs, *args, packed=False, **kwargs):
        texts = batch_texts[-1]
        if packed:  # (input_ids, segment_ids, position_ids, words_mask, token_texts, ...)
            real, lengths = int(((np.asarray(inputs[1]) > 0) & (np.asarray(inputs[4]) < len(texts))).sum()), {}
        else:  # (input_ids, attention_mask, ...)
            counts = np.asarray(inputs[1]).sum(1)[: len(texts)].tolist()
            real, lengths = int(sum(counts)), dict(zip(texts, counts))
        grids.append(dict(shape=tuple(np.shape(inputs[0])), real=real, lengths=lengths))
        return forward(inputs, *args, packed=packed, **kwargs)

    relex._run, relex.forward = recording_run, recording_forward
    try:
        yield grids
    finally:
        del relex._run, relex.forward


def relex_grid(grids: list[dict]) -> dict:
    """Encoder tokens over one pass of relex-jax from `encoder_grids`' records."""
    shapes = Counter(g["shape"] for g in grids)
    return dict(grid=sum(int(np.prod(g["shape"])) for g in grids), real=sum(g["real"] for g in grids),
                shapes=", ".join(f"{r}x{t}" + (f" ({count})" if count > 1 else "") for (r, t), count in
                                 sorted(shapes.items(), key=lambda item: -item[0][1])))


def gliner_grid(lengths: list[int], batch_size: int, max_length: int | None) -> dict:
    """Encoder tokens over one pass of gliner's `inference` for texts of `lengths` tokens in input
    order: each batch padded to its longest text, or with `max_length` packed first fit (as
    gliner.infer_packing's `_prepare_streams`) into streams padded to the longest stream."""
    grid = 0
    for start in range(0, len(lengths), batch_size):
        chunk = np.asarray(lengths[start : start + batch_size])
        if max_length is None:
            rows, tokens = len(chunk), int(chunk.max())
        else:
            row_of, _, rows = first_fit(chunk, max_length)
            tokens = int(np.bincount(row_of, weights=chunk).max())
        grid += rows * tokens
    return dict(grid=grid, real=int(sum(lengths)))


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


def score_difference(a, b, keys=entity_keys) -> float:
    """Max |score difference| over the entities (or with `keys=relation_keys` relations) of texts
    whose lists agree."""
    diffs = [abs(x["score"] - y["score"]) for ra, rb in zip(a, b) if keys([ra]) == keys([rb]) for x, y in zip(ra, rb)]
    return max(diffs, default=0.0)


def compare(name: str, texts: list[str], threshold: float, tolerance: float, reference: tuple, other: tuple,
            labels: tuple[str, str]) -> tuple[dict, str | None]:
    """Compare the (entities, relations) of two sides text by text. Returns the differences and,
    when they are not identical (keys) or not close (scores beyond `tolerance`), what differs."""
    (ref_ents, ref_rels), (ents, rels) = reference, other
    entity_mismatch = [i for i, (a, b) in enumerate(zip(entity_keys(ref_ents), entity_keys(ents))) if a != b]
    relation_mismatch = [i for i, (a, b) in enumerate(zip(relation_keys(ref_rels), relation_keys(rels))) if a != b]
    diff = dict(entity_mismatch=len(entity_mismatch), relation_mismatch=len(relation_mismatch),
                entity_score=score_difference(ref_ents, ents),
                relation_score=score_difference(ref_rels, rels, relation_keys),
                margin=one_sided_margin(ref_ents, ents, entity_mismatch, threshold))
    problems = []
    if entity_mismatch or relation_mismatch:
        first = (entity_mismatch or relation_mismatch)[0]
        problems.append(
            f"{len(entity_mismatch)} texts with different entity lists, {len(relation_mismatch)} with different "
            f"relation lists"
            + (f" (entities found by one side only score at most {diff['margin']:.1e} from the threshold)"
               if diff["margin"] is not None else "")
            + f"; first: text {first}: {texts[first]!r}\n"
            f"  {labels[0]:<32} {entity_keys([ref_ents[first]])[0]} {relation_keys([ref_rels[first]])[0]}\n"
            f"  {labels[1]:<32} {entity_keys([ents[first]])[0]} {relation_keys([rels[first]])[0]}")
    for what in ("entity", "relation"):
        if diff[f"{what}_score"] > tolerance:
            problems.append(f"{what} scores differ by up to {diff[f'{what}_score']:.1e} (> --score-tolerance "
                            f"{tolerance:g})")
    return diff, (f"[{name}] {labels[1]} vs {labels[0]}: " + "; ".join(problems)) if problems else None


# ------------------------------------------------------------------------------------------------
# One model
# ------------------------------------------------------------------------------------------------


def bench_model(name: str, texts: list[str], args, compiles: CompileCounter) -> dict:
    sides = [key for key, packed, _ in SIDES if args.packing or not packed]
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        model, path = build(name, Path(tmp), args.model_dir)
        # One fresh model per relex-jax side: each side's cold pass compiles its own shapes.
        relex = {key: RelexModel.from_pretrained(path) for key in sides if key.startswith("relex")}
    build_s = time.perf_counter() - t0
    cfg, some_relex = model.config, relex["relex"]
    print(f"[{name}] built and loaded in {build_s:.1f} s (encoder hidden {some_relex.config.encoder.hidden_size}, "
          f"{some_relex.config.encoder.num_hidden_layers} layers; gliner width {cfg.hidden_size}, max_width "
          f"{cfg.max_width})", flush=True)

    t0 = time.perf_counter()
    rows = span_logits(model, texts, args.calibration_texts, args.batch_size)
    if args.threshold is None:
        threshold, passing, capped = calibrate_threshold(rows, args.spans_per_text, args.max_spans_per_text)
        how = "calibrated"
    else:
        threshold, passing, capped = args.threshold, passing_at(rows, args.threshold), False
        how = "given; counted"
    print(f"[{name}] threshold {threshold:.6g}: on {len(passing)} distinct texts {passing.mean():.1f} candidate spans "
          f"per text pass (median {np.median(passing):.0f}, max {passing.max()}"
          f"{f'; raised to keep at most {args.max_spans_per_text}' if capped else ''}); {how} in "
          f"{time.perf_counter() - t0:.1f} s", flush=True)

    common_kwargs = dict(relations=RELATIONS, threshold=threshold, relation_threshold=args.relation_threshold,
                         batch_size=args.batch_size)
    gliner_packing = InferencePackingConfig(max_length=args.gliner_packing_length)
    runs = {
        "gliner": lambda: model.inference(texts, LABELS, **common_kwargs),
        "gliner_packed": lambda: model.inference(texts, LABELS, packing_config=gliner_packing, **common_kwargs),
        "relex": lambda: relex["relex"].inference(texts, LABELS, **common_kwargs),
        "relex_packed": lambda: relex["relex_packed"].inference(texts, LABELS, packing=args.packing, **common_kwargs),
    }
    labels = {"gliner": "gliner", "gliner_packed": f"gliner + packing ({args.gliner_packing_length})",
              "relex": "relex-jax", "relex_packed": f"relex-jax packing ({args.packing})"}

    def timed(fn):
        start = time.perf_counter()
        result = fn()
        return time.perf_counter() - start, result

    # Warm-up: one full untimed pass each; relex-jax's are their cold passes (they compile). Unpacked
    # relex-jax goes before gliner's packed pass: its recorded token counts say whether gliner's
    # streams can hold every text.
    n = len(texts)
    side: dict[str, dict] = {key: {} for key in sides}
    outputs, lengths, unsupported = {}, None, {}
    for key in sorted(list(sides), key=("gliner", "relex", "gliner_packed", "relex_packed").index):
        if key.startswith("relex"):
            mark, trace_mark, grids = compiles.mark(), compiles.trace_s, []
            with encoder_grids(relex[key], grids):
                cold_s, outputs[key] = timed(runs[key])
            cold_compiles, cold_compile_s = compiles.since(mark)
            compiled = ", ".join(f"{fun} x{count}" for fun, count in compiles.functions_since(mark).items())
            side[key].update(cold_s=cold_s, cold_compiles=cold_compiles, cold_compile_s=cold_compile_s,
                             cold_trace_s=compiles.trace_s - trace_mark, shapes=len(relex[key].compiled_shapes),
                             compiled=compiled, grid=relex_grid(grids))
            if key == "relex":
                pieces = [(text, count) for g in grids for text, count in g["lengths"].items()]
                if sorted(text for text, _ in pieces) == list(range(n)):  # one row per text (no windows, none empty)
                    lengths = [count for _, count in sorted(pieces)]
            print(f"[{name}] {labels[key]} cold pass {cold_s:.2f} s ({side[key]['shapes']} forward shapes, "
                  f"{cold_compiles} XLA compilations ({compiled}), {cold_compile_s:.1f} s in XLA compile, "
                  f"{side[key]['cold_trace_s']:.1f} s tracing + lowering; encoder grids {side[key]['grid']['shapes']})",
                  flush=True)
        else:
            if key == "gliner_packed" and lengths and max(lengths) > args.gliner_packing_length:
                sys.exit(f"error: [{name}] the longest text has {max(lengths)} tokens (prompt included), more than "
                         f"--gliner-packing-length {args.gliner_packing_length}: gliner's InferencePackingConfig "
                         "would cut it without a word; pass a larger --gliner-packing-length")
            try:
                side[key]["warm_s"], outputs[key] = timed(runs[key])
            except Exception as error:  # noqa: BLE001 -- gliner 0.2.29's packing fails on some backbones
                if key == "gliner":
                    raise
                # e.g. BertModel: its generic packed path drops input_ids ("You must specify exactly one of
                # input_ids or inputs_embeds"); say so and go on without the side.
                encoder = model.model
                for attribute in ("token_rep_layer", "bert_layer", "model"):
                    encoder = getattr(encoder, attribute, None)
                encoder_class = type(encoder).__name__ if encoder is not None else "this encoder"
                unsupported[key] = f"{encoder_class}: {type(error).__name__}: {error}"
                print(f"[{name}] WARNING: {labels[key]} fails on this model ({unsupported[key]}); that side is "
                      "left out", flush=True)
                sides.remove(key)
                del side[key]
                continue
            print(f"[{name}] {labels[key]} warm-up pass {side[key]['warm_s']:.2f} s", flush=True)
    if lengths is not None:
        side["gliner"]["grid"] = gliner_grid(lengths, args.batch_size, None)
        if "gliner_packed" in sides:
            side["gliner_packed"]["grid"] = gliner_grid(lengths, args.batch_size, args.gliner_packing_length)

    # Every side must give plain gliner's results; packed relex-jax also unpacked relex-jax's.
    pairs = [("gliner", key) for key in sides[1:]] + ([("relex", "relex_packed")] if "relex_packed" in sides else [])
    diffs, failures = {}, []
    for ref, key in pairs:
        diffs[ref, key], problem = compare(name, texts, threshold, args.score_tolerance, outputs[ref], outputs[key],
                                           (labels[ref], labels[key]))
        if problem:
            failures.append(problem)
    if failures:
        print("\n".join(failures), flush=True)
        sys.exit(f"error: [{name}] the sides' outputs differ (above); nothing was timed or recorded")
    print(f"[{name}] outputs identical on all {n} texts across {len(sides)} sides; max score differences vs gliner: "
          + ", ".join(f"{labels[key]} {diffs['gliner', key]['entity_score']:.1e} (entities) / "
                      f"{diffs['gliner', key]['relation_score']:.1e} (relations)" for key in sides[1:]), flush=True)

    times: dict[str, list[float]] = {key: [] for key in sides}
    shares: dict[str, list[dict]] = {key: [] for key in sides if key.startswith("relex")}
    mark = compiles.mark()
    shapes_before = {key: len(r.compiled_shapes) for key, r in relex.items()}
    stable = True
    for round_ in range(args.rounds):
        parts = []
        for key in sides:
            host: dict[str, float] = {}
            with host_timers(host) if key in shares else contextlib.nullcontext():
                seconds, out = timed(runs[key])
            times[key].append(seconds)
            stable &= (entity_keys(out[0]) == entity_keys(outputs[key][0])
                       and relation_keys(out[1]) == relation_keys(outputs[key][1]))
            parts.append(f"{labels[key]} {seconds:.2f} s ({n / seconds:.1f} texts/s"
                         + (f"; prepare {host['prepare']:.2f} s, decode {host['decode']:.2f} s" if host else "") + ")")
            if key in shares:
                shares[key].append({group: value / seconds for group, value in host.items()})
        print(f"[{name}] round {round_ + 1}/{args.rounds}: " + ", ".join(parts), flush=True)
    timed_compiles, timed_compile_s = compiles.since(mark)

    for key in sides:
        side[key]["t"] = statistics.median(times[key])
        if key in shares:
            side[key].update(
                compile_overhead_s=side[key]["cold_s"] - side[key]["t"],
                new_shapes=len(relex[key].compiled_shapes) - shapes_before[key],
                prepare_share=statistics.median(s["prepare"] for s in shares[key]),
                decode_share=statistics.median(s["decode"] for s in shares[key]),
                prepare_s=statistics.median(s["prepare"] * t for s, t in zip(shares[key], times[key])),
            )
    g_ents, g_rels = outputs["gliner"]
    result = dict(
        name=name, n=n, threshold=threshold, passing=passing, capped=capped, build_s=build_s, sides=sides,
        side=side, labels=labels, diffs=diffs, stable=stable, unsupported=unsupported, timed_compiles=timed_compiles,
        timed_compile_s=timed_compile_s, ents=sum(map(len, g_ents)) / n, rels=sum(map(len, g_rels)) / n,
        encoder=f"{some_relex.config.encoder.num_hidden_layers}x{some_relex.config.encoder.hidden_size}",
        head=f"width {cfg.hidden_size}, max_width {cfg.max_width}",
    )
    del model, relex, some_relex, runs, outputs
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


def implementation(key: str, args) -> str:
    import gliner

    return {
        "gliner": f"gliner {gliner.__version__} `inference`",
        "gliner_packed": f"gliner {gliner.__version__} `inference`, `InferencePackingConfig(max_length="
                         f"{args.gliner_packing_length})`",
        "relex": "relex-jax `RelexModel.inference`",
        "relex_packed": f"relex-jax `RelexModel.inference(packing={args.packing})`",
    }[key]


def tables(results: list[dict], args) -> str:
    packing = bool(args.packing)
    speed = [
        "| model | implementation | median pass (s) | texts/s | vs gliner |"
        + (" vs gliner + packing |" if packing else "")
        + " encoder tokens per pass: grid (padded share) | forward shapes (XLA compiles in cold pass, s) |",
        "|---|---|---|---|---|" + ("---|" if packing else "") + "---|---|",
    ]
    for r in results:
        t_gliner = r["side"]["gliner"]["t"]
        for key in r["sides"]:
            s = r["side"][key]
            grid = s.get("grid")
            grid_cell = f"{grid['grid']:,} ({100 * (1 - grid['real'] / grid['grid']):.1f}%)" if grid else "n/a"
            shapes_cell = f"{s['shapes']} ({s['cold_compiles']}, {s['cold_compile_s']:.1f})" if "shapes" in s else "-"
            speed.append(
                f"| {r['name']} | {implementation(key, args)} | {s['t']:.2f} | {r['n'] / s['t']:.1f} | "
                f"{t_gliner / s['t']:.2f}x |"
                + ((f" {r['side']['gliner_packed']['t'] / s['t']:.2f}x |" if "gliner_packed" in r["side"] else " n/a |")
                   if packing else "")
                + f" {grid_cell} | {shapes_cell} |")
    relex_keys = [key for key in ("relex", "relex_packed") if key in results[0]["sides"]]
    which = " (unpacked, packed)" if len(relex_keys) > 1 else ""
    details = [
        "| model | threshold | candidate spans passing / text (mean, max) | entities / text | relations / text "
        f"| outputs of the {len(results[0]['sides'])} sides | max score difference vs gliner (entities, relations) "
        f"| relex-jax compile overhead: cold - warm (s){which} | relex-jax prepare (split + tokenize"
        f"{' + pack' if packing else ''}) share{which} | decode share{which} |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        others = [r["diffs"]["gliner", key] for key in r["sides"][1:]]
        relex_sides = [r["side"][key] for key in relex_keys]
        overhead = ", ".join(f"{s['compile_overhead_s']:.1f}" for s in relex_sides)
        prepare = ", ".join(f"{100 * s['prepare_share']:.1f}% ({s['prepare_s']:.2f} s)" for s in relex_sides)
        decode = ", ".join(f"{100 * s['decode_share']:.1f}%" for s in relex_sides)
        details.append(
            f"| {r['name']} | {r['threshold']:.4g} | {r['passing'].mean():.1f}, {r['passing'].max()} "
            f"| {r['ents']:.2f} | {r['rels']:.2f} | identical on {r['n']} of {r['n']} texts "
            f"| {max(d['entity_score'] for d in others):.1e}, {max(d['relation_score'] for d in others):.1e} "
            f"| {overhead} | {prepare} | {decode} |"
        )
    return "\n".join(speed) + "\n\n" + "\n".join(details)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", choices=(*MODELS, "both"), default=None,
                        help="random fixture model(s) (default: both; not with --model-dir)")
    parser.add_argument("--model-dir", type=Path, default=None,
                        help="a relex-jax model directory (e.g. trained by `python -m relex_jax train`) instead of "
                             "the random models; gliner reads it converted by relex_to_gliner")
    parser.add_argument("--texts", type=int, default=576, help="texts per pass (CoNLL04 test repeated; 576 = 2 passes)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--packing", type=int, default=PACKED_ROW_TOKENS, metavar="TOKENS",
                        help="row length of the packed relex-jax side, `inference(packing=TOKENS)`; 0 leaves out "
                             "both packed sides (default %(default)s)")
    parser.add_argument("--gliner-packing-length", type=int, default=512, metavar="TOKENS",
                        help="max_length of gliner's InferencePackingConfig on its packed side; must hold the "
                             "longest text (gliner cuts longer ones) (default %(default)s)")
    parser.add_argument("--spans-per-text", type=float, default=12.0,
                        help="mean candidate spans per text that should pass the calibrated entity threshold")
    parser.add_argument("--threshold", type=float, default=None,
                        help="entity threshold of all sides instead of calibrating one (default with --model-dir: "
                             f"{MODEL_DIR_THRESHOLD})")
    parser.add_argument("--relation-threshold", type=float, default=0.5,
                        help="relation threshold of all sides")
    parser.add_argument("--max-spans-per-text", type=int, default=64,
                        help="raise the calibrated threshold so that no calibrated text keeps more candidate spans")
    parser.add_argument("--calibration-texts", type=int, default=0,
                        help="distinct texts the threshold calibration (or span count) reads (0: all of them)")
    parser.add_argument("--score-tolerance", type=float, default=1e-3,
                        help="largest entity / relation score difference between sides before the run stops")
    parser.add_argument("--record", action="store_true", help="append the result to benchmarks/RESULTS.md")
    args = parser.parse_args()
    if min(args.texts, args.batch_size, args.rounds, args.max_spans_per_text, args.gliner_packing_length) < 1 \
            or args.spans_per_text <= 0:
        parser.error("--texts, --batch-size, --rounds, --spans-per-text, --max-spans-per-text and "
                     "--gliner-packing-length must be positive")
    if args.packing < 0:
        parser.error("--packing must be a row length in tokens, or 0 for no packed sides")
    if args.calibration_texts < 0:
        parser.error("--calibration-texts must be 0 (all distinct texts) or positive")
    for option, value in (("--relation-threshold", args.relation_threshold), ("--threshold", args.threshold)):
        if value is not None and not 0 <= value <= 1:
            parser.error(f"{option} must be in [0, 1]")
    if args.score_tolerance < 0:
        parser.error("--score-tolerance must not be negative")
    if args.model_dir is not None:
        if args.model is not None:
            parser.error("--model and --model-dir exclude each other")
        args.model_dir = args.model_dir.expanduser().resolve()
        if not (args.model_dir / "relex_config.json").is_file():
            parser.error(f"--model-dir {args.model_dir} is not a relex-jax model directory (no relex_config.json)")
        threshold_given = args.threshold is not None
        args.threshold = MODEL_DIR_THRESHOLD if args.threshold is None else args.threshold
    else:
        threshold_given = args.threshold is not None
        args.model = args.model or "both"

    started = time.perf_counter()
    texts, distinct = load_texts(args.texts)
    torch.set_num_threads(os.cpu_count() or 1)
    compiles = CompileCounter()
    names = ((f"{args.model_dir.parent.name}/{args.model_dir.name}",) if args.model_dir
             else MODELS if args.model == "both" else (args.model,))
    results = [bench_model(name, texts, args, compiles) for name in names]

    table = tables(results, args)
    notes = []
    for r in results:
        words = f"{r['encoder']} encoder, head {r['head']}"
        side, labels = r["side"], r["labels"]
        extra = []
        if r["timed_compiles"] or any(side[k]["new_shapes"] for k in r["sides"] if k.startswith("relex")):
            extra.append(f"{r['timed_compiles']} XLA compilations ({r['timed_compile_s']:.1f} s) and "
                         f"{sum(side[k]['new_shapes'] for k in r['sides'] if k.startswith('relex'))} new forward "
                         "shapes during the timed rounds")
        if not r["stable"]:
            extra.append("timed-round outputs differ from the warm-up pass")
        extra += [f"{labels[k]} LEFT OUT: it fails on this model ({why})" for k, why in r["unsupported"].items()]
        passes = [f"{labels[k]} warm-up pass {side[k]['warm_s']:.2f} s" for k in r["sides"] if k.startswith("gliner")]
        passes += [f"{labels[k]} cold pass {side[k]['cold_s']:.2f} s ({side[k]['cold_trace_s']:.1f} s of it tracing + "
                   f"lowering; encoder grids, rows x tokens (forwards): {side[k]['grid']['shapes']})"
                   for k in r["sides"] if k.startswith("relex")]
        if ("relex", "relex_packed") in r["diffs"]:
            d = r["diffs"]["relex", "relex_packed"]
            passes.append(f"relex-jax packed vs unpacked max score difference {d['entity_score']:.1e} (entities), "
                          f"{d['relation_score']:.1e} (relations)")
        notes.append(f"{r['name']} ({words}): " + ", ".join(passes) + ("; " + "; ".join(extra) if extra else ""))
    if args.model_dir:
        weights = f"the relex-jax model directory {args.model_dir} (gliner: converted by relex_to_gliner)"
        threshold_words = (f"entity threshold {args.threshold:g}"
                           + ("" if threshold_given else " (the --model-dir default)")
                           + f", passed on average by {results[0]['passing'].mean():.1f} candidate spans per text "
                           f"(of {len(results[0]['passing'])} distinct texts)")
    else:
        small_note = f"; small re-drawn at std {SMALL_STD}" if "small" in names else ""
        weights = f"random weights (tests/gliner_fixtures.py{small_note})"
        threshold_words = (f"entity threshold {args.threshold:g} (given)" if threshold_given else
                           f"entity threshold calibrated with gliner's forward on {len(results[0]['passing'])} "
                           f"distinct texts for ~{args.spans_per_text:g} candidate spans per text, at most "
                           f"{args.max_spans_per_text} in any text")
    packing_words = (
        f"Packed sides: gliner's `InferencePackingConfig(max_length={args.gliner_packing_length})` (streams_per_batch "
        f"1: gliner 0.2.29 only validates it) packs each batch's texts first fit in input order into encoder streams "
        f"padded to the longest; relex-jax's `packing={args.packing}` packs each length-sorted batch first fit into "
        f"rows of {args.packing} tokens (the token bucket of a longer text), row count rounded to a power of two. "
        "Encoder grids: relex-jax's recorded, gliner's computed from the same per-text token counts; padded share "
        "= 1 - real tokens / grid tokens. "
        if args.packing else "No packed sides (--packing 0). "
    )
    summary = (
        f"{args.texts} texts per pass (the {distinct} CoNLL04 test sentences in file order, repeated), "
        f"{len(LABELS)} entity labels ({', '.join(LABELS)}) and {len(RELATIONS)} relation labels "
        f"({', '.join(RELATIONS)}), batch size {args.batch_size}, flat NER, float32, {weights}, {threshold_words} "
        f"(relation threshold {args.relation_threshold:g}); all sides' entities and relations identical text by text, "
        f"scores within {args.score_tolerance:g}; "
        f"one untimed warm-up pass each, then {args.rounds} alternating timed round{'s' if args.rounds > 1 else ''}, "
        f"medians. relex-jax groups texts by length before batching (gliner batches in input order). "
        f"{packing_words}Shares are of relex-jax's median pass. {'; '.join(notes)}. Machine: {machine_line()}"
    )
    command = (
        "python benchmarks/inference.py "
        + (f"--model-dir {args.model_dir} " if args.model_dir else f"--model {args.model} ")
        + f"--texts {args.texts} --batch-size {args.batch_size} --rounds {args.rounds} --packing {args.packing} "
        + (f"--gliner-packing-length {args.gliner_packing_length} " if args.packing else "")
        + (f"--threshold {args.threshold:g} " if args.threshold is not None else
           f"--spans-per-text {args.spans_per_text:g} --max-spans-per-text {args.max_spans_per_text} ")
        + f"--relation-threshold {args.relation_threshold:g}"
        + (f" --calibration-texts {args.calibration_texts}" if args.calibration_texts else "")
        + (f" --score-tolerance {args.score_tolerance:g}" if args.score_tolerance != 1e-3 else "")
        + " --record"
    )
    what = (f"relex-jax model directory {names[0]}" if args.model_dir else
            "tiny and deberta-v3-small-shaped models" if args.model == "both" else
            {"tiny": "tiny test model", "small": "deberta-v3-small-shaped model"}[args.model])
    title = f"End-to-end inference{' with packing' if args.packing else ''} (strings in, dicts out), {what}"
    finish(title, command, table, summary, args.record, started)


if __name__ == "__main__":
    main()
