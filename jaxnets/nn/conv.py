"""Conv1d, Conv2d and Conv3d: torch.nn's arguments, channels-first activations, OI* kernels.

All call ``jax.lax.conv_general_dilated`` with dimension numbers ``NCH/OIH/NCH``,
``NCHW/OIHW/NCHW`` or ``NCDHW/OIDHW/NCDHW``, so params are used in PyTorch's layout as they are
(no transposes of the activations); XLA picks the physical layout. The transposed convolutions
are in :mod:`.conv_transpose`.
"""

from __future__ import annotations

from typing import Any, ClassVar

import jax
import jax.numpy as jnp

from jaxnets.core.registry import register
from jaxnets.nn import init as initializers
from jaxnets.nn._utils import check, check_channels, freeze, ntuple
from jaxnets.nn.module import Module, Params, State

__all__ = ["Conv1d", "Conv2d", "Conv3d"]

_PAD_MODES = {"zeros": None, "reflect": "reflect", "replicate": "edge", "circular": "wrap"}
DIMENSION_NUMBERS = {
    1: ("NCH", "OIH", "NCH"),
    2: ("NCHW", "OIHW", "NCHW"),
    3: ("NCDHW", "OIDHW", "NCDHW"),
}
_LAYOUTS = {1: "(N, C, L)", 2: "(N, C, H, W)", 3: "(N, C, D, H, W)"}


def batched(layer: Module, x: jax.Array, n: int, channels: int) -> tuple[jax.Array, bool]:
    """``x`` with a batch dim (torch accepts unbatched ``(C, *spatial)`` inputs too), after
    checking its rank and that its channel axis holds ``channels`` (``in_channels``)."""
    check(
        x.ndim in (n + 1, n + 2),
        layer,
        f"expected input of shape (N, C, {n} spatial dims) or (C, {n} spatial dims), got {x.shape}.",
    )
    check_channels(layer, x, channels, "in_channels", _LAYOUTS[n])
    if x.ndim == n + 1:
        return x[None], True
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
        x, unbatched = batched(self, x, n, self.in_channels)
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
            dimension_numbers=DIMENSION_NUMBERS[n],
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
        ``padding``/``padding_mode``, or an input of the wrong rank or channel count (the
        message gives the transpose for a channels-last input).
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
        ``padding``/``padding_mode``, or an input of the wrong rank or channel count (e.g.
        NHWC: the message says ``x.transpose(0, 3, 1, 2)``).
    """

    _n: ClassVar[int] = 2


@register(name="nn.Conv3d")
class Conv3d(_ConvNd):
    """3-D convolution, as ``torch.nn.Conv3d`` (same arguments and defaults).

    Params: ``weight (out_channels, in_channels // groups, kD, kH, kW)`` (OIDHW), ``bias
    (out_channels,)`` when ``bias``; init ``U(±1/sqrt(fan_in))``, ``fan_in = in/groups*kD*kH*kW``.

    Shapes: ``x (N, C_in, D, H, W)`` (or unbatched ``(C_in, D, H, W)``) -> ``(N, C_out, D_out,
    H_out, W_out)``, each size as in :class:`Conv2d`. ``padding``/``padding_mode`` as Conv2d.

    Raises:
      ValueError: channels not divisible by ``groups``, ``"same"`` with a stride, a bad
        ``padding``/``padding_mode``, or an input of the wrong rank or channel count.
    """

    _n: ClassVar[int] = 3
