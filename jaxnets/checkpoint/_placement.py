"""Where restored arrays go: one device, one sharding, a tree of them, a function, or a template."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import jax

from jaxnets.core.structure import LeafInfo
from jaxnets.core.tree import flatten
from jaxnets.errors import CheckpointError

__all__ = ["ShardingSpec", "placer"]

# sharding=: one Sharding, a record-shaped tree of them ({"params": {...}, "opt_state": ...}), or
# fn(key, LeafInfo) -> Sharding (None for the default device).
ShardingSpec = jax.sharding.Sharding | Mapping[str, Any] | Callable[[str, LeafInfo], Any]


def _device(device: str | jax.Device) -> jax.Device:
    if isinstance(device, str):
        try:
            return jax.devices(device)[0]
        except RuntimeError as e:
            raise CheckpointError(f"restore(device={device!r}): no such device here ({e}).") from e
    return device


def placer(
    *,
    device: str | jax.Device | None,
    sharding: ShardingSpec | None,
    like_flat: Mapping[str, Any],
    stored_keys: list[str],
) -> Callable[[str, LeafInfo], jax.sharding.Sharding]:
    """``place(key, info) -> Sharding`` for every restored jax leaf.

    Precedence: ``device`` (everything on that device) or ``sharding``; else the sharding of the
    template's leaf (``like``) when it is a jax array or ``ShapeDtypeStruct`` with one; else the
    default device. Stored shardings are never reused, so a checkpoint written on any number of
    devices restores anywhere.

    Raises:
      CheckpointError: both ``device`` and ``sharding`` given, or a sharding tree names keys that
        are not in the checkpoint.
    """
    if device is not None and sharding is not None:
        raise CheckpointError("restore(): pass device= or sharding=, not both.")
    default = jax.sharding.SingleDeviceSharding(
        _device(device) if device is not None else jax.devices()[0]
    )
    if device is not None:
        return lambda key, info: default

    def from_like(key: str) -> jax.sharding.Sharding:
        s = getattr(like_flat.get(key), "sharding", None)
        return s if isinstance(s, jax.sharding.Sharding) else default

    if sharding is None:
        return lambda key, info: from_like(key)
    if isinstance(sharding, jax.sharding.Sharding):
        return lambda key, info: sharding
    if callable(sharding):
        fn = sharding

        def call(key: str, info: LeafInfo) -> jax.sharding.Sharding:
            s = fn(key, info)
            if s is None:
                return from_like(key)
            if not isinstance(s, jax.sharding.Sharding):
                raise CheckpointError(
                    f"{key}: the sharding function returned {s!r}, not a jax.sharding.Sharding "
                    "(or None for the default).",
                    path=key,
                )
            return s

        return call
    if isinstance(sharding, Mapping):
        tree = flatten(dict(sharding))
        unknown = sorted(set(tree) - set(stored_keys))
        if unknown:
            raise CheckpointError(
                "restore(sharding=...): the sharding tree has entries that are not in the "
                f"checkpoint: {', '.join(unknown)}. Its keys are the checkpoint's "
                '({"params": {...}, "opt_state": ...}); see CheckpointManager.metadata(step).'
            )
        return lambda key, info: tree[key] if key in tree else from_like(key)
    raise CheckpointError(
        f"restore(sharding=...) takes a Sharding, a tree of them or a function, got {type(sharding).__name__}."
    )
