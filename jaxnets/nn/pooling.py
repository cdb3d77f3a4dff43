"""MaxPool1d/2d/3d and AvgPool1d/2d/3d over channels-first activations, with torch's output sizes
(``ceil_mode`` included) and torch's averaging divisors at the borders. Adaptive pools are in
:mod:`.pooling_adaptive`.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Any, ClassVar

import jax
import jax.numpy as jnp
import numpy as np

from jaxnets.core.registry import register
from jaxnets.nn._utils import check, freeze, ntuple
from jaxnets.nn.module import Key, Module, Output, Params, State

__all__ = ["MaxPool1d", "MaxPool2d", "MaxPool3d", "AvgPool1d", "AvgPool2d", "AvgPool3d"]

_Size = int | tuple[int, ...]
LAYOUTS = {1: ("(N, C, L)", "(C, L)"), 2: ("(N, C, H, W)", "(C, H, W)"), 3: ("(N, C, D, H, W)", "(C, D, H, W)")}


def check_input(layer: Module, x: Any, n: int) -> None:
    """A pool's input is ``(N, C, *spatial)`` or ``(C, *spatial)`` with ``n`` spatial dims."""
    batched, unbatched = LAYOUTS[n]
    check(
        x.ndim in (n + 1, n + 2),
        layer,
        f"expected input {batched} or {unbatched}, got shape {x.shape}.",
    )


def _out_size(size: int, k: int, s: int, p: int, d: int, ceil_mode: bool) -> int:
    """torch's ``pooling_output_shape``: a ceil-mode window must start inside the input or left pad."""
    eff = d * (k - 1) + 1
    num = size + 2 * p - eff + (s - 1 if ceil_mode else 0)
    out = num // s + 1
    if ceil_mode and (out - 1) * s >= size + p:
        out -= 1
    return out


def _pads(size: int, out: int, k: int, s: int, p: int, d: int) -> tuple[int, int]:
    """(low, high) padding giving exactly ``out`` windows (ceil mode may need more on the right)."""
    return p, max(p, (out - 1) * s + d * (k - 1) + 1 - size - p)


