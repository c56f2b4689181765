"""Relex forward (entities and relations): jitted relex-jax vs gliner's PyTorch model, in one run.

    python benchmarks/relex_forward.py [--batch 8] [--rounds 5] [--spans-per-text 40] [--record]

Model: a deberta-v3-small-shaped backbone (6 layers, hidden 768, 12 heads) under a gliner
span-relex head of width 768 (max_width 12, one BiLSTM layer, all pairs + pair MLP: the released
setting), random weights re-drawn and head outputs calibrated by the test fixtures
(tests/gliner_fixtures.py) so that entity probabilities spread out. Texts: the longest CoNLL04
test sentences from ../shared/data when present, else the fixture's generated sentences. The
entity threshold is set so that the most candidate-rich text has about --spans-per-text spans
taking part in relations (the others fewer): the regime in which gliner's pair MLP dominates.

Both implementations run the same collated batch (gliner's own preparation); only the model
forward is timed (no decoding), alternating call by call; relex-jax's compile time is reported
separately. The script first checks that both give the same relation logits.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from gliner_fixtures import CALIBRATION_TEXTS, build_relex_model, reference_forward, torch  # noqa: E402

from relex_jax import RelexModel  # noqa: E402
from relex_jax.data.processor import prompt_positions  # noqa: E402
from common import report, timed  # noqa: E402

CONLL04_TEST = ROOT.parent / "shared" / "data" / "conll04" / "test.jsonl"
LABELS = ["person", "organization", "location", "other"]
RELATIONS = ["works for", "located in", "lives in", "kill", "organization based in"]
V3_SMALL_SHAPED = dict(hidden_size=768, num_hidden_layers=6, num_attention_heads=12, intermediate_size=3072)


def load_texts(count: int) -> tuple[list[str], str]:
    if CONLL04_TEST.is_file():
        sentences = [json.loads(line)["tokens"] for line in CONLL04_TEST.read_text().splitlines() if line.strip()]
        longest = sorted(sentences, key=len, reverse=True)[:count]
        return [" ".join(tokens) for tokens in longest], f"the {count} longest CoNLL04 test sentences"
    return (CALIBRATION_TEXTS * count)[:count], "generated sentences (CoNLL04 not found)"


def model_inputs(relex: RelexModel, batch: dict) -> tuple:
    cfg = relex.config
    rows = batch["input_ids"].shape[0]
    return (
        batch["input_ids"],
        batch["attention_mask"],
        batch["words_mask"],
        batch["text_lengths"][:, 0],
        batch["span_mask"].reshape(rows, -1, cfg.max_width),
        *prompt_positions(batch["input_ids"], batch["attention_mask"], cfg.class_token_index),
        *prompt_positions(batch["input_ids"], batch["attention_mask"], cfg.rel_token_index),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--spans-per-text", type=int, default=40)
    parser.add_argument("--record", action="store_true", help="append the result to benchmarks/RESULTS.md")
    args = parser.parse_args()

    texts, source = load_texts(args.batch)
    with tempfile.TemporaryDirectory() as tmp:
        model, path = build_relex_model(
            Path(tmp) / "model", seed=0, std=0.05, encoder=V3_SMALL_SHAPED, hidden_size=768, max_width=12
        )
        relex = RelexModel.from_pretrained(path)

    # Threshold: the most candidate-rich text keeps about spans_per_text spans, the others fewer.
    first = reference_forward(model, texts, LABELS, RELATIONS, threshold=1.0)  # selects nothing: no pairs
    best = (1 / (1 + np.exp(-first["logits"].max(-1)))).reshape(first["span_mask"].shape)
    kth = [np.sort(row[mask])[::-1][min(args.spans_per_text, mask.sum()) - 1 : min(args.spans_per_text, mask.sum()) + 1]
           for row, mask in zip(best, first["span_mask"])]
    top = max(kth, key=lambda pair: pair[0])
    threshold = float(top.mean()) if len(top) == 2 else float(top[0]) - 1e-6
    ref = reference_forward(model, texts, LABELS, RELATIONS, threshold=threshold)
    kept = ref["entity_mask"].sum(1)
    inputs = model_inputs(relex, ref)

    compile_s = timed(lambda: relex.forward(inputs, threshold))
    out = relex.forward(inputs, threshold)
    pairs = np.asarray(out.pair_mask)
    ours = np.concatenate([np.asarray(out.relation_logits)[b][pairs[b]] for b in range(len(texts))])
    theirs = np.concatenate([ref["rel_logits"][b][ref["rel_mask"][b]] for b in range(len(texts))])
    error = float(np.abs(ours - theirs).max() / np.abs(theirs).max())

    prepared = model.prepare_batch(texts, LABELS, relations=RELATIONS)
    collated = model.collate_batch(
        prepared["input_x"], prepared["entity_types"], model.create_collator(),
        relation_types=prepared["relation_types"], label_names=prepared.get("label_names"),
    )

    def run_gliner():
        with torch.inference_mode():
            model.run_batch(collated, threshold=threshold, adjacency_threshold=threshold)

    def run_relex():
        relex.forward(inputs, threshold)

    run_gliner()  # warm-up
    gliner_times, relex_times = [], []
    for _ in range(args.rounds):
        gliner_times.append(timed(run_gliner))
        relex_times.append(timed(run_relex))
    t_gliner, t_relex = statistics.median(gliner_times), statistics.median(relex_times)

    cpu = f"{platform.machine()}, {os.cpu_count()} cores, torch threads {torch.get_num_threads()}"
    import gliner
    import jax

    table = "\n".join(
        [
            "| implementation | median forward (s) | texts/s | vs gliner |",
            "|---|---|---|---|",
            f"| gliner {gliner.__version__} (torch {torch.__version__}) | {t_gliner:.3f} | {len(texts) / t_gliner:.1f} | 1.00x |",
            f"| relex-jax (jax {jax.__version__}, jit) | {t_relex:.3f} | {len(texts) / t_relex:.1f} | "
            f"{t_gliner / t_relex:.2f}x |",
        ]
    )
    summary = (
        f"{len(texts)} texts ({source}; {int(ref['input_ids'].shape[1])} tokens padded), {len(LABELS)} entity "
        f"and {len(RELATIONS)} relation labels, spans taking part in relations per text {kept.tolist()} "
        f"(gliner scores {int(ref['rel_mask'].sum())} pairs), float32, {args.rounds} alternating rounds, CPU ({cpu}); "
        f"relex-jax compile + first run {compile_s:.1f} s; relation logits max relative difference {error:.1e}"
    )
    command = (
        f"python benchmarks/relex_forward.py --batch {args.batch} --rounds {args.rounds} "
        f"--spans-per-text {args.spans_per_text} --record"
    )
    report("Relex forward, deberta-v3-small-shaped backbone, released head", command, table, summary, args.record)

if __name__ == "__main__":
    main()
