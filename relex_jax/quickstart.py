"""`relex-jax quickstart`: the whole pipeline in minutes on a laptop CPU, with no network.

1. Writes the embedded synthetic corpus (`relex_jax.data.synthetic`) as JSONL: train, dev, and a
   test split whose names never occur in training.
2. Trains a small DeBERTa-v3-shaped GLiNER-Relex model from scratch (`QUICKSTART_CONFIG`, a
   `configs/tiny_cpu.yaml`-like run, longer) with the training loop: Orbax checkpoints, metrics.
   Two settings matter for held-out names (measured, 1,500 steps: relation F1 0.34 -> 0.58 -> 0.89):
   a 300-piece tokenizer, so unseen names split into pieces the model has seen (a 1,000-piece
   one turns training names into whole tokens the model memorises), and no type-dropping
   augmentation (it trains for open label sets; the quickstart asks for one fixed set). 2,500
   steps reach relation F1 0.94 on the test split in about 4 minutes on 2 CPU cores.
3. Reloads the final model directory through `RelexModel.from_pretrained`.
4. Prints the entities and relations it finds in a few unseen sentences, then precision, recall
   and F1 on the held-out test split; the last line is `held-out relation F1: <value>`.

Re-running with the same --workdir reuses what is there: a finished training run is not
repeated (a crashed one resumes from its last checkpoint), and the report is recomputed.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

from relex_jax.compilation_cache import enable_compilation_cache
from relex_jax.data.synthetic import ENTITY_TYPES, RELATION_TYPES, write_jsonl

SPLIT_SIZES = {"train": 3000, "dev": 64, "test": 200}
UNSEEN_SENTENCES = [
    "Ingrid Solheim , who was born in Bergen , works for Fjordline Shipping .",
    "Tomasz Wielki founded Vistula Robotics , a company based in Gdansk .",
    "Born on 4 May 1961 , Amara Okafor now lives in Lagos .",
]

QUICKSTART_CONFIG = {
    "seed": 0,
    "model": {
        "init": "scratch",
        "vocab_size": 300,
        "encoder": {
            "hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4, "intermediate_size": 128,
            "max_position_embeddings": 512, "relative_attention": True, "position_buckets": 256,
            "pos_att_type": "p2c|c2p", "share_att_key": True, "norm_rel_ebd": "layer_norm",
            "position_biased_input": False, "hidden_dropout_prob": 0.1, "attention_probs_dropout_prob": 0.1,
        },
        "gliner": {"hidden_size": 64, "max_width": 4, "relations_layer": "none", "dropout": 0.1, "max_len": 384},
    },
    "data": {
        "batch_size": 8,
        "buckets": {"tokens": [96], "words": [32], "entities": [4], "relations": [8], "gold_entities": [8]},
        "collate": {"type_order": "sorted", "augment_data_prob": 0.0},
    },
    "loss": {"loss_reduction": "sum"},
    "optim": {"learning_rate": 1e-3, "others_lr": 1e-3, "lr_scheduler_type": "linear", "warmup_ratio": 0.05,
              "max_steps": 2500, "max_grad_norm": 1.0},
    "train": {"log_every_n_steps": 50},
    "checkpoint": {"every_n_steps": 250, "keep": 2},
    "eval": {"every_n_steps": 500, "batch_size": 32},
}


def write_data(data_dir: Path, seed: int = 0) -> dict[str, Path]:
    """The three splits as JSONL files (rewritten each time: generation is deterministic)."""
    return {split: write_jsonl(data_dir / f"{split}.jsonl", n, seed, split) for split, n in SPLIT_SIZES.items()}


def run(workdir: Path, max_steps: int | None = None) -> float:
    """Train (or reuse), reload, show and score; returns the held-out strict relation F1."""
    from relex_jax.cli import format_report
    from relex_jax.data.readers import read_jsonl
    from relex_jax.evaluation import evaluate
    from relex_jax.inference import RelexModel
    from relex_jax.training.config import config_from_dict
    from relex_jax.training.loop import train

    files = write_data(workdir / "data")
    raw = json.loads(json.dumps(QUICKSTART_CONFIG))
    raw["data"]["train"], raw["data"]["dev"] = str(files["train"]), str(files["dev"])
    if max_steps is not None:
        raw["optim"]["max_steps"] = max_steps
    config = config_from_dict(raw)
    start = time.perf_counter()
    summary = train(config, workdir / "run", resume=True)
    trained = time.perf_counter() - start
    if summary["last_loss"] is None:
        print(f"reusing the finished training run in {workdir / 'run'}", file=sys.stderr)
    else:
        print(f"trained {summary['step']} steps in {trained:.0f} s: loss {summary['first_loss']:.1f} -> "
              f"{summary['last_loss']:.1f}", file=sys.stderr)

    model = RelexModel.from_pretrained(workdir / "run" / "model")
    labels, relations = list(ENTITY_TYPES), list(RELATION_TYPES)
    print("\nUnseen sentences:")
    entities, found = model.inference(UNSEEN_SENTENCES, labels, relations)
    for text, ents, rels in zip(UNSEEN_SENTENCES, entities, found):
        print(f"\n  {text}")
        for e in ents:
            print(f"    entity    {e['text']!r} ({e['label']}, {e['score']:.2f})")
        for r in rels:
            print(f"    relation  {r['head']['text']!r} --{r['relation']}--> {r['tail']['text']!r} ({r['score']:.2f})")

    report = evaluate(model, read_jsonl(files["test"]), labels, relations, batch_size=32)
    (workdir / "test_report.json").write_text(json.dumps(report, indent=2))
    print(f"\nHeld-out test split ({report['texts']} texts, names unseen in training):")
    print(format_report(report))
    f1 = report["relations"]["strict"]["f1"]
    print(f"held-out relation F1: {f1:.4f}")
    return f1


def main(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("absl").setLevel(logging.WARNING)
    logging.getLogger("jax").setLevel(logging.WARNING)  # backend probing (no TPU, no GPU) at INFO
    enable_compilation_cache(args.compilation_cache)
    workdir = Path(args.workdir).expanduser()
    workdir.mkdir(parents=True, exist_ok=True)
    run(workdir, args.max_steps)
    return 0
