"""Small helpers shared by the layer files: torch-style int-or-tuple arguments and validation."""

from __future__ import annotations

from typing import Any

__all__ = ["ntuple", "check", "freeze"]


def ntuple(
    value: int | tuple[int, ...] | list[int], n: int, name: str, layer: str
) -> tuple[int, ...]:
    """``3 -> (3, 3)``; a tuple/list must have ``n`` ints, as torch's ``_pair``/``_single``."""
    if isinstance(value, bool):
        raise TypeError(f"{layer}: {name} must be an int or a tuple of {n} ints, got {value!r}.")
    if isinstance(value, int):
        return (value,) * n
    out = tuple(value)
    if len(out) != n or not all(isinstance(v, int) and not isinstance(v, bool) for v in out):
        raise TypeError(f"{layer}: {name} must be an int or a tuple of {n} ints, got {value!r}.")
    return out


def check(ok: bool, layer: Any, message: str) -> None:
    """Raises ``ValueError("<Layer>: message")`` unless ``ok`` (a bad hyperparameter or input)."""
    if not ok:
        raise ValueError(f"{type(layer).__name__}: {message}")


def freeze(layer: Any, *names: str) -> None:
    """Turns list-valued hyperparameters into tuples, so specs stay hashable (jit static args)."""
    for name in names:
        value = getattr(layer, name)
        if isinstance(value, list):
            object.__setattr__(layer, name, tuple(value))
