"""How training-batch shape buckets trade compilations against padding, on CoNLL04's real batches.

    python benchmarks/buckets.py [--model minilm] [--steps 1900] [--batch-size 8] [--seed 0]

Replays the batches `benchmarks/conll04.py`'s relex-jax side trains on (the same start's
tokenizer, `BatchStream` order and collation, seed --seed) and, for several bucket schemes, counts
the distinct padded shapes (one XLA compilation each) and how much larger the padded dimensions
are than each batch's own maximum, which is what gliner computes on. Tokens set the encoder's
cost; words set the span layer's (each word starts `max_width` spans); gold entities set the
relation layer's, quadratically. Nothing is timed: this picks `data.buckets` candidates to time.
Each scheme's `--relex-config` value for conll04.py is printed with it.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import jax
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from conll04 import DATA, MODELS, minilm_dir  # noqa: E402
from relex_jax.data.collate import CollateConfig, collate  # noqa: E402
from relex_jax.data.readers import read_jsonl  # noqa: E402
from relex_jax.training.init import ModelInit, initial_model  # noqa: E402
from relex_jax.data.stream import BatchStream  # noqa: E402
from relex_jax.data.processor import TRAINING_BUCKETS  # noqa: E402
from relex_jax.training.loop import default_buckets  # noqa: E402


def with_midpoints(sizes) -> list[int]:
    """Powers of two and the sizes halfway (in ratio) between them: 16, 24, 32, 48, 64, ..."""
    return sorted({*sizes, *(3 * size // 2 for size in sizes[:-1])})


SCHEMES = {
    "powers of two (default)": TRAINING_BUCKETS,
    "powers of two and midpoints": {"tokens": with_midpoints(TRAINING_BUCKETS["tokens"]),
                                    "words": with_midpoints(TRAINING_BUCKETS["words"]),
                                    "gold_entities": TRAINING_BUCKETS["gold_entities"]},
    "multiples of 16 tokens, 8 words": {"tokens": list(range(16, 1025, 16)), "words": list(range(8, 513, 8)),
                                        "gold_entities": TRAINING_BUCKETS["gold_entities"]},
}


def shapes(stream, steps, tokenizer, collate_config, buckets) -> np.ndarray:
    """(tokens, words, gold entities) of each of the first `steps` batches, padded to `buckets`."""
    out = []
    for number in range(steps):
        batch, rng, _ = stream.batch(number)
        collated = collate(batch, tokenizer, collate_config, rng, buckets=buckets)
        out.append((collated.inputs.input_ids.shape[1], collated.inputs.span_mask.shape[1],
                    collated.entity_index.shape[1]))
    return np.array(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", choices=tuple(MODELS), default="minilm")
    parser.add_argument("--steps", type=int, help="batches to replay (default: the model's steps in conll04.py)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    steps = args.steps or MODELS[args.model]["steps"]
    examples = read_jsonl(DATA / "train.jsonl")
    start = dict(MODELS[args.model]["start"])
    if start["init"] == "backbone":
        start["path"] = str(minilm_dir())
    with tempfile.TemporaryDirectory() as tmp:
        init = initial_model(ModelInit(**start), jax.random.PRNGKey(args.seed), Path(tmp),
                             [ex.tokens for ex in examples])
    collate_config = CollateConfig.from_relex_config(init.config)
    labels = {k: v for k, v in default_buckets(examples, collate_config).items() if k not in TRAINING_BUCKETS}
    stream = BatchStream(examples, args.batch_size, args.seed)
    exact = shapes(stream, steps, init.tokenizer, collate_config, labels)  # gliner's sizes: each batch's own
    tokens, words, entities = exact.T
    print(f"{steps} CoNLL04 training batches of {args.batch_size} ({args.model} tokenizer, seed {args.seed}): "
          f"{len({tuple(row) for row in exact})} distinct exact shapes; per-batch maxima: tokens "
          f"{tokens.min()}-{tokens.max()}, words {words.min()}-{words.max()}, gold entities "
          f"{entities.min()}-{entities.max()}\n")
    print("| scheme | distinct shapes | of them first seen after the first quarter | padded / exact: tokens "
          "| words | gold entity pairs |")
    print("|---|---|---|---|---|---|")
    for name, buckets in SCHEMES.items():
        padded = shapes(stream, steps, init.tokenizer, collate_config, {**buckets, **labels})
        first_seen = {}
        for number, row in enumerate(map(tuple, padded)):
            first_seen.setdefault(row, number)
        late = sum(number >= steps // 4 for number in first_seen.values())
        print(f"| {name} | {len(first_seen)} | {late} | {padded[:, 0].sum() / tokens.sum():.2f} "
              f"| {padded[:, 1].sum() / words.sum():.2f} | {(padded[:, 2] ** 2).sum() / (entities ** 2).sum():.2f} |")
    print()
    for name, buckets in SCHEMES.items():
        print(f"{name}: --relex-config '{json.dumps({'data': {'buckets': buckets}})}'")


if __name__ == "__main__":
    main()
