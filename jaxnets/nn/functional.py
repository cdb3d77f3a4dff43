"""Stateless functions with ``torch.nn.functional``'s names and arguments (as ``F.interpolate``).

Import as ``from jaxnets.nn import functional as F``. Inputs are channels-first, as torch's.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxnets.nn.pooling_adaptive import adaptive_avg

__all__ = ["interpolate", "pixel_shuffle", "pixel_unshuffle", "channel_shuffle"]

LINEAR_MODES = {"linear": 1, "bilinear": 2, "trilinear": 3, "bicubic": 2}
MODES = ("nearest", "nearest-exact", "area", *LINEAR_MODES)


def _per_dim(value: Any, n: int, name: str, x: Any) -> tuple[Any, ...]:
    if isinstance(value, (list, tuple)):
        if len(value) != n:
            raise ValueError(
                f"interpolate: input with spatial dims {tuple(x.shape[2:])} needs {n} values of "
                f"{name}, got {tuple(value)}."
            )
        return tuple(value)
    return (value,) * n


def output_size(
    x: Any, size: Any, scale_factor: Any, recompute_scale_factor: bool | None
) -> tuple[tuple[int, ...], tuple[float | None, ...]]:
    """torch's rules: ``(sizes, scales)``; a scale is kept (``1/scale`` maps output to input
    coordinates) unless ``size`` was given or ``recompute_scale_factor``."""
    n = x.ndim - 2
    if (size is None) == (scale_factor is None):
        raise ValueError("interpolate: give exactly one of size and scale_factor.")
    if size is not None:
        if recompute_scale_factor:
            raise ValueError("interpolate: recompute_scale_factor is not meaningful with an explicit size.")
        sizes = _per_dim(size, n, "size", x)
        if not all(isinstance(s, int) and not isinstance(s, bool) and s > 0 for s in sizes):
            raise ValueError(f"interpolate: size must be positive ints, got {size!r}.")
        return tuple(sizes), (None,) * n
    scales = tuple(float(s) for s in _per_dim(scale_factor, n, "scale_factor", x))
    if not all(s > 0 for s in scales):
        raise ValueError(f"interpolate: scale_factor must be positive, got {scale_factor!r}.")
    sizes = tuple(int(math.floor(d * s)) for d, s in zip(x.shape[2:], scales))
    if not all(s > 0 for s in sizes):
        raise ValueError(f"interpolate: scale_factor {scale_factor!r} gives an empty output for input {x.shape}.")
    return sizes, ((None,) * n if recompute_scale_factor else scales)


def _scale(size: int, out: int, scale: float | None, align_corners: bool) -> np.float32:
    """torch's ``area_pixel_compute_scale`` in float32 (input coordinates per output step)."""
    if align_corners:
        return np.float32((size - 1) / (out - 1)) if out > 1 else np.float32(0)
    if scale is not None:
        return np.float32(1.0 / scale)
    return np.float32(size) / np.float32(out)


def _nearest(x: jax.Array, axis: int, out: int, scale: float | None, exact: bool) -> jax.Array:
    size = x.shape[axis]
    dst = np.arange(out, dtype=np.float32)
    s = np.float32(1.0 / scale) if scale is not None else np.float32(size) / np.float32(out)
    if exact:
        idx = np.floor((dst + np.float32(0.5)) * s)
    elif out == size:
        idx = dst
    elif out == 2 * size:
        idx = dst // 2
    else:
        idx = np.floor(dst * s)
    idx = np.minimum(idx.astype(np.int64), size - 1)
    return jnp.take(x, jnp.asarray(idx), axis=axis)


