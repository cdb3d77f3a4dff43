"""Small helpers shared by the layer files: torch-style int-or-tuple arguments and validation."""

from __future__ import annotations

from typing import Any

import jax

__all__ = ["ntuple", "check", "freeze", "is_training", "check_channels"]


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


def is_training(layer: Any, train: Any) -> bool:
    """``bool(train)``, or a ValueError that teaches ``static_argnames`` when ``train`` is traced.

    Layers that behave differently in training (Dropout, BatchNorm, ...) branch in Python on
    ``train``; under ``jax.jit(model.apply)`` it would be a tracer, which has no Python truth value.
    """
    try:
        return bool(train)
    except jax.errors.ConcretizationTypeError as e:
        raise ValueError(
            f"{type(layer).__name__}: train is a traced value, but it chooses between two programs "
            "(training and evaluation), so it must be a Python bool when the model is traced. "
            "Mark it static: jax.jit(model.apply, static_argnames='train'), or close over it: "
            "jax.jit(lambda p, s, x: model.apply(p, s, x, train=True, key=k))."
        ) from e


def check_channels(layer: Any, x: Any, channels: int, name: str, layout: str) -> None:
    """Checks that axis 1 (axis 0 unbatched) of a channels-first input holds ``channels``.

    Args:
      layer: the layer (its repr names the hyperparameters in the message).
      x: the input, ``(N, C, *spatial)`` or unbatched ``(C, *spatial)``.
      channels: the channel count the layer was built for.
      name: the hyperparameter that holds it (``"in_channels"``).
      layout: the expected batched layout, e.g. ``"(N, C, H, W)"``.

    Raises:
      ValueError: naming the layout, the count found, and the transpose when the channels are
        on the last axis (a channels-last NHWC input).
    """
    n_spatial = layout.count(",") - 1
    axis = 0 if x.ndim == n_spatial + 1 else 1
    found = x.shape[axis]
    if found == channels:
        return
    hint = ""
    if x.shape[-1] == channels:
        order = tuple(range(axis)) + (x.ndim - 1,) + tuple(range(axis, x.ndim - 1))
        hint = (
            f" The last axis has {channels}: if the input is channels-last, transpose it first: "
            f"x.transpose{order}."
        )
    raise ValueError(
        f"{type(layer).__name__}: expected input {layout} with C = {name} = {channels} on axis "
        f"{axis} (channels first, as PyTorch), got shape {tuple(x.shape)} with {found} there."
        f"{hint} The layer: {layer!r}."
    )
