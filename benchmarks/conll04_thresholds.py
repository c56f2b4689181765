"""Thresholds for trained CoNLL04 models: one shared threshold vs separate entity and relation
thresholds, each chosen on dev, scored on test.

    python benchmarks/conll04_thresholds.py DIR/seed0/gliner DIR/seed0/relex ... [--grid 0.2 ... 0.9] [--record]

The models are relex-jax model directories, e.g. those kept by `benchmarks/conll04.py --keep-models
DIR` (DIR/seedN/{gliner,relex}: gliner's side already converted back). Inference as in
conll04.py's scoring (`inference_words` on the dataset's own tokens, the 4 entity and 5 relation
types asked for in every text, flat NER, batch 32).

Three thresholds decide the output: the entity threshold (which also selects the entities that
relations are built from), the adjacency threshold (which pairs are scored; it defaults to the
entity threshold and stays tied to it here) and the relation threshold (a strict cut on each
relation's own probability, applied last). So one dev pass per entity threshold, at the lowest
relation threshold of the grid, gives every relation threshold by filtering on the relations'
scores; the script checks that shortcut against a direct pass once per model.

  shared    entity = relation threshold, the one with the best dev relation F1 (then entity F1):
            conll04.py's choice, over this script's grid.
  separate  the (entity, relation) pair with the best dev relation F1 (then entity F1).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import jax  # noqa: E402

from common import finish  # noqa: E402
from conll04 import DATA, pct  # noqa: E402
from inference import machine_line  # noqa: E402
from relex_jax.data.readers import read_jsonl  # noqa: E402
from relex_jax.evaluation import score_examples  # noqa: E402
from relex_jax.inference import RelexModel  # noqa: E402

BATCH = 32


def predict(model, examples, types, entity_threshold: float, relation_threshold: float):
    entity_types, relation_types = types
    return model.inference_words([list(e.tokens) for e in examples], entity_types, relation_types,
                                 threshold=entity_threshold, relation_threshold=relation_threshold, batch_size=BATCH)


def cut(predictions, relation_threshold: float):
    """The predictions with only the relations scored above `relation_threshold` (strictly, as decoding does)."""
    entities, relations = predictions
    return entities, [[r for r in row if r.score > relation_threshold] for row in relations]


def objective(report: dict) -> tuple[float, float]:
    """What thresholds are chosen by: relation F1, then entity F1."""
    return report["relations"]["strict"]["f1"], report["entities"]["strict"]["f1"]


def dev_grid(model, dev, types, grid: list[float]) -> dict[tuple[float, float], dict]:
    """Dev reports for every (entity, relation) threshold pair of the grid."""
    reports = {}
    for entity_threshold in grid:
        low = predict(model, dev, types, entity_threshold, grid[0])
        for relation_threshold in grid:
            reports[entity_threshold, relation_threshold] = score_examples(
                dev, *cut(low, relation_threshold), *types)
    top = grid[-1]  # the shortcut must equal a direct pass
    direct = score_examples(dev, *predict(model, dev, types, top, top), *types)
    if direct != reports[top, top]:
        sys.exit(f"error: filtering relations by score differs from a pass at relation threshold {top:g}")
    return reports


def score_model(model_dir: Path, dev, test, types, grid: list[float]) -> dict:
    model = RelexModel.from_pretrained(model_dir, devices=jax.devices()[:1])
    reports = dev_grid(model, dev, types, grid)
    shared = max(((t, t) for t in grid), key=lambda pair: objective(reports[pair]))
    separate = max(reports, key=lambda pair: objective(reports[pair]))
    out = {}
    for name, (entity_threshold, relation_threshold) in (("shared", shared), ("separate", separate)):
        report = score_examples(test, *predict(model, test, types, entity_threshold, relation_threshold), *types)
        chosen = (entity_threshold, relation_threshold)
        out[name] = dict(thresholds=chosen, dev=objective(reports[chosen]),
                         entity=report["entities"]["strict"], relation=report["relations"]["strict"],
                         relation_boundaries=report["relations"]["boundaries"])
        print(f"{model_dir} {name}: entity {entity_threshold:g}, relation {relation_threshold:g} (dev relation F1 "
              f"{100 * out[name]['dev'][0]:.1f}); test entity F1 {100 * report['entities']['strict']['f1']:.1f}, "
              f"relation F1 {100 * report['relations']['strict']['f1']:.1f}", flush=True)
    return out


def label(model_dir: Path) -> str:
    """seedN/side for conll04.py's kept models, else the path."""
    return f"{model_dir.parent.name}/{model_dir.name}" if model_dir.parent.name.startswith("seed") else str(model_dir)


