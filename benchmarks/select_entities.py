"""Entity selection under jit: `jnp.nonzero` (scatter=True, the jitted default) vs the
comparison count that ONNX export needs (scatter=False). Same outputs; this measures speed.

    PYTHONPATH=. python benchmarks/select_entities.py

Prints, per shape, the best of interleaved repeats (ms per call) for both formulations.
"""

from __future__ import annotations

import functools
import time

import jax
import numpy as np

from relex_jax.modeling.relations import select_entities


def best_ms(fn, args, repeats: int) -> float:
    jax.block_until_ready(fn(*args))
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - start)
    return 1e3 * min(times)


def main():
    rng = np.random.default_rng(0)
    print(f"jax {jax.__version__} on {jax.devices()[0].device_kind}")
    print("batch words width labels cap | nonzero ms | compare ms | ratio")
    for batch, words, width, labels, cap in [(8, 64, 12, 5, 32), (8, 64, 12, 5, 256), (8, 256, 12, 5, 64),
                                             (8, 256, 12, 5, 512), (32, 128, 12, 5, 128)]:
        logits = rng.normal(size=(batch, words, width, labels)).astype(np.float32)
        args = (logits, np.ones((batch, words, width), bool), np.ones((batch, labels), bool), np.float32(0.8))
        fns = {s: jax.jit(functools.partial(select_entities, max_entities=cap, scatter=s)) for s in (True, False)}
        for a, b in zip(fns[True](*args), fns[False](*args)):
            np.testing.assert_array_equal(a, b)
        ms = {s: [] for s in fns}
        for _ in range(5):  # interleaved, so load from other processes hits both alike
            for s, fn in fns.items():
                ms[s].append(best_ms(fn, args, 10))
        old, new = min(ms[True]), min(ms[False])
        print(f"{batch:5d} {words:5d} {width:5d} {labels:6d} {cap:3d} | {old:10.3f} | {new:10.3f} | {new / old:5.2f}")


if __name__ == "__main__":
    main()
