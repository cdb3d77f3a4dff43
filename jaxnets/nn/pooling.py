"""MaxPool2d, AvgPool2d and AdaptiveAvgPool2d over NCHW activations, with torch's output sizes
(``ceil_mode`` included) and torch's averaging divisors at the borders.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxnets.core.registry import register
from jaxnets.nn._utils import check, freeze, ntuple
from jaxnets.nn.module import Module, Params, State

__all__ = ["MaxPool2d", "AvgPool2d", "AdaptiveAvgPool2d"]

_Pair = int | tuple[int, int]


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


def _check_input(layer: Module, x: Any) -> None:
    check(
        x.ndim in (3, 4), layer, f"expected input (N, C, H, W) or (C, H, W), got shape {x.shape}."
    )


class _Pool2d(Module):
    if TYPE_CHECKING:  # the fields each pool declares (not fields here: they would reorder them)
        kernel_size: _Pair
        stride: _Pair | None
        padding: _Pair
        ceil_mode: bool


    def _geometry(
        self, x: Any, dilation: _Pair = 1
    ) -> tuple[list[tuple[int, int]], tuple[int, ...], tuple[int, ...], tuple[int, ...]]:
        """Per spatial dim: pads, kernel, stride, dilation; checked as torch checks them."""
        name = type(self).__name__
        k = ntuple(self.kernel_size, 2, "kernel_size", name)
        s = k if self.stride is None else ntuple(self.stride, 2, "stride", name)
        p = ntuple(self.padding, 2, "padding", name)
        d = ntuple(dilation, 2, "dilation", name)
        check(
            all(pi <= ki // 2 for pi, ki in zip(p, k)),
            self,
            f"padding {p} should be at most half of kernel size {k}.",
        )
        sizes = x.shape[-2:]
        outs = [
            _out_size(n, ki, si, pi, di, self.ceil_mode)
            for n, ki, si, pi, di in zip(sizes, k, s, p, d)
        ]
        check(
            all(o > 0 for o in outs),
            self,
            f"input spatial size {sizes} is too small for kernel {k}, padding {p}, dilation {d}.",
        )
        pads = [
            _pads(n, o, ki, si, pi, di) for n, o, ki, si, pi, di in zip(sizes, outs, k, s, p, d)
        ]
        return pads, k, s, d


@register(name="nn.MaxPool2d")
class MaxPool2d(_Pool2d):
    """Max over ``kernel_size`` windows, as ``torch.nn.MaxPool2d`` (padding counts as ``-inf``).

    Args (torch's): ``kernel_size``, ``stride=None`` (= ``kernel_size``), ``padding=0`` (at most
    half the kernel), ``dilation=1``, ``return_indices=False`` (True is not supported),
    ``ceil_mode=False``. No params.

    Shapes: ``(N, C, H, W)`` or ``(C, H, W)`` -> ``(..., H_out, W_out)``,
    ``H_out = floor_or_ceil((H + 2p - d(k-1) - 1) / s) + 1``; in ceil mode a last window that
    would start in the right padding is dropped, as torch.

    Raises:
      ValueError: ``return_indices=True``, padding over half the kernel, a wrong input rank.
    """

    kernel_size: _Pair
    stride: _Pair | None = None
    padding: _Pair = 0
    dilation: _Pair = 1
    return_indices: bool = False
    ceil_mode: bool = False

    def __post_init__(self) -> None:
        freeze(self, "kernel_size", "stride", "padding", "dilation")
        check(not self.return_indices, self, "return_indices=True is not supported.")

    def apply(
        self,
        params: Params,
        state: State,
        x: Any,
        *,
        train: bool = False,
        key: jax.Array | None = None,
    ) -> tuple[jax.Array, State]:
        _check_input(self, x)
        pads, k, s, d = self._geometry(x, self.dilation)
        if k == s and d == (1, 1) and all(lo == hi == 0 for lo, hi in pads):
            return _max_pool_tiled(x, k), state
        lead = x.ndim - 2
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
    (kh, kw), (h, w) = k, x.shape[-2:]
    ho, wo = h // kh, w // kw
    lead = x.shape[:-2]
    x = x[..., : ho * kh, : wo * kw]  # floor mode drops the ragged edge, as torch
    n = len(lead)
    tiles = x.reshape(lead + (ho, kh, wo, kw))
    tiles = jnp.moveaxis(tiles, n + 1, n + 2).reshape(lead + (ho, wo, kh * kw))
    first = jnp.argmax(jax.lax.stop_gradient(tiles), axis=-1)  # first max; NaN counts as max
    pick = first[..., None] == jnp.arange(kh * kw).reshape((1,) * (n + 2) + (-1,))
    return jnp.sum(jnp.where(pick, tiles, jnp.zeros((), x.dtype)), axis=-1)


def _divisor(size: int, out: int, k: int, s: int, p: int, include_pad: bool) -> np.ndarray:
    """torch's avg_pool divisor along one dim: window clipped to ``[-p, size + p)``, or to the input."""
    i = np.arange(out)
    start = i * s - p
    end = np.minimum(start + k, size + p)
    if include_pad:
        return (end - start).astype(np.float64)
    return (np.minimum(end, size) - np.maximum(start, 0)).astype(np.float64)


