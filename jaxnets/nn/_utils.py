"""Small helpers shared by the layer files: torch-style int-or-tuple arguments and validation."""

from __future__ import annotations

from typing import Any

from jaxnets.errors import JaxnetsError

__all__ = ["ntuple", "check", "freeze"]


def ntuple(
    value: int | tuple[int, ...] | list[int], n: int, name: str, layer: str
) -> tuple[int, ...]:
    """``3 -> (3, 3)``; a tuple/list must have ``n`` ints, as torch's ``_pair``/``_single``."""
    if isinstance(value, bool):
        raise JaxnetsError(f"{layer}: {name} must be an int or a tuple of {n} ints, got {value!r}.")
    if isinstance(value, int):
        return (value,) * n
    out = tuple(value)
    if len(out) != n or not all(isinstance(v, int) and not isinstance(v, bool) for v in out):
        raise JaxnetsError(f"{layer}: {name} must be an int or a tuple of {n} ints, got {value!r}.")
    return out


def check(ok: bool, layer: Any, message: str) -> None:
    """Raises ``JaxnetsError("<Layer>: message")`` unless ``ok``."""
    if not ok:
        raise JaxnetsError(f"{type(layer).__name__}: {message}")


def freeze(layer: Any, *names: str) -> None:
    """Turns list-valued hyperparameters into tuples, so specs stay hashable (jit static args)."""
    for name in names:
        value = getattr(layer, name)
        if isinstance(value, list):
            object.__setattr__(layer, name, tuple(value))