def _linear(x: jax.Array, axis: int, out: int, scale: float | None, align_corners: bool) -> jax.Array:
    size = x.shape[axis]
    s = _scale(size, out, scale, align_corners)
    dst = np.arange(out, dtype=np.float32)
    src = s * dst if align_corners else np.maximum(s * (dst + np.float32(0.5)) - np.float32(0.5), 0)
    i0 = np.minimum(np.floor(src).astype(np.int64), size - 1)
    lam = np.clip(src - i0, 0, 1).astype(np.float32)
    i1 = i0 + (i0 < size - 1)
    shape = (1,) * axis + (out,) + (1,) * (x.ndim - axis - 1)
    w0, w1 = (jnp.asarray(w.reshape(shape), x.dtype) for w in (1 - lam, lam))
    return jnp.take(x, jnp.asarray(i0), axis=axis) * w0 + jnp.take(x, jnp.asarray(i1), axis=axis) * w1


def _cubic(x: jax.Array, axis: int, out: int, scale: float | None, align_corners: bool) -> jax.Array:
    size = x.shape[axis]
    s = _scale(size, out, scale, align_corners)
    dst = np.arange(out, dtype=np.float32)
    src = s * dst if align_corners else s * (dst + np.float32(0.5)) - np.float32(0.5)
    i0 = np.minimum(np.floor(src).astype(np.int64), size - 1)
    t = np.clip(src - i0, 0, 1).astype(np.float32)
    a = np.float32(-0.75)  # torch's (and OpenCV's) cubic convolution constant

    def near(d: np.ndarray) -> np.ndarray:  # |d| <= 1
        return ((a + 2) * d - (a + 3)) * d * d + 1

    def far(d: np.ndarray) -> np.ndarray:  # 1 < |d| < 2
        return ((a * d - 5 * a) * d + 8 * a) * d - 4 * a

    weights = (far(t + 1), near(t), near(1 - t), far(2 - t))
    shape = (1,) * axis + (out,) + (1,) * (x.ndim - axis - 1)
    y = jnp.zeros((), x.dtype)
    for j, w in enumerate(weights):
        idx = np.clip(i0 - 1 + j, 0, size - 1)  # borders repeat the edge value, as torch
        y = y + jnp.take(x, jnp.asarray(idx), axis=axis) * jnp.asarray(w.reshape(shape), x.dtype)
    return y


def interpolate(
    input: Any,
    size: int | Sequence[int] | None = None,
    scale_factor: float | Sequence[float] | None = None,
    mode: str = "nearest",
    align_corners: bool | None = None,
    recompute_scale_factor: bool | None = None,
    antialias: bool = False,
) -> jax.Array:
    """Resizes the spatial dims of ``input``, as ``torch.nn.functional.interpolate``.

    Args:
      input: ``(N, C, L)``, ``(N, C, H, W)`` or ``(N, C, D, H, W)``.
      size: the output spatial size (an int for every dim, or one per dim).
      scale_factor: a multiplier per spatial dim instead of ``size``; the output size is
        ``floor(size * scale_factor)`` and, unless ``recompute_scale_factor``, the source
        coordinates use ``1 / scale_factor`` exactly as torch does.
      mode: ``"nearest"`` (torch's default, its legacy rounding), ``"nearest-exact"``,
        ``"linear"`` (3-d), ``"bilinear"`` (4-d), ``"bicubic"`` (4-d), ``"trilinear"`` (5-d),
        ``"area"`` (adaptive average pooling).
      align_corners: linear modes only; ``None`` means ``False``, as torch.
      recompute_scale_factor: compute the coordinates from the output size, not the factor.
      antialias: not supported (``True`` raises).

    Returns:
      ``(N, C, *size)``, same dtype.

    Raises:
      ValueError: an unknown ``mode``, a mode that does not fit the input's rank,
        ``align_corners`` with a non-linear mode, both or neither of ``size``/``scale_factor``,
        or ``antialias=True``.
    """
    x = jnp.asarray(input)
    if mode not in MODES:
        raise ValueError(f"interpolate: mode must be one of {list(MODES)}, got {mode!r}.")
    if x.ndim not in (3, 4, 5):
        raise ValueError(f"interpolate: expected input (N, C, *spatial) with 1 to 3 spatial dims, got shape {x.shape}.")
    if mode in LINEAR_MODES and x.ndim - 2 != LINEAR_MODES[mode]:
        raise ValueError(
            f"interpolate: mode {mode!r} needs {LINEAR_MODES[mode]} spatial dims "
            f"({LINEAR_MODES[mode] + 2}-d input), got shape {x.shape}."
        )
    if align_corners is not None and mode not in LINEAR_MODES:
        raise ValueError(
            "interpolate: align_corners can only be set with the interpolating modes linear, "
            f"bilinear, bicubic and trilinear, not {mode!r}."
        )
    if antialias:
        raise ValueError("interpolate: antialias=True is not supported yet.")
    if mode == "area" and size is None:  # torch: area pools to the size the factor gives
        recompute_scale_factor = True
    sizes, scales = output_size(x, size, scale_factor, recompute_scale_factor)
    for i, (out, scale) in enumerate(zip(sizes, scales)):
        axis = 2 + i
        if mode == "area":
            x = adaptive_avg(x, axis, out)
        elif mode in ("nearest", "nearest-exact"):
            x = _nearest(x, axis, out, scale, mode == "nearest-exact")
        elif mode == "bicubic":
            x = _cubic(x, axis, out, scale, bool(align_corners))
        else:
            x = _linear(x, axis, out, scale, bool(align_corners))
    return x


