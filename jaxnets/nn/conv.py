"""Conv1d, Conv2d and ConvTranspose2d: torch.nn's arguments, NC(H)W activations, OI(H)W kernels.

All three call ``jax.lax.conv_general_dilated`` with dimension numbers ``NCH/OIH/NCH`` or
``NCHW/OIHW/NCHW``, so params are used in PyTorch's layout as they are (no transposes of the
activations); XLA picks the physical layout.
"""

from __future__ import annotations

from typing import Any, ClassVar

import jax
import jax.numpy as jnp

from jaxnets.core.registry import register
from jaxnets.nn import init as initializers
from jaxnets.nn._utils import check, freeze, ntuple
from jaxnets.nn.module import Module, Params, State

__all__ = ["Conv1d", "Conv2d", "ConvTranspose2d"]

_PAD_MODES = {"zeros": None, "reflect": "reflect", "replicate": "edge", "circular": "wrap"}
_DIMS = {1: ("NCH", "OIH", "NCH"), 2: ("NCHW", "OIHW", "NCHW")}


def _batched(layer: Module, x: jax.Array, n: int) -> tuple[jax.Array, bool]:
    """``x`` with a batch dim (torch accepts unbatched ``(C, *spatial)`` inputs too)."""
    if x.ndim == n + 1:
        return x[None], True
    check(
        x.ndim == n + 2,
        layer,
        f"expected input of shape (N, C, {n} spatial dims) or (C, {n} spatial dims), got {x.shape}.",
    )
    return x, False


