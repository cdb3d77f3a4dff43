"""Helpers shared by the zoo's model files (not public)."""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp

from jaxnets.nn import GELU, Module, ReLU, SiLU

__all__ = ["build", "config_fields", "activation", "attend"]


def build(module: Any, **children: Any) -> None:
    """Sets ``field(init=False)`` children of a frozen module from ``__post_init__``.

    The zoo's models are torch-style: their hyperparameters are the config, their children are
    built from them (as a torch ``__init__`` does), so a stored config stays small and readable.
    """
    for name, child in children.items():
        object.__setattr__(module, name, child)


def config_fields(cls: type) -> tuple[str, ...]:
    """The hyperparameters of a zoo model class: its ``__init__`` fields (children excluded).

    Read from a default instance: a Module subclass becomes a dataclass when first instantiated.
    """
    return tuple(f.name for f in dataclasses.fields(cls()) if f.init)


# transformers' ACT2FN names -> layers ("gelu_new" is GPT-2's tanh approximation).
_ACTIVATIONS = {
    "gelu": lambda: GELU(),
    "gelu_new": lambda: GELU(approximate="tanh"),
    "gelu_pytorch_tanh": lambda: GELU(approximate="tanh"),
    "relu": lambda: ReLU(),
    "silu": lambda: SiLU(),
    "swish": lambda: SiLU(),
}


def activation(name: str, owner: str) -> Module:
    """The layer for a transformers ``hidden_act``/``activation_function`` name.

    Raises:
      ValueError: a name the zoo does not offer (the message lists the ones it does).
    """
    if name not in _ACTIVATIONS:
        raise ValueError(f"{owner}: activation {name!r} is not supported; use one of {sorted(_ACTIVATIONS)}.")
    return _ACTIVATIONS[name]()


def attend(
    q: jax.Array,
    k: jax.Array,
    v: jax.Array,
    num_heads: int,
    scale: float,
    allowed: jax.Array | None,
    dropout: Any,
) -> jax.Array:
    """Multi-head scaled dot-product attention on ``(N, L, E)`` projections -> ``(N, L, E)``.

    ``allowed``: bool, broadcastable to ``(N, heads, L, S)``; False scores get the dtype's lowest
    value before the softmax, as transformers' additive masks do. ``dropout(weights)`` is applied
    to the attention weights (a bound Dropout child, or the identity).
    """
    n, length, e = q.shape
    d = e // num_heads

    def heads(x: jax.Array) -> jax.Array:
        return jnp.transpose(jnp.reshape(x, (n, x.shape[1], num_heads, d)), (0, 2, 1, 3))

    scores = jnp.matmul(heads(q), jnp.swapaxes(heads(k), -1, -2)) * scale
    if allowed is not None:
        scores = jnp.where(allowed, scores, jnp.finfo(scores.dtype).min)
    weights = dropout(jax.nn.softmax(scores, axis=-1))
    out = jnp.matmul(weights, heads(v))  # (N, H, L, d)
    return jnp.reshape(jnp.transpose(out, (0, 2, 1, 3)), (n, length, e))
