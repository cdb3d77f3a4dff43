"""Upsample (and torch's two fixed-mode aliases), PixelShuffle, PixelUnshuffle and
ChannelShuffle: resizing and rearranging layers, computed by :mod:`jaxnets.nn.functional`. None
has params."""

from __future__ import annotations

from typing import Any, ClassVar

from jaxnets.core.registry import register
from jaxnets.nn import functional as F
from jaxnets.nn._utils import check, freeze
from jaxnets.nn.module import Key, Module, Output, Params, State

__all__ = [
    "Upsample", "UpsamplingNearest2d", "UpsamplingBilinear2d", "PixelShuffle", "PixelUnshuffle",
    "ChannelShuffle",
]  # fmt: skip


@register(name="nn.Upsample")
class Upsample(Module):
    """Resizes the spatial dims, as ``torch.nn.Upsample``: :func:`jaxnets.nn.functional.interpolate`
    with the layer's arguments.

    Args (torch's): ``size`` or ``scale_factor`` (exactly one; an int/float or one per spatial
    dim), ``mode="nearest"`` (also ``"nearest-exact"``, ``"linear"``, ``"bilinear"``,
    ``"bicubic"``, ``"trilinear"``, ``"area"``), ``align_corners=None`` (linear modes only),
    ``recompute_scale_factor=None``.

    Shapes: ``(N, C, *spatial)`` -> ``(N, C, *size)``, each size ``floor(in * scale_factor)``
    when a factor is given. No params.

    Raises:
      ValueError: an unknown mode, ``align_corners`` with a nearest/area mode, both or neither of
        ``size`` and ``scale_factor``; at apply, a mode that does not fit the input's rank.
    """

    size: int | tuple[int, ...] | None = None
    scale_factor: float | tuple[float, ...] | None = None
    mode: str = "nearest"
    align_corners: bool | None = None
    recompute_scale_factor: bool | None = None

    def __post_init__(self) -> None:
        freeze(self, "size", "scale_factor")
        check(self.mode in F.MODES, self, f"mode must be one of {list(F.MODES)}, got {self.mode!r}.")
        check(
            self.align_corners is None or self.mode in F.LINEAR_MODES,
            self,
            f"align_corners can only be set with the interpolating modes, not {self.mode!r}.",
        )
        check(
            (self.size is None) != (self.scale_factor is None),
            self,
            "give exactly one of size and scale_factor.",
        )

    def apply(
        self, params: Params, state: State, x: Any, *, train: bool = False, key: Key = None
    ) -> Output:
        y = F.interpolate(
            x,
            self.size,
            self.scale_factor,
            self.mode,
            self.align_corners,
            self.recompute_scale_factor,
        )
        return y, state


class _FixedMode(Upsample):
    """torch's Upsample aliases: only ``size`` and ``scale_factor`` are arguments."""

    _mode: ClassVar[str] = "nearest"
    _align_corners: ClassVar[bool | None] = None

    def __init__(self, size: int | tuple[int, int] | None = None, scale_factor: float | None = None):
        for name, value in (
            ("size", size),
            ("scale_factor", scale_factor),
            ("mode", self._mode),
            ("align_corners", self._align_corners),
            ("recompute_scale_factor", None),
        ):
            object.__setattr__(self, name, value)
        self.__post_init__()

    def get_config(self) -> dict[str, Any]:
        return {"size": self.size, "scale_factor": self.scale_factor}

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> Upsample:
        return cls(**config)


@register(name="nn.UpsamplingNearest2d")
class UpsamplingNearest2d(_FixedMode):
    """``Upsample(size, scale_factor, mode="nearest")`` on ``(N, C, H, W)``, as
    ``torch.nn.UpsamplingNearest2d`` (deprecated there in favour of Upsample)."""

    __init__ = _FixedMode.__init__  # in the class body, so the dataclass machinery keeps it


@register(name="nn.UpsamplingBilinear2d")
class UpsamplingBilinear2d(_FixedMode):
    """``Upsample(size, scale_factor, mode="bilinear", align_corners=True)``, as
    ``torch.nn.UpsamplingBilinear2d`` (note: align_corners=True, unlike Upsample's default)."""

    _mode: ClassVar[str] = "bilinear"
    _align_corners: ClassVar[bool | None] = True
    __init__ = _FixedMode.__init__


@register(name="nn.PixelShuffle")
class PixelShuffle(Module):
    """``(*, C*r*r, H, W)`` -> ``(*, C, H*r, W*r)`` with ``r = upscale_factor``, as
    ``torch.nn.PixelShuffle`` (sub-pixel convolution upsampling). No params.

    Raises:
      ValueError: channels not divisible by ``r*r``, or fewer than 3 dims.
    """

    upscale_factor: int

    def apply(
        self, params: Params, state: State, x: Any, *, train: bool = False, key: Key = None
    ) -> Output:
        return F.pixel_shuffle(x, self.upscale_factor), state


@register(name="nn.PixelUnshuffle")
class PixelUnshuffle(Module):
    """``(*, C, H*r, W*r)`` -> ``(*, C*r*r, H, W)`` with ``r = downscale_factor``, as
    ``torch.nn.PixelUnshuffle``. No params.

    Raises:
      ValueError: H or W not divisible by ``r``, or fewer than 3 dims.
    """

    downscale_factor: int

    def apply(
        self, params: Params, state: State, x: Any, *, train: bool = False, key: Key = None
    ) -> Output:
        return F.pixel_unshuffle(x, self.downscale_factor), state


@register(name="nn.ChannelShuffle")
class ChannelShuffle(Module):
    """``(N, g*k, *)`` -> channels reordered ``(g, k) -> (k, g)``, as ``torch.nn.ChannelShuffle``
    (ShuffleNet). No params. Shapes: same.

    Raises:
      ValueError: channels not divisible by ``groups``, or fewer than 3 dims.
    """

    groups: int

    def apply(
        self, params: Params, state: State, x: Any, *, train: bool = False, key: Key = None
    ) -> Output:
        return F.channel_shuffle(x, self.groups), state
