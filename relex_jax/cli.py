"""The `relex-jax` command line.

Subcommands so far:
  selfcheck   build the embedded tiny DeBERTa-v3-shaped encoder (no network, no GPU), run it
              jitted as a plain, rematerialised and scanned stack on a ragged batch, and check
              that the variants agree and that padding does not leak into real tokens.
  convert     gliner checkpoint (directory or hub id) -> relex-jax model directory, or back
              with --to-gliner
Inference (`predict`), training (`train`) and the quickstart land with later issues.
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np

EMBEDDED_CONFIG = dict(vocab_size=1000, hidden_size=128, num_hidden_layers=4, num_attention_heads=4, intermediate_size=512)


def selfcheck(args: argparse.Namespace) -> int:
    import flax.linen as nn
    import jax
    import jax.numpy as jnp

    from relex_jax.modeling.deberta import DEBERTA_V3_ATTENTION, DebertaConfig, DebertaV2Model, stack_layer_params

    config = DebertaConfig(**EMBEDDED_CONFIG, **DEBERTA_V3_ATTENTION)
    rng = np.random.default_rng(args.seed)
    lengths = sorted(rng.integers(1, args.seq_len + 1, size=args.batch).tolist(), reverse=True)
    lengths[0] = args.seq_len
    mask = (np.arange(args.seq_len)[None] < np.asarray(lengths)[:, None]).astype(np.int32)
    ids = rng.integers(1, config.vocab_size, size=mask.shape).astype(np.int32) * mask
    print(f"relex-jax selfcheck on {jax.devices()[0].platform}: {config.num_hidden_layers}-layer DeBERTa-v3-shaped "
          f"encoder (hidden {config.hidden_size}), batch {args.batch} x {args.seq_len} tokens, row lengths {lengths}")

    plain = DebertaV2Model(config)
    params = nn.meta.unbox(plain.init(jax.random.PRNGKey(args.seed), ids[:1], mask[:1])["params"])
    variants = {
        "plain": (plain, params),
        "remat": (plain.clone(remat=True), params),
        "scan": (plain.clone(scan_layers=True), stack_layer_params(params, config)),
    }
    outputs, failures = {}, []
    for name, (module, variant_params) in variants.items():
        forward = jax.jit(module.apply)
        start = time.perf_counter()
        out = forward({"params": variant_params}, ids, mask).block_until_ready()
        compiled = time.perf_counter() - start
        start = time.perf_counter()
        forward({"params": variant_params}, ids, mask).block_until_ready()
        print(f"  {name:6s} compile+run {compiled:6.2f} s   run {1e3 * (time.perf_counter() - start):7.1f} ms")
        outputs[name] = np.asarray(out)

    scale = np.abs(outputs["plain"]).max()
    for name in ("remat", "scan"):
        diff = np.abs(outputs[name] - outputs["plain"]).max() / scale
        print(f"  {name} vs plain: max relative difference {diff:.1e}")
        if not diff <= 1e-5:
            failures.append(f"{name} differs from the plain stack by {diff:.1e}")
    forward = jax.jit(plain.apply)
    for row, length in enumerate(lengths):
        alone = np.asarray(forward({"params": params}, ids[row : row + 1, :length], mask[row : row + 1, :length]))
        diff = np.abs(alone[0] - outputs["plain"][row, :length]).max() / scale
        if not diff <= 1e-5:
            failures.append(f"row {row}: padding changes real-token outputs by {diff:.1e}")
    print(f"  padding invariance checked on {len(lengths)} rows")
    for failure in failures:
        print(f"FAILED: {failure}", file=sys.stderr)
    print("selfcheck: " + ("FAILED" if failures else "OK"))
    return 1 if failures else 0


def convert(args: argparse.Namespace) -> int:
    import logging
    import time

    from relex_jax.checkpoint.convert import gliner_to_relex, relex_to_gliner

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    start = time.perf_counter()
    if args.to_gliner:
        out = relex_to_gliner(args.src, args.out, overwrite=args.overwrite)
        kind = "gliner checkpoint (load with gliner.GLiNER.from_pretrained)"
    else:
        out = gliner_to_relex(args.src, args.out, overwrite=args.overwrite)
        kind = "relex-jax model directory (load with relex_jax.RelexModel.from_pretrained)"
    print(f"wrote {kind}: {out} in {time.perf_counter() - start:.1f} s")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="relex-jax", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    check = sub.add_parser("selfcheck", help="run the embedded tiny encoder and check its variants agree")
    check.add_argument("--batch", type=int, default=4, help="rows in the ragged batch (default 4)")
    check.add_argument("--seq-len", type=int, default=64, help="padded sequence length (default 64)")
    check.add_argument("--seed", type=int, default=0)
    check.set_defaults(func=selfcheck)
    conv = sub.add_parser("convert", help="convert a gliner checkpoint to a relex-jax model directory, or back")
    conv.add_argument("src", help="gliner directory or hub id (or, with --to-gliner, a relex-jax directory)")
    conv.add_argument("out", help="output directory (written atomically)")
    conv.add_argument("--to-gliner", action="store_true", help="convert a relex-jax directory back to gliner")
    conv.add_argument("--overwrite", action="store_true", help="replace OUT if it exists")
    conv.set_defaults(func=convert)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "selfcheck" and (args.batch < 1 or args.seq_len < 1):
        parser.error("--batch and --seq-len must be positive")
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
