"""The one placer: where loaded arrays go (model files, checkpoints).

Every load in jaxnets takes the same placement arguments and resolves them here:

* ``device``: ``"cpu"``/``"gpu"``/``"tpu"`` (this process's first device of that platform) or a
  ``jax.Device``: every array there;
* ``sharding``: one ``jax.sharding.Sharding`` for every array; a tree of them shaped like what is
  loaded (``{"params": {"fc1": {"weight": s}}}``, keyed like :func:`jaxnets.core.tree.flatten`);
  or ``fn(key, LeafInfo) -> Sharding | None`` called with each key (``"params.fc1.weight"``) and
  its shape/dtype;
* ``like``: a flat template ``{key: leaf}``; a leaf with a ``.sharding`` (a jax array, a
  ``jax.ShapeDtypeStruct``) places the loaded array of that key the same way.

Precedence per leaf: ``device``; else ``sharding`` (a tree or a function may leave a leaf out,
``None``); else the template's sharding; else jax's default device. Stored shardings are never
reused, so what was saved on any number of devices loads anywhere.

Device names resolve to the *calling process's* devices (``jax.local_devices``), never another
process's: in a multi-process job each process places on its own (see issue 12).
"""

from __future__ import annotations

from collections.abc import Callable, Container, Iterable, Mapping
from typing import Any, TypeAlias

import jax
import numpy as np

from jaxnets.core.structure import LeafInfo, leaf_info
from jaxnets.core.tree import flatten

__all__ = ["Device", "Placer", "ShardingSpec", "placer", "resolve_device"]

Device: TypeAlias = "str | jax.Device"
ShardingSpec: TypeAlias = (
    "jax.sharding.Sharding | Mapping[str, Any] | Callable[[str, LeafInfo], jax.sharding.Sharding | None]"
)


def resolve_device(device: Device | None) -> jax.Device:
    """This process's device for ``device`` (``None``: the default device).

    Raises:
      TypeError: ``device`` is neither a string nor a ``jax.Device``.
      ValueError: no device of that platform is attached to this process.
    """
    if device is None:
        return jax.local_devices()[0]
    if isinstance(device, jax.Device):
        return device
    if not isinstance(device, str):
        raise TypeError(
            f"device= takes a platform name ('cpu', 'gpu', 'tpu') or a jax.Device, got "
            f"{type(device).__name__} {device!r}."
        )
    try:
        found = jax.local_devices(backend=device)
    except RuntimeError as e:  # jax: unknown backend / platform not initialised
        found, why = [], f" ({e})"
    else:
        why = ""
    if not found:
        have = sorted({d.platform for d in jax.local_devices()})
        raise ValueError(
            f"device={device!r}: this process has no such device{why}; it has {', '.join(have)}."
        )
    return found[0]


class Placer:
    """Resolved placement arguments: :meth:`sharding` per key, :meth:`put` for a flat dict.

    Build it with :func:`placer`, which checks the arguments.
    """

    def __init__(
        self,
        target: Callable[[str, LeafInfo], jax.sharding.Sharding | None],
        default: jax.Device,
    ) -> None:
        self._target = target
        self.default = jax.sharding.SingleDeviceSharding(default)

    def sharding(self, key: str, info: LeafInfo) -> jax.sharding.Sharding | None:
        """The sharding asked for ``key`` (shape/dtype ``info``), or None for jax's default device.

        Raises:
          TypeError: a sharding function returned something that is not a Sharding.
        """
        return self._target(key, info)

    def sharding_or_default(self, key: str, info: LeafInfo) -> jax.sharding.Sharding:
        """:meth:`sharding`, with the default device's sharding instead of None."""
        s = self._target(key, info)
        return self.default if s is None else s

    def put(
        self,
        flat: Mapping[str, Any],
        *,
        infos: Mapping[str, LeafInfo] | None = None,
        local: Container[str] = (),
    ) -> dict[str, jax.Array]:
        """Places every array of ``flat`` (host arrays every process holds whole), in key order.

        One batched ``jax.device_put`` for the leaves placed on this process's devices and one
        for the rest (on jax's default device, uncommitted, as ``jnp.asarray`` would leave
        them). A leaf whose sharding spans other processes' devices is built from this
        process's copy with ``jax.make_array_from_callback``: each process puts only its own
        shards, with no cross-process check (``device_put`` would compare the values across
        processes, a collective per call).

        Args:
          flat: ``{key: array}`` (numpy or jax arrays).
          infos: the :class:`LeafInfo` to place each key by, when it is not the array's own
            (a PRNG key stored as its uint32 data is placed as the key it is).
          local: keys of values that belong to this process alone (saved per process): where
            their sharding spans other processes, they go to the default device instead.

        Returns:
          ``{key: jax.Array}`` in the order of ``flat``.
        """
        placed: list[str] = []
        targets: list[jax.sharding.Sharding] = []
        rest: list[str] = []
        out: dict[str, Any] = {}
        for k, x in flat.items():
            s = self._target(k, infos[k] if infos is not None else leaf_info(x))
            if s is not None and not s.is_fully_addressable:
                if k in local:
                    s = None
                else:
                    host = np.asarray(x)
                    out[k] = jax.make_array_from_callback(host.shape, s, host.__getitem__)
                    continue
            if s is None:
                rest.append(k)
            else:
                placed.append(k)
                targets.append(s)
        if placed:
            out.update(zip(placed, jax.device_put([flat[k] for k in placed], targets)))
        if rest:
            out.update(zip(rest, jax.device_put([flat[k] for k in rest])))
        return {k: out[k] for k in flat}