class _ConvNd(Module):
    in_channels: int
    out_channels: int
    kernel_size: int | tuple[int, ...]
    stride: int | tuple[int, ...] = 1
    padding: int | tuple[int, ...] | str = 0
    dilation: int | tuple[int, ...] = 1
    groups: int = 1
    bias: bool = True
    padding_mode: str = "zeros"

    _n: ClassVar[int] = 2

    def __post_init__(self) -> None:
        freeze(self, "kernel_size", "stride", "padding", "dilation")
        name = type(self).__name__
        for arg in ("kernel_size", "stride", "dilation"):
            ntuple(getattr(self, arg), self._n, arg, name)
        check(self.groups >= 1, self, f"groups must be positive, got {self.groups}.")
        check(
            self.in_channels % self.groups == 0 and self.out_channels % self.groups == 0,
            self,
            f"in_channels ({self.in_channels}) and out_channels ({self.out_channels}) must both be divisible by groups ({self.groups}).",
        )
        check(
            self.padding_mode in _PAD_MODES,
            self,
            f"padding_mode must be one of {sorted(_PAD_MODES)}, got {self.padding_mode!r}.",
        )
        if isinstance(self.padding, str):
            check(
                self.padding in ("same", "valid"),
                self,
                f"padding must be 'same', 'valid', an int or a tuple, got {self.padding!r}.",
            )
            if self.padding == "same":
                check(
                    all(s == 1 for s in ntuple(self.stride, self._n, "stride", name)),
                    self,
                    "padding='same' is not supported for strided convolutions (as in PyTorch); give explicit padding.",
                )
        else:
            ntuple(self.padding, self._n, "padding", name)

    def _pads(self) -> list[tuple[int, int]]:
        """(low, high) padding per spatial dim; 'same' puts the odd extra on the high side, as torch."""
        n, name = self._n, type(self).__name__
        if self.padding == "valid":
            return [(0, 0)] * n
        if self.padding == "same":
            k = ntuple(self.kernel_size, n, "kernel_size", name)
            d = ntuple(self.dilation, n, "dilation", name)
            totals = [di * (ki - 1) for ki, di in zip(k, d)]
            return [(t // 2, t - t // 2) for t in totals]
        return [(p, p) for p in ntuple(self.padding, n, "padding", name)]  # type: ignore[arg-type]

    def init(self, key: jax.Array) -> tuple[Params, State]:
        k = ntuple(self.kernel_size, self._n, "kernel_size", type(self).__name__)
        shape = (self.out_channels, self.in_channels // self.groups, *k)
        return initializers.weight_and_bias(key, shape, self.out_channels, bias=self.bias), {}

    def apply(
        self,
        params: Params,
        state: State,
        x: Any,
        *,
        train: bool = False,
        key: jax.Array | None = None,
    ) -> tuple[jax.Array, State]:
        n, name = self._n, type(self).__name__
        x, unbatched = _batched(self, x, n)
        pads = self._pads()
        mode = _PAD_MODES[self.padding_mode]
        if mode is not None and any(p != (0, 0) for p in pads):
            x = jnp.pad(x, [(0, 0), (0, 0), *pads], mode=mode)
            pads = [(0, 0)] * n
        y = jax.lax.conv_general_dilated(
            x,
            params["weight"],
            window_strides=ntuple(self.stride, n, "stride", name),
            padding=pads,
            rhs_dilation=ntuple(self.dilation, n, "dilation", name),
            dimension_numbers=_DIMS[n],
            feature_group_count=self.groups,
        )
        if self.bias:
            y = y + params["bias"].reshape((1, -1) + (1,) * n)
        return (y[0] if unbatched else y), state


@register(name="nn.Conv1d")
class Conv1d(_ConvNd):
    """1-D convolution, as ``torch.nn.Conv1d`` (same arguments and defaults).

    Params: ``weight (out_channels, in_channels // groups, kernel_size)``, ``bias (out_channels,)``
    when ``bias``; init ``U(±1/sqrt(fan_in))`` as torch, ``fan_in = in_channels // groups * k``.

    Shapes: ``x (N, C_in, L)`` (or unbatched ``(C_in, L)``) -> ``(N, C_out, L_out)`` with
    ``L_out = floor((L + 2*padding - dilation*(k-1) - 1) / stride) + 1``; ``padding="same"`` keeps
    ``L`` (stride 1 only; the odd extra pad goes on the right, as torch), ``"valid"`` is 0.
    ``padding_mode``: ``"zeros"`` (default), ``"reflect"``, ``"replicate"``, ``"circular"``.

    Raises:
      ValueError: channels not divisible by ``groups``, ``"same"`` with a stride, a bad
        ``padding``/``padding_mode``, or an input of the wrong rank.
    """

    _n: ClassVar[int] = 1


@register(name="nn.Conv2d")
class Conv2d(_ConvNd):
    """2-D convolution, as ``torch.nn.Conv2d`` (same arguments and defaults).

    Params: ``weight (out_channels, in_channels // groups, kH, kW)`` (OIHW), ``bias
    (out_channels,)`` when ``bias``; init ``U(±1/sqrt(fan_in))``, ``fan_in = in/groups * kH * kW``.

    Shapes: ``x (N, C_in, H, W)`` (or unbatched ``(C_in, H, W)``) -> ``(N, C_out, H_out, W_out)``,
    ``H_out = floor((H + 2*padding[0] - dilation[0]*(kH-1) - 1) / stride[0]) + 1`` (same for W).
    ``padding`` is an int, a pair, ``"valid"`` or ``"same"`` (stride 1 only); ``padding_mode`` is
    ``"zeros"`` (default), ``"reflect"``, ``"replicate"`` or ``"circular"``.

    Raises:
      ValueError: channels not divisible by ``groups``, ``"same"`` with a stride, a bad
        ``padding``/``padding_mode``, or an input of the wrong rank.
    """

    _n: ClassVar[int] = 2


@register(name="nn.ConvTranspose2d")
class ConvTranspose2d(Module):
    """Transposed 2-D convolution (the gradient of Conv2d), as ``torch.nn.ConvTranspose2d``.

    Arguments and their order are torch's. Params: ``weight (in_channels, out_channels // groups,
    kH, kW)`` (torch's transposed layout), ``bias (out_channels,)`` when ``bias``; init
    ``U(±1/sqrt(fan_in))`` with torch's ``fan_in = out_channels // groups * kH * kW``.

    Shapes: ``x (N, C_in, H, W)`` (or unbatched) -> ``(N, C_out, H_out, W_out)`` with
    ``H_out = (H - 1)*stride - 2*padding + dilation*(kH - 1) + output_padding + 1``.
    Only ``padding_mode="zeros"`` exists, as in torch; ``forward``'s ``output_size`` argument is
    not supported (give ``output_padding``).

    Raises:
      ValueError: channels not divisible by ``groups``, ``output_padding`` not smaller than
        ``stride`` or ``dilation``, or another ``padding_mode``.
    """

    in_channels: int
    out_channels: int
    kernel_size: int | tuple[int, int]
    stride: int | tuple[int, int] = 1
    padding: int | tuple[int, int] = 0
    output_padding: int | tuple[int, int] = 0
    groups: int = 1
    bias: bool = True
    dilation: int | tuple[int, int] = 1
    padding_mode: str = "zeros"

    def __post_init__(self) -> None:
        freeze(self, "kernel_size", "stride", "padding", "output_padding", "dilation")
        s, d, op = self._arg("stride"), self._arg("dilation"), self._arg("output_padding")
        self._arg("kernel_size")
        self._arg("padding")
        check(self.groups >= 1, self, f"groups must be positive, got {self.groups}.")
        check(
            self.in_channels % self.groups == 0 and self.out_channels % self.groups == 0,
            self,
            f"in_channels ({self.in_channels}) and out_channels ({self.out_channels}) must both be divisible by groups ({self.groups}).",
        )
        check(
            self.padding_mode == "zeros",
            self,
            f"only padding_mode='zeros' is supported (as in PyTorch), got {self.padding_mode!r}.",
        )
        check(
            all(o < max(si, di) for o, si, di in zip(op, s, d)),
            self,
            f"output_padding {op} must be smaller than either stride {s} or dilation {d}.",
        )

    def _arg(self, name: str) -> tuple[int, int]:
        return ntuple(getattr(self, name), 2, name, type(self).__name__)  # type: ignore[return-value]

    def init(self, key: jax.Array) -> tuple[Params, State]:
        shape = (self.in_channels, self.out_channels // self.groups, *self._arg("kernel_size"))
        return initializers.weight_and_bias(key, shape, self.out_channels, bias=self.bias), {}

    def apply(
        self,
        params: Params,
        state: State,
        x: Any,
        *,
        train: bool = False,
        key: jax.Array | None = None,
    ) -> tuple[jax.Array, State]:
        x, unbatched = _batched(self, x, 2)
        k, s, p = self._arg("kernel_size"), self._arg("stride"), self._arg("padding")
        d, op = self._arg("dilation"), self._arg("output_padding")
        g = self.groups
        w = params["weight"]  # (in, out/g, kH, kW) -> (out, in/g, kH, kW), spatially flipped
        cin, cout_g = w.shape[0], w.shape[1]
        w = w.reshape(g, cin // g, cout_g, k[0], k[1]).transpose(0, 2, 1, 3, 4)
        w = jnp.flip(w.reshape(g * cout_g, cin // g, k[0], k[1]), axis=(2, 3))
        pads = [
            (di * (ki - 1) - pi, di * (ki - 1) - pi + oi) for ki, di, pi, oi in zip(k, d, p, op)
        ]
        y = jax.lax.conv_general_dilated(
            x,
            w,
            window_strides=(1, 1),
            padding=pads,
            lhs_dilation=s,
            rhs_dilation=d,
            dimension_numbers=_DIMS[2],
            feature_group_count=g,
        )
        if self.bias:
            y = y + params["bias"].reshape(1, -1, 1, 1)
        return (y[0] if unbatched else y), state
