"""Sequential: children applied in order, keyed ``"0"``, ``"1"``, ... as in ``torch.nn.Sequential``."""

from __future__ import annotations

from typing import Any

import jax

from jaxnets.core.registry import register
from jaxnets.nn.module import Module, Params, State

__all__ = ["Sequential"]


@register(name="nn.Sequential")
class Sequential(Module):
    """``Sequential(l0, l1, ...)``: ``y = l1(l0(x))``; params ``{"0": p0, "1": p1, ...}``.

    Keys are PyTorch's: ``Sequential(Linear(4, 8), ReLU(), Linear(8, 2))`` has ``0.weight``,
    ``0.bias``, ``2.weight``, ``2.bias``. In training each child gets ``fold_in(key, i)``.
    """

    layers: tuple[Module, ...]

    def __init__(self, *layers: Module):
        for i, layer in enumerate(layers):
            if not isinstance(layer, Module):
                raise TypeError(f"Sequential: argument {i} is {type(layer).__name__}, not a jaxnets.nn.Module")
        object.__setattr__(self, "layers", tuple(layers))

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> Sequential:
        return cls(*config["layers"])

    def get_config(self) -> dict[str, Any]:
        return {"layers": self.layers}

    def __getitem__(self, i: int) -> Module:
        return self.layers[i]

    def __len__(self) -> int:
        return len(self.layers)

    def children(self) -> dict[str, Module | tuple[Module, ...]]:
        return {str(i): layer for i, layer in enumerate(self.layers)}

    def apply(
        self, params: Params, state: State, x: Any, *, train: bool = False, key: jax.Array | None = None
    ) -> tuple[Any, State]:
        new_state: State = {}
        for i, layer in enumerate(self.layers):
            k = None if key is None else jax.random.fold_in(key, i)
            x, new_state[str(i)] = layer.apply(params[str(i)], state[str(i)], x, train=train, key=k)
        return x, new_state