def placer(
    *,
    device: Device | None = None,
    sharding: ShardingSpec | None = None,
    like: Mapping[str, Any] | None = None,
    keys: Iterable[str] | None = None,
) -> Placer:
    """Checks placement arguments and resolves them into a :class:`Placer` (see module docstring).

    Args:
      device: a platform name or a ``jax.Device`` for every array.
      sharding: one Sharding, a tree of them, or ``fn(key, LeafInfo) -> Sharding | None``.
      like: a flat template ``{key: leaf}``; leaves with a ``.sharding`` are placed like it.
      keys: every key that may be placed; a sharding tree naming any other key is refused.

    Returns:
      A :class:`Placer`.

    Raises:
      ValueError: both ``device`` and ``sharding``; an unknown device; a sharding tree with keys
        not in ``keys``.
      TypeError: an argument of a type not listed above.
    """
    if device is not None and sharding is not None:
        raise ValueError("pass device= or sharding=, not both.")
    default = resolve_device(None)
    if device is not None:
        fixed = jax.sharding.SingleDeviceSharding(resolve_device(device))
        return Placer(lambda key, info: fixed, default)
    template = dict(like or {})

    def from_like(key: str) -> jax.sharding.Sharding | None:
        s = getattr(template.get(key), "sharding", None)
        return s if isinstance(s, jax.sharding.Sharding) else None

    if sharding is None:
        return Placer(lambda key, info: from_like(key), default)
    if isinstance(sharding, jax.sharding.Sharding):
        one = sharding
        return Placer(lambda key, info: one, default)
    if isinstance(sharding, Mapping):
        tree = flatten(dict(sharding))
        for k, s in tree.items():
            if not isinstance(s, jax.sharding.Sharding):
                raise TypeError(
                    f"sharding=: the tree's entry {k!r} is a {type(s).__name__}, not a "
                    "jax.sharding.Sharding (leave a key out for the default placement)."
                )
        if keys is not None:
            unknown = sorted(set(tree) - set(keys))
            if unknown:
                raise ValueError(
                    f"sharding=: the tree has entries that are not loaded here: {', '.join(unknown)}. "
                    'Its keys are those of what is loaded ({"params": {"fc1": {"weight": s}}}).'
                )
        return Placer(lambda key, info: tree[key] if key in tree else from_like(key), default)
    if callable(sharding):
        fn = sharding

        def call(key: str, info: LeafInfo) -> jax.sharding.Sharding | None:
            s = fn(key, info)
            if s is None:
                return from_like(key)
            if not isinstance(s, jax.sharding.Sharding):
                raise TypeError(
                    f"{key}: the sharding function returned a {type(s).__name__} ({s!r}), not a "
                    "jax.sharding.Sharding (or None for the default placement)."
                )
            return s

        return Placer(call, default)
    raise TypeError(
        "sharding= takes a jax.sharding.Sharding, a tree of them, or fn(key, LeafInfo) -> "
        f"Sharding | None; got {type(sharding).__name__}."
    )
