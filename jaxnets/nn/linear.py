"""Linear, Bilinear, Identity and Flatten/Unflatten: torch.nn's names, arguments and layouts."""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp

from jaxnets.core.registry import register
from jaxnets.nn import init as initializers
from jaxnets.nn._utils import check, freeze
from jaxnets.nn.module import Key, Module, Output, Params, State

__all__ = ["Linear", "Bilinear", "Identity", "Flatten", "Unflatten"]


@register(name="nn.Linear")
class Linear(Module):
    """``y = x @ weight.T + bias``, as ``torch.nn.Linear``.

    Params: ``weight (out_features, in_features)``, ``bias (out_features,)`` when ``bias``.
    Shapes: ``x (..., in_features)`` -> ``y (..., out_features)``.

    Raises:
      ValueError: the last axis of ``x`` is not ``in_features`` (the message says which axis
        has it, if one does).
    """

    in_features: int
    out_features: int
    bias: bool = True

    def init(self, key: jax.Array) -> tuple[Params, State]:
        shape = (self.out_features, self.in_features)
        return initializers.weight_and_bias(key, shape, self.out_features, bias=self.bias), {}

    def apply(
        self, params: Params, state: State, x: Any, *, train: bool = False, key: Key = None
    ) -> Output:
        if x.ndim == 0 or x.shape[-1] != self.in_features:
            _wrong_features(self, x)
        y = jnp.matmul(x, params["weight"].T)
        if self.bias:  # explicit rank: works under jax_numpy_rank_promotion="raise"
            y = y + jnp.reshape(params["bias"], (1,) * (y.ndim - 1) + (-1,))
        return y, state


def _wrong_features(layer: Linear, x: Any) -> None:
    hint = ""
    axes = [i for i, n in enumerate(x.shape) if n == layer.in_features]
    if axes:
        hint = (
            f" Axis {axes[0]} has {layer.in_features}: if it holds the features, move it last "
            f"first: jnp.moveaxis(x, {axes[0]}, -1)."
        )
    raise ValueError(
        f"Linear: expected input (..., {layer.in_features}) with in_features = "
        f"{layer.in_features} on the last axis, got shape {tuple(x.shape)}.{hint} The layer: "
        f"{layer!r}."
    )


@register(name="nn.Bilinear")
class Bilinear(Module):
    """``y = x1^T A x2 + b`` per output feature, as ``torch.nn.Bilinear``.

    Params: ``weight (out_features, in1_features, in2_features)``, ``bias (out_features,)`` when
    ``bias``; both ``U(±1/sqrt(in1_features))`` as torch.
    Shapes: ``x1 (..., in1_features)``, ``x2 (..., in2_features)`` -> ``(..., out_features)``;
    call ``apply(params, state, x1, x2)``.

    Raises:
      ValueError: an input's last axis does not match its ``in*_features``.
    """

    in1_features: int
    in2_features: int
    out_features: int
    bias: bool = True

    def init(self, key: jax.Array) -> tuple[Params, State]:
        bound = 1.0 / math.sqrt(self.in1_features)
        kw, kb = jax.random.split(key)
        shape = (self.out_features, self.in1_features, self.in2_features)
        params = {"weight": initializers.uniform(kw, shape, bound)}
        if self.bias:
            params["bias"] = initializers.uniform(kb, (self.out_features,), bound)
        return params, {}

    def apply(  # type: ignore[override]
        self, params: Params, state: State, x1: Any, x2: Any, *, train: bool = False, key: Key = None
    ) -> Output:
        check(
            x1.shape[-1] == self.in1_features and x2.shape[-1] == self.in2_features,
            self,
            f"expected inputs (..., {self.in1_features}) and (..., {self.in2_features}), got "
            f"shapes {tuple(x1.shape)} and {tuple(x2.shape)}.",
        )
        y = jnp.einsum("...i,oij,...j->...o", x1, params["weight"], x2)
        if self.bias:
            y = y + jnp.reshape(params["bias"], (1,) * (y.ndim - 1) + (-1,))
        return y, state


@register(name="nn.Identity")
class Identity(Module):
    """Returns its input unchanged, as ``torch.nn.Identity``. No params.

    Like torch's, it accepts any arguments and ignores them (so that ``Identity(54, unused=0.1)``
    can stand in for a layer built with arguments); none is stored in its config.
    """

    def __init__(self, *args: Any, **kwargs: Any):
        pass

    def apply(
        self, params: Params, state: State, x: Any, *, train: bool = False, key: Key = None
    ) -> Output:
        return x, state


@register(name="nn.Flatten")
class Flatten(Module):
    """Flattens dims ``start_dim..end_dim`` into one, as ``torch.nn.Flatten`` (default ``1..-1``).

    Shapes: ``(N, C, H, W)`` -> ``(N, C*H*W)``.
    """

    start_dim: int = 1
    end_dim: int = -1

    def apply(
        self, params: Params, state: State, x: Any, *, train: bool = False, key: Key = None
    ) -> Output:
        start = self.start_dim % x.ndim
        end = self.end_dim % x.ndim
        shape = x.shape[:start] + (-1,) + x.shape[end + 1 :]
        return jnp.reshape(x, shape), state


@register(name="nn.Unflatten")
class Unflatten(Module):
    """Expands dim ``dim`` into ``unflattened_size``, as ``torch.nn.Unflatten(dim, sizes)``.

    Shapes: ``(N, C*H*W)`` with ``Unflatten(1, (C, H, W))`` -> ``(N, C, H, W)``; one size may be
    ``-1``.

    Raises:
      ValueError: the sizes do not multiply to the size of ``dim``.
    """

    dim: int
    unflattened_size: tuple[int, ...]

    def __post_init__(self) -> None:
        freeze(self, "unflattened_size")

    def apply(
        self, params: Params, state: State, x: Any, *, train: bool = False, key: Key = None
    ) -> Output:
        d = self.dim % x.ndim
        sizes = tuple(self.unflattened_size)
        known = math.prod(s for s in sizes if s != -1)
        ok = x.shape[d] == known or (-1 in sizes and known > 0 and x.shape[d] % known == 0)
        check(ok, self, f"sizes {sizes} do not fill dim {self.dim} of shape {tuple(x.shape)}.")
        return jnp.reshape(x, x.shape[:d] + sizes + x.shape[d + 1 :]), state
