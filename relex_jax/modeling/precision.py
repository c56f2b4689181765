"""Mixed-precision products that every backend can run."""

from __future__ import annotations

import jax
import jax.numpy as jnp


def einsum_f32(spec: str, a, b):
    """`jnp.einsum(spec, a, b, preferred_element_type=float32)`: float32 accumulation and result,
    whatever the operand dtypes (bfloat16 compute).

    XLA:CPU's runtime cannot execute a bf16 x bf16 -> f32 dot that it leaves unfused ("Unsupported
    element type for DotThunk::Execute"), and which dots stay unfused depends on the whole program
    (bf16 training steps hit it). On CPU the operands are therefore upcast first: a product of two
    bfloat16 numbers is exact in float32, so only the summation order can differ. GPUs and TPUs keep
    the mixed-precision dot. Float32 operands take the plain path on every platform.
    """
    if a.dtype == jnp.float32 and b.dtype == jnp.float32:
        return jnp.einsum(spec, a, b, preferred_element_type=jnp.float32)

    def mixed(a, b):
        return jnp.einsum(spec, a, b, preferred_element_type=jnp.float32)

    def upcast(a, b):
        return jnp.einsum(spec, a.astype(jnp.float32), b.astype(jnp.float32), preferred_element_type=jnp.float32)

    return jax.lax.platform_dependent(a, b, cpu=upcast, default=mixed)
