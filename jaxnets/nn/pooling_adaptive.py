"""AdaptiveAvgPool1d/2d/3d and AdaptiveMaxPool1d/2d/3d: pooling to a fixed output size, over
torch's windows ``[floor(i*size/out), ceil((i+1)*size/out))``, so non-divisible sizes match torch.

Rectangular windows make both pools separable: each spatial axis is pooled in turn.
"""

from __future__ import annotations

from typing import Any, ClassVar

import jax
import jax.numpy as jnp
import numpy as np

from jaxnets.core.registry import register
from jaxnets.nn._utils import check, freeze
from jaxnets.nn.module import Key, Module, Output, Params, State
from jaxnets.nn.pooling import LAYOUTS, check_input

__all__ = [
    "AdaptiveAvgPool1d", "AdaptiveAvgPool2d", "AdaptiveAvgPool3d",
    "AdaptiveMaxPool1d", "AdaptiveMaxPool2d", "AdaptiveMaxPool3d",
]  # fmt: skip


def windows(size: int, out: int) -> list[tuple[int, int]]:
    """torch's adaptive windows ``[start, end)`` along one axis."""
    return [((i * size) // out, -((-(i + 1) * size) // out)) for i in range(out)]


def adaptive_avg(x: jax.Array, axis: int, out: int) -> jax.Array:
    """Averages axis ``axis`` of ``x`` down (or up) to ``out`` entries over torch's windows."""
    size = x.shape[axis]
    if size % out == 0:  # equal windows: a reshape and a mean
        shape = x.shape[:axis] + (out, size // out) + x.shape[axis + 1 :]
        return x.reshape(shape).mean(axis=axis + 1)
    m = np.zeros((out, size))
    for i, (start, end) in enumerate(windows(size, out)):
        m[i, start:end] = 1.0 / (end - start)
    y = jnp.matmul(
        jnp.moveaxis(x, axis, -1), jnp.asarray(m.T, x.dtype), precision=jax.lax.Precision.HIGHEST
    )
    return jnp.moveaxis(y, -1, axis)


def _adaptive_max(x: jax.Array, axis: int, out: int) -> jax.Array:
    """Max over torch's windows along ``axis``; a short window repeats its last index (same max)."""
    size = x.shape[axis]
    spans = windows(size, out)
    width = max(end - start for start, end in spans)
    idx = np.array([[min(start + j, end - 1) for j in range(width)] for start, end in spans])
    g = jnp.take(x, jnp.asarray(idx.reshape(-1)), axis=axis)
    g = g.reshape(x.shape[:axis] + (out, width) + x.shape[axis + 1 :])
    return jnp.max(g, axis=axis + 1)  # NaN propagates, as torch's


class _AdaptivePoolNd(Module):
    output_size: int | None | tuple[int | None, ...]

    _n: ClassVar[int] = 2

    def __post_init__(self) -> None:
        freeze(self, "output_size")

    def _sizes(self, x: Any) -> tuple[int, ...]:
        n = self._n
        check_input(self, x, n)
        size = self.output_size
        sizes = (size,) * n if size is None or isinstance(size, int) else tuple(size)
        check(len(sizes) == n, self, f"output_size must be an int or {n} ints/None, got {size!r}.")
        outs = tuple(x.shape[-n + i] if s is None else s for i, s in enumerate(sizes))
        check(all(o > 0 for o in outs), self, f"output_size must be positive, got {size!r}.")
        return outs

    def _pool(self, x: jax.Array, axis: int, out: int) -> jax.Array:
        raise NotImplementedError

    def apply(
        self, params: Params, state: State, x: Any, *, train: bool = False, key: Key = None
    ) -> Output:
        outs = self._sizes(x)
        for i, out in enumerate(outs):
            axis = x.ndim - self._n + i
            if x.shape[axis] != out:
                x = self._pool(x, axis, out)
        return x, state


class _AdaptiveAvg(_AdaptivePoolNd):
    def _pool(self, x: jax.Array, axis: int, out: int) -> jax.Array:
        return adaptive_avg(x, axis, out)


class _AdaptiveMax(_AdaptivePoolNd):
    return_indices: bool = False

    def __post_init__(self) -> None:
        super().__post_init__()
        check(not self.return_indices, self, "return_indices=True is not supported.")

    def _pool(self, x: jax.Array, axis: int, out: int) -> jax.Array:
        return _adaptive_max(x, axis, out)


_DOC = """{what} to a fixed ``output_size``, as ``torch.nn.{name}``.

    ``output_size``: an int or {n} ints; ``None`` keeps that input size. Window ``i`` of an axis
    covers ``[floor(i*size/out), ceil((i+1)*size/out))``, as torch. No params.{extra}
    Shapes: ``{batched}`` or ``{unbatched}`` -> the same with the spatial sizes ``output_size``.

    Raises:
      ValueError: a wrong input rank, a non-positive output size{raises}.
    """


def _doc(what: str, name: str, n: int, extra: str = "", raises: str = "") -> str:
    b, u = LAYOUTS[n]
    return _DOC.format(what=what, name=name, n=n, extra=extra, batched=b, unbatched=u, raises=raises)


_MAX = (" ``return_indices=True`` is not supported.", ", ``return_indices=True``")


@register(name="nn.AdaptiveAvgPool1d")
class AdaptiveAvgPool1d(_AdaptiveAvg):
    __doc__ = _doc("Averages", "AdaptiveAvgPool1d", 1)
    _n: ClassVar[int] = 1


@register(name="nn.AdaptiveAvgPool2d")
class AdaptiveAvgPool2d(_AdaptiveAvg):
    __doc__ = _doc("Averages", "AdaptiveAvgPool2d", 2)
    _n: ClassVar[int] = 2


@register(name="nn.AdaptiveAvgPool3d")
class AdaptiveAvgPool3d(_AdaptiveAvg):
    __doc__ = _doc("Averages", "AdaptiveAvgPool3d", 3)
    _n: ClassVar[int] = 3


@register(name="nn.AdaptiveMaxPool1d")
class AdaptiveMaxPool1d(_AdaptiveMax):
    __doc__ = _doc("Max-pools", "AdaptiveMaxPool1d", 1, *_MAX)
    _n: ClassVar[int] = 1


@register(name="nn.AdaptiveMaxPool2d")
class AdaptiveMaxPool2d(_AdaptiveMax):
    __doc__ = _doc("Max-pools", "AdaptiveMaxPool2d", 2, *_MAX)
    _n: ClassVar[int] = 2


@register(name="nn.AdaptiveMaxPool3d")
class AdaptiveMaxPool3d(_AdaptiveMax):
    __doc__ = _doc("Max-pools", "AdaptiveMaxPool3d", 3, *_MAX)
    _n: ClassVar[int] = 3
