"""Encoder forward throughput: jitted Flax DeBERTa vs PyTorch eager `transformers`, in one run.

    python benchmarks/encoder.py [--batch 8] [--seq-len 128] [--rounds 10] [--record]

Both run the same randomly initialised deberta-v3-small-shaped model (6 layers, hidden 768,
12 heads, vocab 128100, 256 position buckets, c2p|p2c, shared keys), float32, on this machine's
CPU; the Flax weights are loaded from the torch checkpoint with `load_hf_encoder` and the outputs
are compared first. Timings alternate torch / JAX call by call so that drift hits both equally;
the median is reported. `--record` appends the table to benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import tempfile

import jax
import numpy as np
import torch
import transformers

import relex_jax
from common import report, timed
from relex_jax.modeling.deberta import DEBERTA_V3_ATTENTION

V3_SMALL_SHAPED = dict(
    vocab_size=128100,
    hidden_size=768,
    num_hidden_layers=6,
    num_attention_heads=12,
    intermediate_size=3072,
    max_position_embeddings=512,
    layer_norm_eps=1e-7,
    **DEBERTA_V3_ATTENTION,
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--record", action="store_true", help="append the result to benchmarks/RESULTS.md")
    args = parser.parse_args()

    torch.manual_seed(0)
    torch_model = transformers.DebertaV2Model(transformers.DebertaV2Config(**V3_SMALL_SHAPED)).eval()
    rng = np.random.default_rng(0)
    ids = rng.integers(1, V3_SMALL_SHAPED["vocab_size"], size=(args.batch, args.seq_len)).astype(np.int64)
    mask = np.ones_like(ids)
    torch_ids, torch_mask = torch.from_numpy(ids), torch.from_numpy(mask)

    with tempfile.TemporaryDirectory() as tmp:
        torch_model.save_pretrained(tmp)
        module, params = relex_jax.load_hf_encoder(tmp)
        scan_module, scan_params = relex_jax.load_hf_encoder(tmp, scan_layers=True)

    def run_torch():
        with torch.inference_mode():
            return torch_model(input_ids=torch_ids, attention_mask=torch_mask).last_hidden_state

    forward = jax.jit(module.apply)
    jax_ids, jax_mask = jax.numpy.asarray(ids, dtype=np.int32), jax.numpy.asarray(mask, dtype=np.int32)

    def run_jax():
        return forward({"params": params}, jax_ids, jax_mask).block_until_ready()

    compile_plain = timed(run_jax)
    compile_scan = timed(lambda: jax.jit(scan_module.apply)({"params": scan_params}, jax_ids, jax_mask).block_until_ready())
    ref = run_torch().numpy()
    err = float(np.abs(np.asarray(run_jax()) - ref).max() / np.abs(ref).max())

    torch_times, jax_times = [], []
    timed(run_torch)  # warm-up
    for _ in range(args.rounds):
        torch_times.append(timed(run_torch))
        jax_times.append(timed(run_jax))
    tokens = args.batch * args.seq_len
    t_torch, t_jax = statistics.median(torch_times), statistics.median(jax_times)

    cpu = f"{platform.machine()}, {os.cpu_count()} cores, torch threads {torch.get_num_threads()}"
    table = "\n".join(
        [
            f"| implementation | median forward (ms) | tokens/s | vs torch |",
            f"|---|---|---|---|",
            f"| torch {torch.__version__} eager (`transformers` {transformers.__version__}) "
            f"| {1e3 * t_torch:.1f} | {tokens / t_torch:,.0f} | 1.00x |",
            f"| relex-jax, jax {jax.__version__} jit | {1e3 * t_jax:.1f} | {tokens / t_jax:,.0f} "
            f"| {t_torch / t_jax:.2f}x |",
        ]
    )
    summary = (
        f"batch {args.batch} x {args.seq_len} tokens, float32, {args.rounds} alternating rounds, CPU ({cpu}); "
        f"Flax vs torch max relative difference {err:.1e}; XLA compile+first run: plain stack "
        f"{compile_plain:.1f} s, scanned stack {compile_scan:.1f} s"
    )
    command = f"python benchmarks/encoder.py --batch {args.batch} --seq-len {args.seq_len} --rounds {args.rounds} --record"
    report("Encoder forward, deberta-v3-small shape", command, table, summary, args.record)

if __name__ == "__main__":
    main()
