"""CosineSimilarity and PairwiseDistance, with torch.nn's arguments. No params."""

from __future__ import annotations

from typing import Any

import jax.numpy as jnp

from jaxnets.core.registry import register
from jaxnets.nn.module import Key, Module, Output, Params, State

__all__ = ["CosineSimilarity", "PairwiseDistance"]


@register(name="nn.CosineSimilarity")
class CosineSimilarity(Module):
    """``sum(x1 * x2) / (max(|x1|, eps) * max(|x2|, eps))`` along ``dim``, as
    ``torch.nn.CosineSimilarity(dim=1, eps=1e-8)`` (each norm clamped, as torch 2.x).

    Call: ``apply(params, state, x1, x2)``. Shapes: ``x1``, ``x2`` broadcastable -> their
    broadcast shape without ``dim``.
    """

    dim: int = 1
    eps: float = 1e-8

    def apply(  # type: ignore[override]
        self, params: Params, state: State, x1: Any, x2: Any, *, train: bool = False, key: Key = None
    ) -> Output:
        x1, x2 = jnp.broadcast_arrays(jnp.asarray(x1), jnp.asarray(x2))
        n1 = jnp.maximum(jnp.linalg.norm(x1, axis=self.dim, keepdims=True), self.eps)
        n2 = jnp.maximum(jnp.linalg.norm(x2, axis=self.dim, keepdims=True), self.eps)
        return jnp.sum((x1 / n1) * (x2 / n2), axis=self.dim), state


@register(name="nn.PairwiseDistance")
class PairwiseDistance(Module):
    """``||x1 - x2 + eps||_p`` along the last dim, as ``torch.nn.PairwiseDistance(p=2.0,
    eps=1e-6, keepdim=False)``.

    Call: ``apply(params, state, x1, x2)``. Shapes: ``(N, D)`` and ``(N, D)`` (or ``(D,)``) ->
    ``(N,)`` (``(N, 1)`` with ``keepdim``).
    """

    p: float = 2.0
    eps: float = 1e-6
    keepdim: bool = False

    def apply(  # type: ignore[override]
        self, params: Params, state: State, x1: Any, x2: Any, *, train: bool = False, key: Key = None
    ) -> Output:
        diff = jnp.asarray(x1) - jnp.asarray(x2) + self.eps
        return jnp.linalg.norm(diff, ord=self.p, axis=-1, keepdims=self.keepdim), state
