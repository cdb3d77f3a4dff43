"""Padding layers with torch.nn's names and arguments: ZeroPad, ConstantPad, ReflectionPad,
ReplicationPad and CircularPad, each 1d/2d/3d. No params.

``padding`` is an int (all sides) or torch's flat tuple, last dim first:
``(left, right)``, ``(left, right, top, bottom)``, ``(left, right, top, bottom, front, back)``.
Only the last 1/2/3 dims are padded, so batched and unbatched inputs both work, as in torch.
"""

from __future__ import annotations

from typing import Any, ClassVar

import jax
import jax.numpy as jnp

from jaxnets.core.registry import register
from jaxnets.nn._utils import check, freeze, ntuple
from jaxnets.nn.module import Key, Module, Output, Params, State

__all__ = [
    "ZeroPad1d", "ZeroPad2d", "ZeroPad3d", "ConstantPad1d", "ConstantPad2d", "ConstantPad3d",
    "ReflectionPad1d", "ReflectionPad2d", "ReflectionPad3d", "ReplicationPad1d",
    "ReplicationPad2d", "ReplicationPad3d", "CircularPad1d", "CircularPad2d", "CircularPad3d",
]  # fmt: skip


class _PadNd(Module):
    padding: int | tuple[int, ...]

    _n: ClassVar[int] = 2
    _mode: ClassVar[str] = "constant"

    def __post_init__(self) -> None:
        freeze(self, "padding")
        ntuple(self.padding, 2 * self._n, "padding", type(self).__name__)

    def _value(self) -> float:
        return 0.0

    def apply(
        self, params: Params, state: State, x: Any, *, train: bool = False, key: Key = None
    ) -> Output:
        n = self._n
        flat = ntuple(self.padding, 2 * n, "padding", type(self).__name__)
        check(
            x.ndim in (n + 1, n + 2),
            self,
            f"expected a {n + 1}-d or {n + 2}-d input (unbatched or batched), got shape {x.shape}.",
        )
        pairs = [(flat[2 * i], flat[2 * i + 1]) for i in range(n)][::-1]  # torch lists the last dim first
        sizes = x.shape[-n:]
        if self._mode != "constant":  # torch's limits: reflect < size, circular <= size
            ok = all(
                lo >= 0 and hi >= 0 and (self._mode == "edge" or max(lo, hi) <= s - (self._mode == "reflect"))
                for (lo, hi), s in zip(pairs, sizes)
            )
            limit = {"reflect": "smaller than the", "wrap": "at most the", "edge": "for the"}[self._mode]
            check(ok, self, f"padding {flat} must be non-negative and {limit} input sizes {tuple(sizes)}.")
        lead = [(0, 0)] * (x.ndim - n)
        if self._mode == "constant":  # lax.pad also crops with negative padding, as torch does
            cfg = [(lo, hi, 0) for lo, hi in lead + pairs]
            return jax.lax.pad(x, jnp.asarray(self._value(), x.dtype), cfg), state
        return jnp.pad(x, lead + pairs, mode=self._mode), state


class _ConstantPadNd(_PadNd):
    value: float = 0.0

    def _value(self) -> float:
        return self.value


def _doc(name: str, kind: str, n: int, extra: str = "") -> str:
    sides = ("(left, right)", "(left, right, top, bottom)", "(left, right, top, bottom, front, back)")[n - 1]
    return (
        f"{kind} padding of the last {n} dim(s), as ``torch.nn.{name}``.\n\n"
        f"    ``padding``: an int or ``{sides}``.{extra} No params. Shapes: ``(N, C, *)`` or\n"
        f"    ``(C, *)`` with {n} padded dims -> each grows by its two paddings.\n\n"
        "    Raises:\n      ValueError: a wrong input rank or (non-constant modes) a padding torch refuses.\n    "
    )


_CONST = " ``value``: the fill; negative paddings crop, as torch."
_REFLECT = "Reflection (mirror, the edge not repeated)"
_REPLICATE = "Replication (the edge repeated)"
_CIRCULAR = "Circular (wrap-around)"


