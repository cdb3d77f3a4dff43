"""optax's learning-rate schedules as storable configs; see :mod:`jaxnets.optim.base`.

A schedule config is called like optax's schedule (``sched(step) -> value``) and is accepted as
``learning_rate`` (or ``weight_decay``) by every jaxnets.optim optimizer, where it is stored with
the optimizer. Fields are optax's arguments, in optax's order, with optax's defaults.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import optax

from jaxnets.core.registry import register
from jaxnets.optim.base import Schedule

__all__ = [
    "constant_schedule",
    "linear_schedule",
    "polynomial_schedule",
    "cosine_decay_schedule",
    "warmup_cosine_decay_schedule",
    "exponential_decay",
    "warmup_exponential_decay_schedule",
    "piecewise_constant_schedule",
    "join_schedules",
]


@register(name="optim.constant_schedule")
@dataclass(frozen=True)
class constant_schedule(Schedule):  # noqa: N801  (optax's name: the class is the constructor)
    """``optax.constant_schedule``: ``value`` at every step."""

    value: float

    _optax = optax.constant_schedule


@register(name="optim.linear_schedule")
@dataclass(frozen=True)
class linear_schedule(Schedule):  # noqa: N801
    """``optax.linear_schedule``: from ``init_value`` to ``end_value`` over ``transition_steps``."""

    init_value: float
    end_value: float
    transition_steps: int
    transition_begin: int = 0

    _optax = optax.linear_schedule


@register(name="optim.polynomial_schedule")
@dataclass(frozen=True)
class polynomial_schedule(Schedule):  # noqa: N801
    """``optax.polynomial_schedule``: polynomial decay of the given ``power``."""

    init_value: float
    end_value: float
    power: float
    transition_steps: int
    transition_begin: int = 0

    _optax = optax.polynomial_schedule


@register(name="optim.cosine_decay_schedule")
@dataclass(frozen=True)
class cosine_decay_schedule(Schedule):  # noqa: N801
    """``optax.cosine_decay_schedule``: cosine decay from ``init_value`` to ``alpha * init_value``."""

    init_value: float
    decay_steps: int
    alpha: float = 0.0
    exponent: float = 1.0

    _optax = optax.cosine_decay_schedule


@register(name="optim.warmup_cosine_decay_schedule")
@dataclass(frozen=True)
class warmup_cosine_decay_schedule(Schedule):  # noqa: N801
    """``optax.warmup_cosine_decay_schedule``: linear warmup to ``peak_value``, then cosine decay.

    As in optax, ``decay_steps`` counts the warmup steps too.
    """

    init_value: float
    peak_value: float
    warmup_steps: int
    decay_steps: int
    end_value: float = 0.0
    exponent: float = 1.0

    _optax = optax.warmup_cosine_decay_schedule


@register(name="optim.exponential_decay")
@dataclass(frozen=True)
class exponential_decay(Schedule):  # noqa: N801
    """``optax.exponential_decay``: ``init_value * decay_rate ** (step / transition_steps)``."""

    init_value: float
    transition_steps: int
    decay_rate: float
    transition_begin: int = 0
    staircase: bool = False
    end_value: float | None = None

    _optax = optax.exponential_decay


@register(name="optim.warmup_exponential_decay_schedule")
@dataclass(frozen=True)
class warmup_exponential_decay_schedule(Schedule):  # noqa: N801
    """``optax.warmup_exponential_decay_schedule``: linear warmup, then exponential decay."""

    init_value: float
    peak_value: float
    warmup_steps: int
    transition_steps: int
    decay_rate: float
    transition_begin: int = 0
    staircase: bool = False
    end_value: float | None = None

    _optax = optax.warmup_exponential_decay_schedule


@register(name="optim.piecewise_constant_schedule")
@dataclass(frozen=True)
class piecewise_constant_schedule(Schedule):  # noqa: N801
    """``optax.piecewise_constant_schedule``: ``init_value`` scaled by ``scale`` at each boundary.

    ``boundaries_and_scales`` is given as in optax, ``{step: scale}``, and stored as sorted
    ``((step, scale), ...)`` pairs (JSON objects need string keys; a tuple keeps the config
    hashable).

    Raises:
      TypeError: a boundary is not an int.
    """

    init_value: float
    boundaries_and_scales: Any = None

    _optax = optax.piecewise_constant_schedule

    def __post_init__(self) -> None:
        pairs = self.boundaries_and_scales
        if pairs is not None:
            items = pairs.items() if isinstance(pairs, dict) else pairs
            try:
                clean = tuple(sorted((_step(k), float(v)) for k, v in items))
            except (TypeError, ValueError) as e:
                raise TypeError(
                    f"jaxnets.optim.piecewise_constant_schedule: boundaries_and_scales must be {{step: scale}} with int steps, got {pairs!r:.80} ({e})."
                ) from e
            object.__setattr__(self, "boundaries_and_scales", clean)
        super().__post_init__()

    def _kwargs(self) -> dict[str, Any]:
        kwargs = super()._kwargs()
        if self.boundaries_and_scales is not None:
            kwargs["boundaries_and_scales"] = dict(self.boundaries_and_scales)
        return kwargs


def _step(k: Any) -> int:
    if isinstance(k, bool) or int(k) != k:
        raise ValueError(f"boundary {k!r} is not an integer step")
    return int(k)


@register(name="optim.join_schedules")
@dataclass(frozen=True)
class join_schedules(Schedule):  # noqa: N801
    """``optax.join_schedules``: ``schedules[i]`` runs from ``boundaries[i-1]`` (counting from 0 there)."""

    schedules: tuple[Schedule, ...]
    boundaries: tuple[int, ...]

    _optax = optax.join_schedules

    def __post_init__(self) -> None:
        super().__post_init__()
        for i, s in enumerate(self.schedules):
            if not isinstance(s, Schedule):
                raise TypeError(
                    f"jaxnets.optim.join_schedules: schedules[{i}] is {type(s).__name__}, not a jaxnets.optim schedule; use optax.join_schedules for other callables."
                )
