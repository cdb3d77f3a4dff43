"""optax's building blocks (``chain``, clipping, scaling) as storable configs.

Combine them as in optax: ``chain(clip_by_global_norm(1.0), adam(3e-4))``. Every element of a
``chain`` must itself be a jaxnets.optim config (an optax transformation cannot be stored).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import optax

from jaxnets.core.registry import register
from jaxnets.optim.base import ScalarOrSchedule, Transform

__all__ = [
    "chain",
    "clip",
    "clip_by_global_norm",
    "add_decayed_weights",
    "scale",
    "scale_by_adam",
    "scale_by_learning_rate",
    "trace",
    "identity",
]


@register(name="optim.chain")
@dataclass(frozen=True, init=False)
class chain(Transform):  # noqa: N801  (optax's name: the class is the constructor)
    """``optax.chain(*transforms)``: applies the transformations in order.

    The state is optax's: a tuple with one state per transformation.

    Raises:
      TypeError: an argument is not a jaxnets.optim transformation (e.g. an optax one, which
        cannot be stored): build the whole chain with optax instead, or use jaxnets.optim pieces.
    """

    transforms: tuple[Transform, ...]

    def __init__(self, *transforms: Transform):
        for i, t in enumerate(transforms):
            if not isinstance(t, Transform):
                raise TypeError(
                    f"jaxnets.optim.chain: argument {i} is {type(t).__module__}.{type(t).__qualname__}, not a jaxnets.optim transformation, so the chain cannot be stored as a config. Use the jaxnets.optim equivalent (e.g. jaxnets.optim.clip_by_global_norm) or build the whole chain with optax.chain (its state still saves; the optimizer config does not)."
                )
        object.__setattr__(self, "transforms", tuple(transforms))

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> chain:
        return cls(*config["transforms"])

    def get_config(self) -> dict[str, Any]:
        return {"transforms": self.transforms}

    def _make(self) -> Any:
        return optax.chain(*(t.build() for t in self.transforms))


@register(name="optim.clip_by_global_norm")
@dataclass(frozen=True)
class clip_by_global_norm(Transform):  # noqa: N801
    """``optax.clip_by_global_norm``: scales updates so their global L2 norm is at most ``max_norm``."""

    max_norm: float

    _optax = optax.clip_by_global_norm


@register(name="optim.clip")
@dataclass(frozen=True)
class clip(Transform):  # noqa: N801
    """``optax.clip``: clips each update element to ``[-max_delta, max_delta]``."""

    max_delta: float

    _optax = optax.clip


@register(name="optim.add_decayed_weights")
@dataclass(frozen=True)
class add_decayed_weights(Transform):  # noqa: N801
    """``optax.add_decayed_weights``: adds ``weight_decay * params``; ``mask`` must be ``None``."""

    weight_decay: ScalarOrSchedule = 0.0
    mask: None = None

    _optax = optax.add_decayed_weights
    _mask_fields = ("mask",)


@register(name="optim.scale")
@dataclass(frozen=True)
class scale(Transform):  # noqa: N801
    """``optax.scale``: multiplies updates by ``step_size``."""

    step_size: float

    _optax = optax.scale


@register(name="optim.scale_by_adam")
@dataclass(frozen=True)
class scale_by_adam(Transform):  # noqa: N801
    """``optax.scale_by_adam``: Adam's rescaling without the learning rate."""

    b1: float = 0.9
    b2: float = 0.999
    eps: float = 1e-8
    eps_root: float = 0.0
    mu_dtype: str | None = None
    nesterov: bool = dataclasses.field(default=False, kw_only=True)

    _optax = optax.scale_by_adam
    _dtype_fields = ("mu_dtype",)


@register(name="optim.scale_by_learning_rate")
@dataclass(frozen=True)
class scale_by_learning_rate(Transform):  # noqa: N801
    """``optax.scale_by_learning_rate``: multiplies by ``-learning_rate`` (``flip_sign=True``)."""

    learning_rate: ScalarOrSchedule | None = None
    flip_sign: bool = dataclasses.field(default=True, kw_only=True)

    _optax = optax.scale_by_learning_rate


@register(name="optim.trace")
@dataclass(frozen=True)
class trace(Transform):  # noqa: N801
    """``optax.trace``: (Nesterov) momentum accumulation, state ``TraceState``."""

    decay: float
    nesterov: bool = False
    accumulator_dtype: str | None = None

    _optax = optax.trace
    _dtype_fields = ("accumulator_dtype",)


@register(name="optim.identity")
@dataclass(frozen=True)
class identity(Transform):  # noqa: N801
    """``optax.identity``: passes updates through unchanged."""

    _optax = optax.identity
