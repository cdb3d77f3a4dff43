"""Optimizers as configs: optax's transformations, recorded by their arguments.

optax's ``GradientTransformation`` is a pair of closures, so it cannot be stored in a file. Every
constructor in :mod:`jaxnets.optim` (``adam``, ``chain``, ``cosine_decay_schedule`` ...) is instead
a small frozen dataclass of its arguments, registered as ``"optim.<optax name>"``:

* it **is** usable where optax wants a ``GradientTransformation``: ``init(params)`` and
  ``update(updates, state, params=None, **extra_args)`` delegate to the real optax transformation,
  built once from the config by :meth:`Transform.build` (schedules are called like optax's);
* ``jaxnets.to_config(opt)`` stores it as JSON and ``jaxnets.from_config`` rebuilds an equal one,
  in a process that never saw the training script;
* it is hashable, so it can be a static argument of ``jax.jit``.

The optimizer *state* is optax's own (``ScaleByAdamState`` ...): ``jaxnets.state_dict`` and
``tree_spec``/``tree_from_spec`` handle it with no registration.

Arguments must be plain data: numbers, strings, booleans, ``None``, tuples of these, dtypes (stored
by name) and nested jaxnets.optim configs (a schedule as ``learning_rate``, transformations in a
``chain``). A Python callable (an optax schedule, a ``mask`` function) or an array cannot be
stored, so it is refused at construction with the fix: use optax directly (see
docs/optimizers.md).
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from typing import Any, ClassVar

import jax.numpy as jnp
import numpy as np
import optax

__all__ = ["Config", "Transform", "Schedule", "ScalarOrSchedule"]

_PLAIN = (bool, int, float, str)


class Config:
    """Base of :class:`Transform` and :class:`Schedule`: a frozen dataclass of optax arguments.

    Subclasses set ``_optax`` (the optax function the config calls), ``_dtype_fields`` (fields
    holding a dtype, stored by name) and ``_mask_fields`` (mask arguments, which only accept
    ``None`` here). Field names and order are optax's, so the class is called as optax's function.
    """

    _optax: ClassVar[Callable[..., Any]]
    _dtype_fields: ClassVar[tuple[str, ...]] = ()
    _mask_fields: ClassVar[tuple[str, ...]] = ()

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):  # type: ignore[arg-type]
            value = getattr(self, f.name)
            if f.name in self._mask_fields:
                if value is not None:
                    raise TypeError(_mask_message(self, f.name, value))
                continue
            if f.name in self._dtype_fields:
                clean = None if value is None else _dtype_name(self, f.name, value)
            else:
                clean = _plain(self, f.name, value)
            if clean is not value:
                object.__setattr__(self, f.name, clean)

    def _kwargs(self) -> dict[str, Any]:
        """The keyword arguments of the optax call: nested configs built, dtypes as dtypes."""
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):  # type: ignore[arg-type]
            value = getattr(self, f.name)
            if f.name in self._dtype_fields and value is not None:
                out[f.name] = jnp.dtype(value)
            else:
                out[f.name] = _built(value)
        return out

    # Built once per object and kept in its __dict__ (the dataclass is frozen but has no slots,
    # so cached_property can write there); eq/hash only see the fields.
    @functools.cached_property
    def _built(self) -> Any:
        return self._make()

    def _make(self) -> Any:
        """Calls the optax function; configs whose call is not ``_optax(**fields)`` override it."""
        return type(self)._optax(**self._kwargs())


class Transform(Config):
    """A jaxnets.optim optimizer: a config that acts as an ``optax.GradientTransformation``."""

    def build(self) -> optax.GradientTransformation:
        """The optax transformation this config describes (built once, then reused).

        Returns:
          Exactly what the optax function of the same name returns for these arguments.
        """
        return self._built  # type: ignore[no-any-return]

    def init(self, params: Any) -> Any:
        """optax's ``init``: the initial state (optax's NamedTuples) for ``params``."""
        return self.build().init(params)

    def update(
        self, updates: Any, state: Any, params: Any = None, **extra_args: Any
    ) -> tuple[Any, Any]:
        """optax's ``update``: ``(new_updates, new_state)``; extra args go to transformations that take them."""
        tx = self.build()
        if extra_args:
            tx = optax.with_extra_args_support(tx)
        return tx.update(updates, state, params, **extra_args)  # type: ignore[no-any-return]


class Schedule(Config):
    """A jaxnets.optim schedule: a config that is called like optax's schedule, ``step -> value``."""

    def build(self) -> Callable[[Any], Any]:
        """The optax schedule function this config describes (built once, then reused)."""
        return self._built  # type: ignore[no-any-return]

    def __call__(self, count: Any) -> Any:
        """The schedule's value at step ``count`` (an int or int32 array), as optax computes it."""
        return self.build()(count)


# What optax calls ``base.ScalarOrSchedule``, restricted to what a config can store.
ScalarOrSchedule = float | Schedule


def _built(value: Any) -> Any:
    if isinstance(value, Config):
        return value.build()  # type: ignore[attr-defined]
    if type(value) is tuple:
        return tuple(_built(v) for v in value)
    return value


def _where(cfg: Config, name: str) -> str:
    return f"jaxnets.optim.{type(cfg).__name__}({name}=...)"


def _plain(cfg: Config, name: str, value: Any) -> Any:
    """``value`` as storable data (numpy scalars -> Python, lists -> tuples), or a clear error."""
    if isinstance(value, (np.integer, np.floating, np.bool_)):  # before float: np.float64 is one
        return value.item()
    if value is None or isinstance(value, (*_PLAIN, Config)):
        return value
    if isinstance(value, (list, tuple)):
        return tuple(_plain(cfg, name, v) for v in value)  # tuples keep the config hashable
    if callable(value):
        raise TypeError(
            f"{_where(cfg, name)}: {value!r:.80} is a Python callable, which cannot be stored in an optimizer config. Use a jaxnets.optim schedule (e.g. jaxnets.optim.cosine_decay_schedule(...)) or, for anything else, use optax directly: its state still saves (jaxnets.state_dict, checkpoints), only the optimizer itself is not recorded."
        )
    raise TypeError(
        f"{_where(cfg, name)}: cannot store {type(value).__name__} {value!r:.80} in an optimizer config; pass a Python number, string, bool, None, a tuple of these, or a jaxnets.optim schedule (an array hyperparameter would be baked into the config: pass float(x))."
    )


def _dtype_name(cfg: Config, name: str, value: Any) -> str:
    try:
        return jnp.dtype(value).name
    except TypeError as e:
        raise TypeError(f"{_where(cfg, name)}: {value!r:.80} is not a dtype ({e}).") from e


def _mask_message(cfg: Config, name: str, value: Any) -> str:
    return (
        f"{_where(cfg, name)}: a mask ({type(value).__name__}) cannot be stored in an optimizer "
        f"config, so jaxnets.optim accepts only {name}=None. For a masked optimizer use optax "
        f"directly (optax.{type(cfg).__name__}(..., {name}=...)): its state still saves with "
        "jaxnets.state_dict and checkpoints; only the optimizer config is not recorded."
    )
