"""ConvTranspose1d/2d/3d: torch.nn's arguments and its transposed ``(in, out/groups, *k)`` kernels.

A transposed convolution is computed as the convolution of the input dilated by ``stride`` with
the spatially flipped kernel (in/out swapped per group), which is what torch computes too.
"""

from __future__ import annotations

from typing import Any, ClassVar

import jax
import jax.numpy as jnp

from jaxnets.core.registry import register
from jaxnets.nn import init as initializers
from jaxnets.nn._utils import check, freeze, ntuple
from jaxnets.nn.conv import DIMENSION_NUMBERS, batched
from jaxnets.nn.module import Key, Module, Output, Params, State

__all__ = ["ConvTranspose1d", "ConvTranspose2d", "ConvTranspose3d"]

_IntOrTuple = int | tuple[int, ...]


class _ConvTransposeNd(Module):
    in_channels: int
    out_channels: int
    kernel_size: _IntOrTuple
    stride: _IntOrTuple = 1
    padding: _IntOrTuple = 0
    output_padding: _IntOrTuple = 0
    groups: int = 1
    bias: bool = True
    dilation: _IntOrTuple = 1
    padding_mode: str = "zeros"

    _n: ClassVar[int] = 2

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

    def _arg(self, name: str) -> tuple[int, ...]:
        return ntuple(getattr(self, name), self._n, name, type(self).__name__)

    def init(self, key: jax.Array) -> tuple[Params, State]:
        shape = (self.in_channels, self.out_channels // self.groups, *self._arg("kernel_size"))
        return initializers.weight_and_bias(key, shape, self.out_channels, bias=self.bias), {}

    def apply(
        self, params: Params, state: State, x: Any, *, train: bool = False, key: Key = None
    ) -> Output:
        n = self._n
        x, unbatched = batched(self, x, n, self.in_channels)
        k, s, p = self._arg("kernel_size"), self._arg("stride"), self._arg("padding")
        d, op = self._arg("dilation"), self._arg("output_padding")
        g = self.groups
        w = params["weight"]  # (in, out/g, *k) -> (out, in/g, *k), spatially flipped
        cin, cout_g = w.shape[0], w.shape[1]
        w = jnp.swapaxes(w.reshape(g, cin // g, cout_g, *k), 1, 2)
        w = jnp.flip(w.reshape(g * cout_g, cin // g, *k), axis=tuple(range(2, 2 + n)))
        pads = [
            (di * (ki - 1) - pi, di * (ki - 1) - pi + oi) for ki, di, pi, oi in zip(k, d, p, op)
        ]
        y = jax.lax.conv_general_dilated(
            x,
            w,
            window_strides=(1,) * n,
            padding=pads,
            lhs_dilation=s,
            rhs_dilation=d,
            dimension_numbers=DIMENSION_NUMBERS[n],
            feature_group_count=g,
        )
        if self.bias:
            y = y + params["bias"].reshape((1, -1) + (1,) * n)
        return (y[0] if unbatched else y), state


_DOC = """Transposed {n}-D convolution (the gradient of Conv{n}d), as ``torch.nn.ConvTranspose{n}d``.

    Arguments and their order are torch's. Params: ``weight (in_channels, out_channels // groups,
    {k})`` (torch's transposed layout), ``bias (out_channels,)`` when ``bias``; init
    ``U(±1/sqrt(fan_in))`` with torch's ``fan_in = out_channels // groups * {kprod}``.

    Shapes: ``x {shape}`` (or unbatched, without N) -> ``(N, C_out, {out})`` with each size
    ``(size - 1)*stride - 2*padding + dilation*(k - 1) + output_padding + 1``.
    Only ``padding_mode="zeros"`` exists, as in torch; ``forward``'s ``output_size`` argument is
    not supported (give ``output_padding``).

    Raises:
      ValueError: channels not divisible by ``groups``, ``output_padding`` not smaller than
        ``stride`` or ``dilation``, another ``padding_mode``, or an input of the wrong rank or
        channel count.
    """


@register(name="nn.ConvTranspose1d")
class ConvTranspose1d(_ConvTransposeNd):
    __doc__ = _DOC.format(n=1, k="kL", kprod="kL", shape="(N, C_in, L)", out="L_out")
    _n: ClassVar[int] = 1


@register(name="nn.ConvTranspose2d")
class ConvTranspose2d(_ConvTransposeNd):
    __doc__ = _DOC.format(
        n=2, k="kH, kW", kprod="kH * kW", shape="(N, C_in, H, W)", out="H_out, W_out"
    )
    _n: ClassVar[int] = 2


@register(name="nn.ConvTranspose3d")
class ConvTranspose3d(_ConvTransposeNd):
    __doc__ = _DOC.format(
        n=3,
        k="kD, kH, kW",
        kprod="kD * kH * kW",
        shape="(N, C_in, D, H, W)",
        out="D_out, H_out, W_out",
    )
    _n: ClassVar[int] = 3
