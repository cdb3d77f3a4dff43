"""What a model is, as far as the layers below ``jaxnets.nn`` need to know.

``jaxnets.nn.Module`` satisfies this protocol, and so may any other object; the core, the files
and the checkpoints only ever ask these questions, so they never import ``jaxnets.nn``.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Protocol, runtime_checkable

import jax

__all__ = ["Model", "is_model"]


@runtime_checkable
class Model(Protocol):
    """A model spec: pure ``init``/``apply`` and its sub-models by PyTorch-style path.

    * ``init(key) -> (params, state)``: fresh parameters and buffers (nested dicts).
    * ``apply(params, state, x, *, train=False, key=None) -> (y, new_state)``.
    * ``named_children() -> iterator of (name, model)``: the direct sub-models (``"fc1"``,
      ``"blocks.0"``), as ``torch.nn.Module.named_children``.
    * ``named_modules() -> iterator of (path, model)``: the model itself under ``""``, then every
      sub-model under its dotted path (``"features.0"``), as ``torch.nn.Module.named_modules``.
    """

    def init(self, key: jax.Array) -> tuple[Any, Any]: ...

    def apply(
        self, params: Any, state: Any, x: Any, *, train: bool = False, key: jax.Array | None = None
    ) -> tuple[Any, Any]: ...

    def named_children(self) -> Iterator[tuple[str, Any]]: ...

    def named_modules(self) -> Iterator[tuple[str, Any]]: ...


def is_model(x: Any) -> bool:
    """Whether ``x`` is a model spec (an instance satisfying :class:`Model`, not a class)."""
    # The attribute test first: the protocol check costs ~9 us a call, and module walks ask this
    # of every field (the protocol needs the attribute, so the answer is the same).
    return not isinstance(x, type) and hasattr(x, "named_modules") and isinstance(x, Model)