def tables(results: dict[str, dict]) -> str:
    rows = ["| model | thresholds | entity / relation threshold (dev) | dev relation F1 | entity P / R / F1 "
            "| relation P / R / F1 (strict) | relation P / R / F1 (boundaries) |",
            "|---|---|---|---|---|---|---|"]
    for name, settings in results.items():
        for setting, r in settings.items():
            rows.append(f"| {name} | {setting} | {r['thresholds'][0]:g} / {r['thresholds'][1]:g} "
                        f"| {100 * r['dev'][0]:.1f} | {pct(r['entity'])} | {pct(r['relation'])} "
                        f"| {pct(r['relation_boundaries'])} |")
    sides = sorted({name.split("/")[-1] for name in results})
    summary = ["| side | thresholds | models | entity F1, mean | relation F1 strict, mean | relation F1 boundaries, mean |",
               "|---|---|---|---|---|---|"]
    for side in sides:
        for setting in ("shared", "separate"):
            runs = [s[setting] for name, s in results.items() if name.split("/")[-1] == side]
            summary.append(f"| {side} | {setting} | {len(runs)} | "
                           + " | ".join(f"{100 * statistics.mean(r[k]['f1'] for r in runs):.1f}"
                                        for k in ("entity", "relation", "relation_boundaries")) + " |")
    return "\n".join(summary) + "\n\n" + "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("models", type=Path, nargs="+", help="relex-jax model directories")
    parser.add_argument("--grid", type=float, nargs="+", default=[0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9],
                        help="thresholds tried for entities and for relations")
    parser.add_argument("--record", action="store_true", help="append the result to benchmarks/RESULTS.md")
    args = parser.parse_args()
    grid = sorted(set(args.grid))
    if not all(0 < t < 1 for t in grid):
        parser.error("every --grid threshold must be in (0, 1)")
    for path in args.models:
        if not (path / "relex_config.json").is_file():
            parser.error(f"{path} is not a relex-jax model directory (no relex_config.json)")
    for split in ("dev", "test"):
        if not (DATA / f"{split}.jsonl").is_file():
            sys.exit(f"error: {DATA / f'{split}.jsonl'} not found (the benchmark needs ../shared/data/conll04)")

    started = time.perf_counter()
    dev, test = read_jsonl(DATA / "dev.jsonl"), read_jsonl(DATA / "test.jsonl")
    types = (sorted({e[2] for ex in test for e in ex.entities}), sorted({r[2] for ex in test for r in ex.relations}))
    results = {label(path): score_model(path, dev, test, types, grid) for path in args.models}
    command = (f"python benchmarks/conll04_thresholds.py {' '.join(map(str, args.models))} --grid "
               f"{' '.join(f'{t:g}' for t in grid)} --record")
    summary = (f"Trained CoNLL04 models scored on test ({len(test)} sentences) at thresholds chosen on dev "
               f"({len(dev)} sentences) by relation F1 (then entity F1) among {', '.join(f'{t:g}' for t in grid)}: "
               f"shared = one threshold for entities and relations (adjacency tied to the entity threshold), "
               f"separate = the best (entity, relation) pair. `inference_words` on the dataset's own tokens, the 4 "
               f"entity and 5 relation types asked for in every text, flat NER, micro P/R/F1 in %. "
               f"Machine: {machine_line()}")
    finish("CoNLL04 thresholds: shared vs separate entity / relation", command, tables(results), summary,
           args.record, started)


if __name__ == "__main__":
    main()