@register(name="nn.AvgPool2d")
class AvgPool2d(_Pool2d):
    """Mean over ``kernel_size`` windows, as ``torch.nn.AvgPool2d``.

    Args (torch's): ``kernel_size``, ``stride=None`` (= ``kernel_size``), ``padding=0``,
    ``ceil_mode=False``, ``count_include_pad=True`` (zero padding counts in the divisor),
    ``divisor_override=None``. No params. Border windows use torch's divisors exactly.

    Shapes: ``(N, C, H, W)`` or ``(C, H, W)`` -> ``(..., H_out, W_out)``,
    ``H_out = floor_or_ceil((H + 2p - k) / s) + 1`` (ceil-mode rule as :class:`MaxPool2d`).

    Raises:
      ValueError: padding over half the kernel, ``divisor_override`` of 0, a wrong input rank.
    """

    kernel_size: _Pair
    stride: _Pair | None = None
    padding: _Pair = 0
    ceil_mode: bool = False
    count_include_pad: bool = True
    divisor_override: int | None = None

    def __post_init__(self) -> None:
        freeze(self, "kernel_size", "stride", "padding")
        check(self.divisor_override != 0, self, "divisor_override must not be 0.")

    def apply(
        self,
        params: Params,
        state: State,
        x: Any,
        *,
        train: bool = False,
        key: jax.Array | None = None,
    ) -> tuple[jax.Array, State]:
        _check_input(self, x)
        pads, k, s, _ = self._geometry(x)
        lead = x.ndim - 2
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
        h_out, w_out = total.shape[-2:]
        p = ntuple(self.padding, 2, "padding", type(self).__name__)
        dh = _divisor(x.shape[-2], h_out, k[0], s[0], p[0], self.count_include_pad)
        dw = _divisor(x.shape[-1], w_out, k[1], s[1], p[1], self.count_include_pad)
        div = np.outer(dh, dw)
        if np.all(div == div.flat[0]):  # the common case: one constant, no extra array
            return total / float(div.flat[0]), state
        return total / jnp.asarray(div.reshape((1,) * lead + div.shape), x.dtype), state


def _adaptive_matrix(size: int, out: int) -> np.ndarray:
    """``(out, size)`` averaging weights over torch's windows ``[floor(i*size/out), ceil((i+1)*size/out))``."""
    m = np.zeros((out, size))
    for i in range(out):
        start = (i * size) // out
        end = -((-(i + 1) * size) // out)
        m[i, start:end] = 1.0 / (end - start)
    return m


@register(name="nn.AdaptiveAvgPool2d")
class AdaptiveAvgPool2d(Module):
    """Averages to a fixed ``output_size``, as ``torch.nn.AdaptiveAvgPool2d``.

    ``output_size``: int or ``(H_out, W_out)``; ``None`` in the pair keeps that input size. Window
    ``i`` covers ``[floor(i*H/H_out), ceil((i+1)*H/H_out))``, so non-divisible sizes match torch.
    No params. Shapes: ``(N, C, H, W)`` or ``(C, H, W)`` -> ``(..., H_out, W_out)``.

    Raises:
      ValueError: a wrong input rank or a non-positive output size.
    """

    output_size: int | tuple[int | None, int | None]

    def __post_init__(self) -> None:
        freeze(self, "output_size")


    def apply(
        self,
        params: Params,
        state: State,
        x: Any,
        *,
        train: bool = False,
        key: jax.Array | None = None,
    ) -> tuple[jax.Array, State]:
        _check_input(self, x)
        size = self.output_size
        pair = (size, size) if isinstance(size, int) else tuple(size)
        h, w = x.shape[-2:]
        oh, ow = (h if pair[0] is None else pair[0]), (w if pair[1] is None else pair[1])
        check(oh > 0 and ow > 0, self, f"output_size must be positive, got {size!r}.")
        lead = x.shape[:-2]
        if h % oh == 0 and w % ow == 0:  # equal windows: a reshape and a mean
            y = x.reshape(lead + (oh, h // oh, ow, w // ow)).mean(axis=(-3, -1))
            return y, state
        mh = jnp.asarray(_adaptive_matrix(h, oh), x.dtype)
        mw = jnp.asarray(_adaptive_matrix(w, ow), x.dtype)
        y = jnp.einsum("...hw,ih,jw->...ij", x, mh, mw, precision=jax.lax.Precision.HIGHEST)
        return y, state
