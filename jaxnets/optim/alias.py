"""optax's optimizers (``optax/_src/alias.py``) as storable configs; see :mod:`jaxnets.optim.base`.

Each class has optax's name, and its fields are optax's arguments in optax's order with optax's
defaults, so ``jaxnets.optim.adam(1e-3)`` reads like, and computes exactly like, ``optax.adam(1e-3)``.
``learning_rate`` is a number or a jaxnets.optim schedule. Masks (``mask=``,
``weight_decay_mask=``) accept only ``None``: use optax directly for a masked optimizer.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import optax

from jaxnets.core.registry import register
from jaxnets.optim.base import ScalarOrSchedule, Transform

__all__ = ["sgd", "momentum", "adam", "adamw", "nadam", "lion", "rmsprop", "adagrad", "adafactor"]


@register(name="optim.sgd")
@dataclass(frozen=True)
class sgd(Transform):  # noqa: N801  (optax's name: the class is the constructor)
    """``optax.sgd``: stochastic gradient descent, with optional (Nesterov) momentum.

    Args:
      learning_rate: a number or a jaxnets.optim schedule.
      momentum: the momentum decay; ``None`` for plain SGD.
      nesterov: Nesterov momentum.
      accumulator_dtype: dtype of the momentum buffer (a name or dtype); ``None`` follows params.
    """

    learning_rate: ScalarOrSchedule
    momentum: float | None = None
    nesterov: bool = False
    accumulator_dtype: str | None = None

    _optax = optax.sgd
    _dtype_fields = ("accumulator_dtype",)


def momentum(
    learning_rate: ScalarOrSchedule,
    momentum: float = 0.9,
    nesterov: bool = False,
    accumulator_dtype: Any = None,
) -> sgd:
    """SGD with momentum: ``sgd(learning_rate, momentum, nesterov, accumulator_dtype)``.

    optax has no ``momentum`` alias; this returns the equivalent :class:`sgd` config (stored as
    ``optim.sgd``), like ``torch.optim.SGD(lr=..., momentum=0.9)``.
    """
    return sgd(learning_rate, momentum, nesterov, accumulator_dtype)


@register(name="optim.adam")
@dataclass(frozen=True)
class adam(Transform):  # noqa: N801
    """``optax.adam``: Adam (Kingma & Ba, 2014). Arguments as optax's; state ``ScaleByAdamState``."""

    learning_rate: ScalarOrSchedule
    b1: float = 0.9
    b2: float = 0.999
    eps: float = 1e-8
    eps_root: float = 0.0
    mu_dtype: str | None = None
    nesterov: bool = dataclasses.field(default=False, kw_only=True)

    _optax = optax.adam
    _dtype_fields = ("mu_dtype",)


@register(name="optim.nadam")
@dataclass(frozen=True)
class nadam(Transform):  # noqa: N801
    """``optax.nadam``: Adam with Nesterov momentum (``nesterov=True`` by default, as optax)."""

    learning_rate: ScalarOrSchedule
    b1: float = 0.9
    b2: float = 0.999
    eps: float = 1e-8
    eps_root: float = 0.0
    mu_dtype: str | None = None
    nesterov: bool = dataclasses.field(default=True, kw_only=True)

    _optax = optax.nadam
    _dtype_fields = ("mu_dtype",)


@register(name="optim.adamw")
@dataclass(frozen=True)
class adamw(Transform):  # noqa: N801
    """``optax.adamw``: Adam with decoupled weight decay (``weight_decay`` may be a schedule).

    ``mask`` must be ``None`` (a mask cannot be stored; use ``optax.adamw`` for one).
    """

    learning_rate: ScalarOrSchedule
    b1: float = 0.9
    b2: float = 0.999
    eps: float = 1e-8
    eps_root: float = 0.0
    mu_dtype: str | None = None
    weight_decay: ScalarOrSchedule = 1e-4
    mask: None = None
    nesterov: bool = dataclasses.field(default=False, kw_only=True)

    _optax = optax.adamw
    _dtype_fields = ("mu_dtype",)
    _mask_fields = ("mask",)


@register(name="optim.lion")
@dataclass(frozen=True)
class lion(Transform):  # noqa: N801
    """``optax.lion``: the Lion optimizer (Chen et al., 2023); ``mask`` must be ``None``."""

    learning_rate: ScalarOrSchedule
    b1: float = 0.9
    b2: float = 0.99
    mu_dtype: str | None = None
    weight_decay: ScalarOrSchedule = 1e-3
    mask: None = None

    _optax = optax.lion
    _dtype_fields = ("mu_dtype",)
    _mask_fields = ("mask",)


@register(name="optim.rmsprop")
@dataclass(frozen=True)
class rmsprop(Transform):  # noqa: N801
    """``optax.rmsprop``; note optax's defaults (``decay=0.9``, ``eps=1e-8``, eps inside the sqrt)."""

    learning_rate: ScalarOrSchedule
    decay: float = 0.9
    eps: float = 1e-8
    initial_scale: float = 0.0
    eps_in_sqrt: bool = True
    centered: bool = False
    momentum: float | None = None
    nesterov: bool = False
    bias_correction: bool = False

    _optax = optax.rmsprop


@register(name="optim.adagrad")
@dataclass(frozen=True)
class adagrad(Transform):  # noqa: N801
    """``optax.adagrad``."""

    learning_rate: ScalarOrSchedule
    initial_accumulator_value: float = 0.1
    eps: float = 1e-7

    _optax = optax.adagrad


@register(name="optim.adafactor")
@dataclass(frozen=True)
class adafactor(Transform):  # noqa: N801
    """``optax.adafactor`` (Shazeer & Stern, 2018); ``weight_decay_mask`` must be ``None``."""

    learning_rate: ScalarOrSchedule | None = None
    min_dim_size_to_factor: int = 128
    decay_rate: float = 0.8
    decay_offset: int = 0
    multiply_by_parameter_scale: bool = True
    clipping_threshold: float | None = 1.0
    momentum: float | None = None
    dtype_momentum: str = "float32"
    weight_decay_rate: ScalarOrSchedule | None = None
    eps: float = 1e-30
    factored: bool = True
    weight_decay_mask: None = None

    _optax = optax.adafactor
    _dtype_fields = ("dtype_momentum",)
    _mask_fields = ("weight_decay_mask",)
