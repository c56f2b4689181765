"""Corpus inference: `relex-jax predict` throughput and peak memory, and memory against input size.

    python benchmarks/corpus.py [--predict-texts 2000 20000] [--sizes 10000 100000 1000000]
                                [--batch-size 32] [--chunk-size 256] [--workdir DIR] [--keep] [--record]

Every run is `relex-jax predict` (JSONL output: pieces committed with fsync, then merged) in a
fresh process whose peak RSS comes from `wait4` (the kernel's high-water mark):

  floor          an interpreter that imports relex_jax's CLI and inference and starts jax's CPU backend
  predict        the tiny test model (tests/gliner_fixtures.py, random weights calibrated so entities
                 and relations fire), --predict-texts .jsonl records each: throughput (texts/s over
                 the prediction loop, the command's own figure) and peak RSS. The first size runs
                 with an empty compilation cache (it compiles), later ones reuse it.
  reader+writer  the same command and code path with the model's `inference` replaced by a stand-in
                 that returns two entities and one relation per text without computing (the model is
                 still loaded and hashed for the manifest): the cost and memory of reading (.jsonl:
                 the validating pass and the chunk pass; .parquet: row groups of 65,536 rows),
                 building records, committing pieces and merging, on inputs of --sizes records.
                 The ratios of their peak RSS are the "memory does not grow with the input" check.
                 Parquet holds up to 65,536 rows per row group (inputs) and merged output buffers as
                 many: below that many records both shrink with the input, above it they stay.

Why not the model on 1M lines: at ~320 texts/s (this tiny model, 2 CPU cores, warm) a million
texts take ~50 minutes; the prediction loop holds one chunk at a time whatever the input size,
which the two predict sizes show for the model path and the 1M-line runs for the input and output path.

Texts: sentences of the embedded synthetic corpus (relex_jax.data.synthetic, ~12 words), 10,000
distinct ones cycled, each record {"id": i, "text": ...}.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from common import finish, measure  # noqa: E402

GiB = 1024**3
LABELS, RELATIONS = "person,organization,location", "works at,located in"
FLOOR_CODE = "import jax, relex_jax.cli, relex_jax.inference, relex_jax.corpus_inference; jax.devices()"
ROW_GROUP = 65536


class StandIn:
    """`RelexModel` without the computation (see the module docstring): the first two words of a
    text as entities, a relation between them."""

    compiled_shapes = frozenset()

    def __init__(self, model_dir):
        self.model_dir = model_dir

    def check_settings(self, settings):
        pass

    def inference(self, texts, labels, relations=None, **settings):
        entities, found = [], []
        for text in texts:
            spans = [m.span() for m in re.finditer(r"\S+", text)][:2]
            ents = [{"start": s, "end": e, "text": text[s:e], "label": "person", "score": 0.9} for s, e in spans]
            entities.append(ents)
            sides = [{"start": d["start"], "end": d["end"], "text": d["text"], "type": d["label"], "entity_idx": i}
                     for i, d in enumerate(ents)]
            found.append([{"head": sides[0], "tail": sides[1], "relation": "works at", "score": 0.8}]
                         if len(sides) == 2 else [])
        return entities, found


def stand_in_predict(argv: list[str]) -> int:
    """The child of a reader+writer run: `relex-jax predict` with `StandIn` for the model."""
    from relex_jax import cli
    from relex_jax.inference import RelexModel

    model_dir = Path(argv[argv.index("--model") + 1])
    RelexModel.from_pretrained = classmethod(lambda cls, path: StandIn(model_dir))
    return cli.main(argv)


def prepare(directory: Path, sizes: list[int]) -> None:
    """The child that builds the tests' tiny model (and an entity threshold at which about a
    quarter of spans pass) and writes in_N.jsonl / in_N.parquet for every size; prints the model
    path and threshold. A child, so that torch and the inputs never inflate the parent, whose
    peak RSS every measured child would inherit at fork."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    sys.path.insert(0, str(REPO / "tests"))
    from gliner_fixtures import build_relex_model, reference_forward
    from test_relex_parity import LABELS as labels, RELATIONS as relations, TEXTS, moderate_threshold

    from relex_jax.data.synthetic import generate_examples

    model, path = build_relex_model(directory / "tiny", seed=0)
    threshold = moderate_threshold(reference_forward(model, TEXTS, labels, relations))
    texts = [" ".join(ex.tokens) for ex in generate_examples(10_000, seed=0)]
    for size in sizes:
        with (directory / f"in_{size}.jsonl").open("w", encoding="utf-8") as f:
            for start in range(0, size, 100_000):
                f.write("".join(json.dumps({"id": i, "text": texts[i % len(texts)]}) + "\n"
                                for i in range(start, min(size, start + 100_000))))
        schema = pa.schema([("id", pa.int64()), ("text", pa.string())])
        with pq.ParquetWriter(directory / f"in_{size}.parquet", schema) as writer:
            for start in range(0, size, ROW_GROUP):
                ids = list(range(start, min(size, start + ROW_GROUP)))
                writer.write_table(pa.table({"id": ids, "text": [texts[i % len(texts)] for i in ids]}))
    print(json.dumps({"model": str(path), "threshold": threshold}))


def lines_in(path: Path) -> int:
    with open(path, "rb") as f:
        return sum(block.count(b"\n") for block in iter(lambda: f.read(1 << 24), b""))


