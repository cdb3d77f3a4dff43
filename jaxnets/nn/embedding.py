"""Embedding: a lookup table with torch.nn.Embedding's arguments, init and ``padding_idx``."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from jaxnets.core.registry import register
from jaxnets.nn import init as initializers
from jaxnets.nn._utils import check
from jaxnets.nn.module import Module, Params, State

__all__ = ["Embedding"]


@register(name="nn.Embedding")
class Embedding(Module):
    """Rows of ``weight`` picked by integer indices, as ``torch.nn.Embedding``.

    Params: ``weight (num_embeddings, embedding_dim)`` ~ ``N(0, 1)`` as torch, with row
    ``padding_idx`` (negative counts from the end) zero. As in torch, the padding row gets no
    gradient, so training leaves it unchanged. (torch's ``max_norm``/``sparse`` are not supported.)

    Shapes: ``indices (*)`` int -> ``(*, embedding_dim)``. Indices ``>= num_embeddings`` give NaN rows
    and negative ones count from the end (JAX's ``take(mode="fill")``), where torch raises for
    both: check indices upstream if they can be out of range.

    Raises:
      ValueError: ``padding_idx`` outside ``[-num_embeddings, num_embeddings)``.
    """

    num_embeddings: int
    embedding_dim: int
    padding_idx: int | None = None

    def __post_init__(self) -> None:
        if self.padding_idx is not None:
            check(
                -self.num_embeddings <= self.padding_idx < self.num_embeddings,
                self,
                f"padding_idx must be within [-{self.num_embeddings}, {self.num_embeddings}), got {self.padding_idx}.",
            )

    @property
    def _pad(self) -> int | None:
        return None if self.padding_idx is None else self.padding_idx % self.num_embeddings

    def init(self, key: jax.Array) -> tuple[Params, State]:
        w = initializers.normal(key, (self.num_embeddings, self.embedding_dim))
        if self._pad is not None:
            w = w.at[self._pad].set(0.0)
        return {"weight": w}, {}

    def apply(
        self,
        params: Params,
        state: State,
        x: Any,
        *,
        train: bool = False,
        key: jax.Array | None = None,
    ) -> tuple[jax.Array, State]:
        w = params["weight"]
        if self._pad is not None:  # torch gives the padding row no gradient
            w = w.at[self._pad].set(jax.lax.stop_gradient(w[self._pad]))
        return jnp.take(w, x, axis=0, mode="fill"), state
