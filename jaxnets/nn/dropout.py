"""Dropout with PyTorch's meaning: ``p`` is the probability of ZEROING an element."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from jaxnets.core.registry import register
from jaxnets.nn._utils import check
from jaxnets.nn.module import Module, Params, State, need_key

__all__ = ["Dropout"]


@register(name="nn.Dropout")
class Dropout(Module):
    """Zeroes each element with probability ``p`` and scales the rest by ``1/(1-p)``, as
    ``torch.nn.Dropout(p=0.5)`` (torch's ``inplace`` has no meaning for immutable arrays).

    No params. Shapes: any ``x`` -> same shape and dtype. ``train=False`` is the identity;
    ``train=True`` needs ``key=`` (a fresh one each step). ``p=1`` gives zeros, as torch.

    Raises:
      ValueError: ``p`` outside ``[0, 1]``, or ``train=True`` without a ``key``.
    """

    p: float = 0.5

    def __post_init__(self) -> None:
        check(
            0.0 <= self.p <= 1.0,
            self,
            f"dropout probability has to be between 0 and 1, but got {self.p}.",
        )


    def apply(
        self,
        params: Params,
        state: State,
        x: Any,
        *,
        train: bool = False,
        key: jax.Array | None = None,
    ) -> tuple[jax.Array, State]:
        if not train or self.p == 0.0:
            return x, state
        key = need_key(self, key)
        if self.p == 1.0:
            return jnp.zeros_like(x), state
        keep = jax.random.bernoulli(key, 1.0 - self.p, jnp.shape(x))
        return jnp.where(keep, x * (1.0 / (1.0 - self.p)), jnp.zeros((), x.dtype)), state
