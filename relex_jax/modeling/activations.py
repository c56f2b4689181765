"""Activation functions by the names Hugging Face configs use (`hidden_act`, `conv_act`).

Each entry reproduces the PyTorch definition `transformers.activations.ACT2FN` uses for that
name, so a converted backbone computes the same function (e.g. "gelu" is the exact erf form,
"gelu_new" the tanh approximation).
"""

from __future__ import annotations

import math
from typing import Callable

import jax
import jax.numpy as jnp

from relex_jax.modeling.encoder_configs import ACTIVATION_NAMES, check_activation

_SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)


def _gelu_tanh(x):
    return 0.5 * x * (1.0 + jnp.tanh(_SQRT_2_OVER_PI * (x + 0.044715 * x**3)))


def _gelu_fast(x):
    return 0.5 * x * (1.0 + jnp.tanh(x * 0.7978845608 * (1.0 + 0.044715 * x * x)))


ACTIVATIONS: dict[str, Callable[[jax.Array], jax.Array]] = {
    "gelu": lambda x: jax.nn.gelu(x, approximate=False),
    "gelu_python": lambda x: jax.nn.gelu(x, approximate=False),
    "gelu_new": _gelu_tanh,
    "gelu_pytorch_tanh": _gelu_tanh,
    "gelu_fast": _gelu_fast,
    "quick_gelu": lambda x: x * jax.nn.sigmoid(1.702 * x),
    "relu": jax.nn.relu,
    "relu6": jax.nn.relu6,
    "silu": jax.nn.silu,
    "swish": jax.nn.silu,
    "mish": lambda x: x * jnp.tanh(jax.nn.softplus(x)),
    "tanh": jnp.tanh,
    "sigmoid": jax.nn.sigmoid,
    "linear": lambda x: x,
}
assert tuple(ACTIVATIONS) == ACTIVATION_NAMES, "the configs' name list must match this table"


def get_activation(name: str) -> Callable[[jax.Array], jax.Array]:
    """Return the activation called `name`, or raise naming the supported ones."""
    check_activation(name)
    return ACTIVATIONS[name]