@register(name="nn.ZeroPad1d")
class ZeroPad1d(_PadNd):
    __doc__ = _doc("ZeroPad1d", "Zero", 1)
    _n: ClassVar[int] = 1
    _mode: ClassVar[str] = "constant"


@register(name="nn.ZeroPad2d")
class ZeroPad2d(_PadNd):
    __doc__ = _doc("ZeroPad2d", "Zero", 2)
    _n: ClassVar[int] = 2
    _mode: ClassVar[str] = "constant"


@register(name="nn.ZeroPad3d")
class ZeroPad3d(_PadNd):
    __doc__ = _doc("ZeroPad3d", "Zero", 3)
    _n: ClassVar[int] = 3
    _mode: ClassVar[str] = "constant"


@register(name="nn.ConstantPad1d")
class ConstantPad1d(_ConstantPadNd):
    __doc__ = _doc("ConstantPad1d", "Constant", 1, _CONST)
    _n: ClassVar[int] = 1
    _mode: ClassVar[str] = "constant"


@register(name="nn.ConstantPad2d")
class ConstantPad2d(_ConstantPadNd):
    __doc__ = _doc("ConstantPad2d", "Constant", 2, _CONST)
    _n: ClassVar[int] = 2
    _mode: ClassVar[str] = "constant"


@register(name="nn.ConstantPad3d")
class ConstantPad3d(_ConstantPadNd):
    __doc__ = _doc("ConstantPad3d", "Constant", 3, _CONST)
    _n: ClassVar[int] = 3
    _mode: ClassVar[str] = "constant"


@register(name="nn.ReflectionPad1d")
class ReflectionPad1d(_PadNd):
    __doc__ = _doc("ReflectionPad1d", _REFLECT, 1)
    _n: ClassVar[int] = 1
    _mode: ClassVar[str] = "reflect"


@register(name="nn.ReflectionPad2d")
class ReflectionPad2d(_PadNd):
    __doc__ = _doc("ReflectionPad2d", _REFLECT, 2)
    _n: ClassVar[int] = 2
    _mode: ClassVar[str] = "reflect"


@register(name="nn.ReflectionPad3d")
class ReflectionPad3d(_PadNd):
    __doc__ = _doc("ReflectionPad3d", _REFLECT, 3)
    _n: ClassVar[int] = 3
    _mode: ClassVar[str] = "reflect"


@register(name="nn.ReplicationPad1d")
class ReplicationPad1d(_PadNd):
    __doc__ = _doc("ReplicationPad1d", _REPLICATE, 1)
    _n: ClassVar[int] = 1
    _mode: ClassVar[str] = "edge"


@register(name="nn.ReplicationPad2d")
class ReplicationPad2d(_PadNd):
    __doc__ = _doc("ReplicationPad2d", _REPLICATE, 2)
    _n: ClassVar[int] = 2
    _mode: ClassVar[str] = "edge"


@register(name="nn.ReplicationPad3d")
class ReplicationPad3d(_PadNd):
    __doc__ = _doc("ReplicationPad3d", _REPLICATE, 3)
    _n: ClassVar[int] = 3
    _mode: ClassVar[str] = "edge"


@register(name="nn.CircularPad1d")
class CircularPad1d(_PadNd):
    __doc__ = _doc("CircularPad1d", _CIRCULAR, 1)
    _n: ClassVar[int] = 1
    _mode: ClassVar[str] = "wrap"


@register(name="nn.CircularPad2d")
class CircularPad2d(_PadNd):
    __doc__ = _doc("CircularPad2d", _CIRCULAR, 2)
    _n: ClassVar[int] = 2
    _mode: ClassVar[str] = "wrap"


@register(name="nn.CircularPad3d")
class CircularPad3d(_PadNd):
    __doc__ = _doc("CircularPad3d", _CIRCULAR, 3)
    _n: ClassVar[int] = 3
    _mode: ClassVar[str] = "wrap"