def pixel_shuffle(input: Any, upscale_factor: int) -> jax.Array:
    """``(*, C*r*r, H, W)`` -> ``(*, C, H*r, W*r)``, as ``torch.nn.functional.pixel_shuffle``.

    Raises:
      ValueError: fewer than 3 dims, or channels not divisible by ``upscale_factor**2``.
    """
    x, r = jnp.asarray(input), upscale_factor
    if x.ndim < 3 or x.shape[-3] % (r * r):
        raise ValueError(
            f"pixel_shuffle: expected input (*, C*r*r, H, W) with r = upscale_factor = {r}, got "
            f"shape {x.shape}."
        )
    *lead, c, h, w = x.shape
    oc = c // (r * r)
    x = x.reshape(*lead, oc, r, r, h, w)
    m = len(lead)
    x = x.transpose(*range(m), m, m + 3, m + 1, m + 4, m + 2)
    return x.reshape(*lead, oc, h * r, w * r)


def pixel_unshuffle(input: Any, downscale_factor: int) -> jax.Array:
    """``(*, C, H*r, W*r)`` -> ``(*, C*r*r, H, W)``, as ``torch.nn.functional.pixel_unshuffle``.

    Raises:
      ValueError: fewer than 3 dims, or H or W not divisible by ``downscale_factor``.
    """
    x, r = jnp.asarray(input), downscale_factor
    if x.ndim < 3 or x.shape[-1] % r or x.shape[-2] % r:
        raise ValueError(
            f"pixel_unshuffle: expected input (*, C, H*r, W*r) with r = downscale_factor = {r}, "
            f"got shape {x.shape}."
        )
    *lead, c, h, w = x.shape
    x = x.reshape(*lead, c, h // r, r, w // r, r)
    m = len(lead)
    x = x.transpose(*range(m), m, m + 2, m + 4, m + 1, m + 3)
    return x.reshape(*lead, c * r * r, h // r, w // r)


def channel_shuffle(input: Any, groups: int) -> jax.Array:
    """``(N, g*k, *)`` -> the channels as a ``(g, k)`` grid, transposed, as
    ``torch.nn.functional.channel_shuffle``.

    Raises:
      ValueError: fewer than 3 dims, or channels not divisible by ``groups``.
    """
    x = jnp.asarray(input)
    if x.ndim < 3 or groups < 1 or x.shape[1] % groups:
        raise ValueError(
            f"channel_shuffle: expected input (N, C, *) with C divisible by groups = {groups}, "
            f"got shape {x.shape}."
        )
    n, c = x.shape[:2]
    rest = x.shape[2:]
    return x.reshape(n, groups, c // groups, *rest).swapaxes(1, 2).reshape(x.shape)
