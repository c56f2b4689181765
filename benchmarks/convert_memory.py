"""Peak memory of `python -m convert` on a deberta-v3-large-sized gliner span-relex checkpoint.

    python benchmarks/convert_memory.py [--workdir DIR] [--keep] [--record]

Builds (in a child process, under /tmp) a randomly initialised gliner span-relex checkpoint whose
backbone has deberta-v3-large's shape (24 layers, hidden 1024, 16 heads, intermediate 4096, vocab
128100, relative attention with 256 position buckets, p2c|c2p, shared keys) and gliner hidden size
1024, max_width 12, one BiLSTM layer, relations_layer "none", saved with safetensors. Then runs,
each in a fresh subprocess whose peak RSS comes from `wait4` (the kernel's high-water mark):

  floor       an interpreter that only imports jax, orbax, relex_jax and its converter and starts
              jax's CPU backend (what every conversion pays before touching a tensor)
  to relex    python -m convert SRC OUT
  to gliner   python -m convert --to-gliner OUT BACK

and reports each peak against the size of the weights file. The acceptance bar is that a
conversion needs at most ~2x the weights size beyond that floor. `--record` appends the table
to benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from common import measure, report  # noqa: E402
from relex_jax.modeling.deberta import DEBERTA_V3_ATTENTION  # noqa: E402
GiB = 1024**3

VOCAB_SIZE = 128100
# deberta-v3-large's backbone (microsoft/deberta-v3-large config.json).
LARGE_ENCODER = dict(
    hidden_size=1024,
    num_hidden_layers=24,
    num_attention_heads=16,
    intermediate_size=4096,
    max_position_embeddings=512,
    **DEBERTA_V3_ATTENTION,
    layer_norm_eps=1e-7,
    hidden_act="gelu",
)
LARGE_GLINER = dict(
    hidden_size=1024,
    max_width=12,
    num_rnn_layers=1,
    relations_layer="none",
    triples_layer=None,
    span_mode="markerV0",
)

FLOOR_CODE = (
    "import jax, jax.numpy, orbax.checkpoint, safetensors.numpy, relex_jax, "
    "relex_jax.cli, relex_jax.checkpoint.convert; jax.devices()"
)


# --------------------------------------------------------------------------------------------------
# Building the checkpoint (runs in its own process, so that torch never inflates the parent)


def build_checkpoint(src: Path) -> None:
    """Write a large-sized random gliner span-relex checkpoint to `src` (backbone in `src`_backbone)."""
    sys.path.insert(0, str(REPO / "tests"))
    import torch
    import transformers
    from gliner import GLiNER, GLiNERConfig
    from gliner_fixtures import DEFAULT_ENCODER, DEFAULT_GLINER, build_tokenizer_dir

    backbone_dir = src.parent / f"{src.name}_backbone"
    build_tokenizer_dir(backbone_dir)
    tokenizer = transformers.AutoTokenizer.from_pretrained(backbone_dir)
    encoder_kw = {**DEFAULT_ENCODER, **LARGE_ENCODER}
    torch.manual_seed(0)
    # The tokenizer is the fixtures' small one: gliner resizes the table to len(tokenizer) + its
    # special tokens anyway, so the backbone starts small and the table is grown below.
    backbone = transformers.DebertaV2Model(transformers.DebertaV2Config(vocab_size=len(tokenizer), **encoder_kw))
    backbone.save_pretrained(backbone_dir)
    del backbone

    config = GLiNERConfig(model_name=str(backbone_dir), **{**DEFAULT_GLINER, **LARGE_GLINER})
    torch.manual_seed(0)
    model = GLiNER.from_config(config, backbone_from_pretrained=True, local_files_only=True)
    # Grow the word-embedding table to deberta-v3-large's 128100 rows (new rows ~ N(0, 0.02)) and
    # record it in both vocab_size fields, so the checkpoint is self-consistent at full size.
    encoder = model.model.token_rep_layer.bert_layer.model
    encoder.resize_token_embeddings(VOCAB_SIZE, mean_resizing=False)
    model.config.vocab_size = VOCAB_SIZE
    model.config.encoder_config.vocab_size = VOCAB_SIZE
    model.save_pretrained(src, safe_serialization=True)

    n_backbone = sum(p.numel() for p in encoder.parameters())
    n_total = sum(p.numel() for p in model.model.parameters())
    del model, encoder
    saved = json.loads((src / "gliner_config.json").read_text())
    enc = saved["encoder_config"]
    got = (saved["vocab_size"], enc["vocab_size"], enc["num_hidden_layers"], enc["hidden_size"], saved["hidden_size"])
    if got != (VOCAB_SIZE, VOCAB_SIZE, 24, 1024, 1024):
        raise AssertionError(f"saved config has (vocab, encoder vocab, layers, hidden, gliner hidden) = {got}")
    print(json.dumps({"backbone_params": n_backbone, "total_params": n_total}))


# --------------------------------------------------------------------------------------------------
# Measuring


def dir_size(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def check_round_trip(src: Path, back: Path) -> str:
    """Same tensor names and shapes in the input and round-tripped weights (headers only)."""
    from safetensors import safe_open

    def shapes(path: Path) -> dict:
        with safe_open(path / "model.safetensors", framework="numpy") as f:
            return {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}

    a, b = shapes(src), shapes(back)
    dropped = sorted(set(a) - set(b))
    if set(b) - set(a) or any(a[k] != b[k] for k in b) or any(not k.startswith("cross_fuser.") for k in dropped):
        raise AssertionError(f"round trip changed the tensors: {sorted(set(a) ^ set(b))[:10]}")
    return f"{len(b)} tensors, names and shapes identical" + (f" ({len(dropped)} unused dropped)" if dropped else "")


def machine() -> str:
    mem = ""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem = f", {int(line.split()[1]) / 1024**2:.0f} GiB RAM"
    except OSError:
        pass
    import importlib.metadata as md

    versions = ", ".join(f"{p} {md.version(p)}" for p in ("jax", "orbax-checkpoint", "safetensors", "numpy"))
    return f"CPU ({platform.machine()}, {os.cpu_count()} cores{mem}), Python {platform.python_version()}, {versions}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--workdir", type=Path, default=None, help="where to build (default: a new dir under /tmp)")
    parser.add_argument("--keep", action="store_true", help="keep the built checkpoints")
    parser.add_argument("--record", action="store_true", help="append the result to benchmarks/RESULTS.md")
    parser.add_argument("--build-into", type=Path, help=argparse.SUPPRESS)  # internal: the build child
    args = parser.parse_args()
    if args.build_into:
        build_checkpoint(args.build_into)
        return

    work = Path(args.workdir or tempfile.mkdtemp(prefix="relex_convert_mem_", dir="/tmp"))
    work.mkdir(parents=True, exist_ok=True)
    src, relex, back = work / "gliner_large", work / "relex_large", work / "gliner_back"
    try:
        print(f"building a deberta-v3-large-sized gliner span-relex checkpoint in {src} ...", flush=True)
        build = measure([sys.executable, str(Path(__file__).resolve()), "--build-into", str(src)], work / "build.log")
        params = json.loads(build["log"].strip().splitlines()[-1])
        weights = (src / "model.safetensors").stat().st_size
        print(f"  {params['total_params'] / 1e6:.1f}M params ({params['backbone_params'] / 1e6:.1f}M backbone), "
              f"model.safetensors {weights / GiB:.3f} GiB, built in {build['wall']:.0f} s", flush=True)

        py = sys.executable
        floor = measure([py, "-c", FLOOR_CODE], work / "floor.log")
        print(f"import floor: {floor['peak'] / GiB:.3f} GiB", flush=True)
        to_relex = measure([py, "-m", "convert", str(src), str(relex)], work / "to_relex.log")
        print(f"to relex: {to_relex['peak'] / GiB:.3f} GiB in {to_relex['wall']:.1f} s", flush=True)
        to_gliner = measure([py, "-m", "convert", "--to-gliner", str(relex), str(back)], work / "to_gliner.log")
        print(f"to gliner: {to_gliner['peak'] / GiB:.3f} GiB in {to_gliner['wall']:.1f} s", flush=True)
        round_trip = check_round_trip(src, back)
        orbax_dir = next(d for d in relex.iterdir() if d.is_dir())  # the Orbax checkpoint
        orbax_size, back_size = dir_size(orbax_dir), (back / "model.safetensors").stat().st_size
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)

    def row(name: str, run: dict, command: str) -> str:
        above = run["peak"] - floor["peak"]
        return (
            f"| {name} (`{command}`) | {run['peak'] / GiB:.2f} | {above / GiB:.2f} | {run['peak'] / weights:.2f}x "
            f"| {above / weights:.2f}x | {run['wall']:.1f} |"
        )

    table = "\n".join(
        [
            "| process | peak RSS (GiB) | peak - floor (GiB) | peak / weights | (peak - floor) / weights | wall (s) |",
            "|---|---|---|---|---|---|",
            f"| import floor (jax, orbax, relex_jax, CPU backend) | {floor['peak'] / GiB:.2f} | 0.00 "
            f"| {floor['peak'] / weights:.2f}x | - | {floor['wall']:.1f} |",
            row("gliner -> relex-jax", to_relex, "convert SRC OUT"),
            row("relex-jax -> gliner", to_gliner, "convert --to-gliner OUT BACK"),
        ]
    )
    summary = (
        f"weights: model.safetensors {weights / GiB:.3f} GiB ({weights:,} bytes; {params['total_params'] / 1e6:.1f}M "
        f"float32 params, {params['backbone_params'] / 1e6:.1f}M in the backbone), random init; Orbax "
        f"{orbax_dir.name}/ {orbax_size / GiB:.3f} GiB; round trip: {round_trip}, model.safetensors {back_size / GiB:.3f} GiB. "
        f"Peak RSS is each fresh subprocess's high-water mark (wait4 ru_maxrss); wall time includes interpreter "
        f"start and imports. Machine: {machine()}"
    )
    print()
    report("Checkpoint conversion memory, deberta-v3-large shape", "python benchmarks/convert_memory.py --record",
           table, summary, args.record)

if __name__ == "__main__":
    main()