class _PoolNd(Module):
    if TYPE_CHECKING:  # the fields each pool declares (not fields here: they would reorder them)
        kernel_size: _Size
        stride: _Size | None
        padding: _Size
        ceil_mode: bool

    _n: ClassVar[int] = 2

    def _geometry(
        self, x: Any, dilation: _Size = 1
    ) -> tuple[list[tuple[int, int]], tuple[int, ...], tuple[int, ...], tuple[int, ...]]:
        """Per spatial dim: pads, kernel, stride, dilation; checked as torch checks them."""
        n, name = self._n, type(self).__name__
        check_input(self, x, n)
        k = ntuple(self.kernel_size, n, "kernel_size", name)
        s = k if self.stride is None else ntuple(self.stride, n, "stride", name)
        p = ntuple(self.padding, n, "padding", name)
        d = ntuple(dilation, n, "dilation", name)
        check(
            all(pi <= ki // 2 for pi, ki in zip(p, k)),
            self,
            f"padding {p} should be at most half of kernel size {k}.",
        )
        sizes = x.shape[-n:]
        outs = [
            _out_size(m, ki, si, pi, di, self.ceil_mode)
            for m, ki, si, pi, di in zip(sizes, k, s, p, d)
        ]
        check(
            all(o > 0 for o in outs),
            self,
            f"input spatial size {sizes} is too small for kernel {k}, padding {p}, dilation {d}.",
        )
        pads = [
            _pads(m, o, ki, si, pi, di) for m, o, ki, si, pi, di in zip(sizes, outs, k, s, p, d)
        ]
        return pads, k, s, d


class _MaxPoolNd(_PoolNd):
    kernel_size: _Size
    stride: _Size | None = None
    padding: _Size = 0
    dilation: _Size = 1
    return_indices: bool = False
    ceil_mode: bool = False

    def __post_init__(self) -> None:
        freeze(self, "kernel_size", "stride", "padding", "dilation")
        check(not self.return_indices, self, "return_indices=True is not supported.")

    def apply(
        self, params: Params, state: State, x: Any, *, train: bool = False, key: Key = None
    ) -> Output:
        pads, k, s, d = self._geometry(x, self.dilation)
        n = self._n
        if k == s and d == (1,) * n and all(lo == hi == 0 for lo, hi in pads):
            return _max_pool_tiled(x, k), state
        lead = x.ndim - n
        init = -np.inf if jnp.issubdtype(x.dtype, jnp.floating) else jnp.iinfo(x.dtype).min
        # a concrete (numpy) init value lets lax see the max monoid, which it can differentiate
        y = jax.lax.reduce_window(
            x,
            np.array(init, x.dtype),
            jax.lax.max,
            window_dimensions=(1,) * lead + k,
            window_strides=(1,) * lead + s,
            padding=[(0, 0)] * lead + pads,
            window_dilation=(1,) * lead + d,
        )
        return y, state


def _max_pool_tiled(x: jax.Array, k: tuple[int, ...]) -> jax.Array:
    """Max over non-overlapping ``k`` tiles (stride = kernel, no padding), via the argmax.

    Same values as ``reduce_window``, and the gradient goes to the first maximum of each window
    in row-major order, as torch's. Why not ``reduce_window``: its gradient
    (``select_and_scatter``) is several times slower on CPU than this gather-free form.
    """
    n = len(k)
    outs = tuple(size // ki for size, ki in zip(x.shape[-n:], k))
    lead = x.shape[:-n]
    x = x[(...,) + tuple(slice(0, o * ki) for o, ki in zip(outs, k))]  # floor mode drops the edge
    m = len(lead)
    tiles = x.reshape(lead + tuple(v for pair in zip(outs, k) for v in pair))
    order = tuple(range(m)) + tuple(m + 2 * i for i in range(n)) + tuple(m + 2 * i + 1 for i in range(n))
    tiles = tiles.transpose(order).reshape(lead + outs + (-1,))
    size = int(np.prod(k))
    first = jnp.argmax(jax.lax.stop_gradient(tiles), axis=-1)  # first max; NaN counts as max
    pick = first[..., None] == jnp.arange(size).reshape((1,) * (m + n) + (-1,))
    return jnp.sum(jnp.where(pick, tiles, jnp.zeros((), x.dtype)), axis=-1)


def _divisor(size: int, out: int, k: int, s: int, p: int, include_pad: bool) -> np.ndarray:
    """torch's avg_pool divisor along one dim: window clipped to ``[-p, size + p)``, or to the input."""
    i = np.arange(out)
    start = i * s - p
    end = np.minimum(start + k, size + p)
    if include_pad:
        return (end - start).astype(np.float64)
    return (np.minimum(end, size) - np.maximum(start, 0)).astype(np.float64)


class _AvgPoolNd(_PoolNd):
    kernel_size: _Size
    stride: _Size | None = None
    padding: _Size = 0
    ceil_mode: bool = False
    count_include_pad: bool = True
    divisor_override: int | None = None

    def __post_init__(self) -> None:
        freeze(self, "kernel_size", "stride", "padding")
        check(self.divisor_override != 0, self, "divisor_override must not be 0.")

    def apply(
        self, params: Params, state: State, x: Any, *, train: bool = False, key: Key = None
    ) -> Output:
        pads, k, s, _ = self._geometry(x)
        n = self._n
        lead = x.ndim - n
        total = jax.lax.reduce_window(
            x,
            np.array(0, x.dtype),
            jax.lax.add,
            window_dimensions=(1,) * lead + k,
            window_strides=(1,) * lead + s,
            padding=[(0, 0)] * lead + pads,
        )
        if self.divisor_override is not None:
            return total / self.divisor_override, state
        p = ntuple(self.padding, n, "padding", type(self).__name__)
        per_dim = [
            _divisor(size, out, *a, self.count_include_pad)
            for size, out, a in zip(x.shape[-n:], total.shape[-n:], zip(k, s, p))
        ]
        div = functools.reduce(np.multiply.outer, per_dim)
        if np.all(div == div.flat[0]):  # the common case: one constant, no extra array
            return total / float(div.flat[0]), state
        return total / jnp.asarray(div.reshape((1,) * lead + div.shape), x.dtype), state


_MAX_DOC = """Max over ``kernel_size`` windows, as ``torch.nn.{name}`` (padding counts as ``-inf``).

    Args (torch's): ``kernel_size``, ``stride=None`` (= ``kernel_size``), ``padding=0`` (at most
    half the kernel), ``dilation=1``, ``return_indices=False`` (True is not supported),
    ``ceil_mode=False``. No params.

    Shapes: ``{batched}`` or ``{unbatched}`` -> same with each spatial size
    ``floor_or_ceil((size + 2p - d(k-1) - 1) / s) + 1``; in ceil mode a last window that would
    start in the right padding is dropped, as torch. NaN propagates, as torch.

    Raises:
      ValueError: ``return_indices=True``, padding over half the kernel, a wrong input rank.
    """

_AVG_DOC = """Mean over ``kernel_size`` windows, as ``torch.nn.{name}``.

    Args (torch's): ``kernel_size``, ``stride=None`` (= ``kernel_size``), ``padding=0``,
    ``ceil_mode=False``, ``count_include_pad=True`` (zero padding counts in the divisor){extra}.
    No params. Border windows use torch's divisors exactly.

    Shapes: ``{batched}`` or ``{unbatched}`` -> same with each spatial size
    ``floor_or_ceil((size + 2p - k) / s) + 1`` (ceil-mode rule as MaxPool).

    Raises:
      ValueError: padding over half the kernel, ``divisor_override`` of 0, a wrong input rank.
    """


def _doc(template: str, name: str, n: int, extra: str = "") -> str:
    return template.format(name=name, batched=LAYOUTS[n][0], unbatched=LAYOUTS[n][1], extra=extra)


@register(name="nn.MaxPool1d")
class MaxPool1d(_MaxPoolNd):
    __doc__ = _doc(_MAX_DOC, "MaxPool1d", 1)
    _n: ClassVar[int] = 1


@register(name="nn.MaxPool2d")
class MaxPool2d(_MaxPoolNd):
    __doc__ = _doc(_MAX_DOC, "MaxPool2d", 2)
    _n: ClassVar[int] = 2


@register(name="nn.MaxPool3d")
class MaxPool3d(_MaxPoolNd):
    __doc__ = _doc(_MAX_DOC, "MaxPool3d", 3)
    _n: ClassVar[int] = 3


@register(name="nn.AvgPool1d")
class AvgPool1d(_AvgPoolNd):
    __doc__ = _doc(_AVG_DOC, "AvgPool1d", 1, ", ``divisor_override=None`` (not in torch's AvgPool1d)")
    _n: ClassVar[int] = 1


_DIVISOR = ", ``divisor_override=None``"


@register(name="nn.AvgPool2d")
class AvgPool2d(_AvgPoolNd):
    __doc__ = _doc(_AVG_DOC, "AvgPool2d", 2, _DIVISOR)
    _n: ClassVar[int] = 2


@register(name="nn.AvgPool3d")
class AvgPool3d(_AvgPoolNd):
    __doc__ = _doc(_AVG_DOC, "AvgPool3d", 3, _DIVISOR)
    _n: ClassVar[int] = 3