def texts_per_second(log: str) -> float:
    return float(re.search(r"\(([\d.]+) texts/s", log)[1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--predict-texts", type=int, nargs="+", default=[2000, 20000])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000],
                        help="records of the reader+writer runs (the ratios compare the largest with the others)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--chunk-size", type=int, default=256)
    parser.add_argument("--workdir", type=Path, help="where inputs and outputs go (default: a new dir under /tmp)")
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    parser.add_argument("--record", action="store_true", help="append the result to benchmarks/RESULTS.md")
    parser.add_argument("--prepare", type=Path, help=argparse.SUPPRESS)  # internal: the children
    parser.add_argument("--stand-in", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    args = parser.parse_args()
    sizes = sorted({*args.predict_texts, *args.sizes})
    if args.prepare:
        return prepare(args.prepare, sizes)
    if args.stand_in is not None:
        sys.exit(stand_in_predict(args.stand_in))

    started = time.perf_counter()
    work = Path(args.workdir or tempfile.mkdtemp(prefix="relex_corpus_", dir="/tmp"))
    work.mkdir(parents=True, exist_ok=True)
    rows, notes = [], {}
    try:
        print(f"building the model and writing inputs in {work} ...", flush=True)
        prepared = measure([sys.executable, str(Path(__file__).resolve()), "--prepare", str(work),
                            *sys.argv[1:]], work / "prepare.log")
        built = json.loads(prepared["log"].strip().splitlines()[-1])
        model, threshold = built["model"], built["threshold"]
        os.environ["RELEX_JAX_COMPILATION_CACHE"] = str(work / "xla_cache")  # empty at first: the first run compiles
        py = sys.executable
        floor = measure([py, "-c", FLOOR_CODE], work / "floor.log")
        rows.append(("import floor", "-", "-", f"{floor['wall']:.1f}", "-", floor["peak"]))

        def predict(kind: str, size: int, stand_in: bool, out_suffix: str) -> dict:
            out = work / f"out_{kind}_{size}{'_stand_in' if stand_in else ''}{out_suffix}"
            argv = ["predict", "--model", str(model), "--labels", LABELS, "--relations", RELATIONS,
                    "--threshold", str(threshold), "--input", str(work / f"in_{size}.{kind}"), "--output", str(out),
                    "--batch-size", str(args.batch_size), "--chunk-size", str(args.chunk_size)]
            command = [py, str(Path(__file__).resolve()), "--stand-in", *argv] if stand_in else [py, "-m", "relex_jax",
                                                                                                  *argv]
            run = measure(command, work / f"{out.name}.log")
            if out_suffix == ".jsonl" and lines_in(out) != size:  # (merging checked every piece's count)
                raise AssertionError(f"{out}: {lines_in(out)} records, expected {size}")
            out.unlink()
            print(f"  {'reader+writer' if stand_in else 'predict'} {kind} {size}: {run['wall']:.1f} s, "
                  f"{texts_per_second(run['log']):.0f} texts/s, peak {run['peak'] / 2**20:.1f} MiB", flush=True)
            return run

        for i, size in enumerate(args.predict_texts):
            run = predict("jsonl", size, False, ".jsonl")
            cache = "empty compilation cache" if i == 0 else "compilation cache warm"
            rows.append((f"predict, tiny model ({cache})", ".jsonl -> .jsonl", f"{size:,}", f"{run['wall']:.1f}",
                         f"{texts_per_second(run['log']):.1f}", run["peak"]))
            notes[size] = re.search(r"(\d+) entities, (\d+) relations", run["log"]).groups()
        peaks = {}
        for kind, suffix in (("jsonl", ".jsonl"), ("parquet", ".parquet")):
            for size in sorted(args.sizes):
                run = predict(kind, size, True, suffix)
                peaks[kind, size] = run["peak"]
                rows.append(("reader+writer (stand-in model)", f".{kind} -> {suffix}", f"{size:,}", f"{run['wall']:.1f}",
                             f"{texts_per_second(run['log']):,.0f}", run["peak"]))
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)

    table = "\n".join(
        ["| run | input -> output | records | wall (s) | texts/s (prediction loop) | peak RSS (GiB) |",
         "|---|---|---|---|---|---|"]
        + [f"| {name} | {io} | {n} | {wall} | {rate} | {peak / GiB:.3f} |" for name, io, n, wall, rate, peak in rows]
    )
    large = max(args.sizes)
    ratios = "; ".join(f"against {size:,}: " + ", ".join(f".{kind} {peaks[kind, large] / peaks[kind, size]:.2f}x"
                                                         for kind in ("jsonl", "parquet"))
                       for size in sorted(args.sizes)[:-1])
    found = "; ".join(f"{size:,} texts: {e} entities, {r} relations" for size, (e, r) in notes.items())
    import importlib.metadata as md

    versions = ", ".join(f"{p} {md.version(p)}" for p in ("jax", "pyarrow", "numpy"))
    summary = (
        f"Peak RSS of the reader+writer runs on {large:,} records {ratios} (Parquet: inputs hold up to 65,536 rows "
        f"per row group, and a merged Parquet output is written in row groups of as many, so below that many records "
        f"both shrink with the input; above, they stay). "
        f"--batch-size {args.batch_size}, --chunk-size {args.chunk_size} (one piece per chunk, fsync'd), "
        f"pieces merged into one file of the output's format at the end (wall times include interpreter start, imports, "
        f"loading and hashing the model, the validating pass over .jsonl, and the merge; texts/s is the command's "
        f"own figure over its prediction loop). The model: tests/gliner_fixtures.py tiny (2x64 DeBERTa, random "
        f"weights), entity threshold {threshold:.4f} ({found}). The stand-in returns 2 entities and 1 relation per "
        f"text without computing. Texts: 10,000 synthetic sentences (~12 words) cycled. Machine: CPU "
        f"({platform.machine()}, {os.cpu_count()} cores), Python {platform.python_version()}, {versions}"
    )
    command = " ".join(["python benchmarks/corpus.py", *sys.argv[1:]])
    finish("Corpus inference: predict throughput and memory against input size", command, table, summary,
           args.record, started)


if __name__ == "__main__":
    main()
