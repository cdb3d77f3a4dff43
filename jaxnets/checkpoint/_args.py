"""Checks of the arguments the checkpoint API takes: TypeError/ValueError saying what is accepted.

(Bad *data*, a damaged or foreign step, is a CheckpointError; see jaxnets/errors.py.)
"""

from __future__ import annotations

import math
import operator
from collections.abc import Mapping
from typing import Any

import numpy as np

from jaxnets.checkpoint.meta import FIELDS

__all__ = [
    "bool_option",
    "int_option",
    "like_fields",
    "metrics_arg",
    "per_process_arg",
    "step_arg",
    "timeout_option",
]


def int_option(name: str, v: Any, minimum: int, *, none: bool = False) -> Any:
    """``v`` as an int >= ``minimum`` (or None when ``none``)."""
    if v is None and none:
        return None
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
        allowed = f"an int >= {minimum}" + (" or None" if none else "")
        raise TypeError(f"{name} must be {allowed}, got {type(v).__name__} {v!r}.")
    if v < minimum:
        raise ValueError(f"{name} must be >= {minimum}{' or None' if none else ''}, got {v}.")
    return int(v)


def timeout_option(name: str, v: Any) -> float:
    """``v`` as a number of seconds > 0."""
    if isinstance(v, bool) or not isinstance(v, (int, float, np.integer, np.floating)):
        raise TypeError(f"{name} must be a number of seconds > 0, got {type(v).__name__} {v!r}.")
    if not (math.isfinite(v) and v > 0):
        raise ValueError(f"{name} must be a finite number of seconds > 0, got {v!r}.")
    return float(v)


def per_process_arg(v: Any) -> tuple[str, ...]:
    """``save(per_process=...)`` as a tuple of key prefixes (a str is one prefix)."""
    items = (v,) if isinstance(v, str) else v
    if not isinstance(items, (tuple, list)) or not all(isinstance(p, str) and p for p in items):
        raise TypeError(
            "save(per_process=...) takes a key prefix or a tuple of them (e.g. 'rng' or "
            f"('rng', 'state.counter')), got {v!r}."
        )
    return tuple(items)


def bool_option(name: str, v: Any) -> None:
    if not isinstance(v, bool):
        raise TypeError(f"{name} must be True or False, got {type(v).__name__} {v!r}.")


def step_arg(step: Any, what: str) -> int:
    """``step`` as an int >= 0 (any integer type; not a bool)."""
    try:
        if isinstance(step, bool):
            raise TypeError
        n = operator.index(step)
    except TypeError:
        raise TypeError(
            f"{what}(step=...) takes an int >= 0"
            f"{'' if what == 'save' else ' or None (the latest)'}, got {type(step).__name__} "
            f"{step!r}."
        ) from None
    if n < 0:
        raise ValueError(f"{what}(step={n}): steps are integers >= 0.")
    return n


def metrics_arg(step: int, metrics: Any, best_metric: str | None) -> dict[str, float] | None:
    """``save(metrics=...)`` as ``{name: float}``: finite numbers, with ``best_metric`` if set."""
    if metrics is None:
        return None
    if not isinstance(metrics, Mapping):
        raise TypeError(
            f"save(metrics=...) takes a mapping {{name: number}}, got {type(metrics).__name__}."
        )
    out: dict[str, float] = {}
    for k, v in metrics.items():
        try:
            out[str(k)] = float(v)
        except (TypeError, ValueError) as e:
            raise TypeError(f"save(metrics=...): {k!r} is {v!r}, not a number.") from e
        if not math.isfinite(out[str(k)]):
            raise ValueError(
                f"save(metrics=...): {k!r} is {v!r}; metrics must be finite (they rank steps). "
                "Put non-finite values in extra= as strings."
            )
    if best_metric is not None and best_metric not in out:
        raise ValueError(
            f"save(step={step}): metrics has no {best_metric!r} (best_metric); got {sorted(out)}."
        )
    return out


def like_fields(like: Any, checkpoint_type: type) -> dict[str, Any]:
    """``restore(like=...)`` as ``{field: tree}`` (fields that are None left out)."""
    if like is None:
        return {}
    if isinstance(like, checkpoint_type):
        return {f: getattr(like, f) for f in FIELDS if getattr(like, f) is not None}
    if not isinstance(like, Mapping):
        raise TypeError(
            "restore(like=...) takes a Checkpoint or a mapping with any of "
            f"{', '.join(map(repr, FIELDS))} (e.g. {{'params': params}}), got {type(like).__name__}."
        )
    unknown = sorted(map(repr, set(like) - set(FIELDS)))
    if unknown:
        raise ValueError(
            f"restore(like=...): unknown entries {', '.join(unknown)}; use any of "
            f"{', '.join(map(repr, FIELDS))}."
        )
    return {k: v for k, v in like.items() if v is not None}
