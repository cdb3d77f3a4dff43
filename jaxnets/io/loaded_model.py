"""``LoadedModel``: what :func:`jaxnets.load` returns, with a compiled ``predict``."""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import jax

from jaxnets.io import format as fmt

__all__ = ["LoadedModel"]


@dataclass(frozen=True)
class LoadedModel:
    """What :func:`jaxnets.load` returns.

    Attributes:
      model: the model spec rebuilt from its stored config (None for a weights-only file).
      params, state: the model's parameters and buffers, in their stored structure; each leaf
        comes back as what was saved (jax arrays as jax arrays, numpy arrays as numpy arrays,
        Python scalars as Python scalars; see docs/format.md, "Leaves").
      opt_state: the optimizer state (optax's own NamedTuple types), or None.
      optimizer: the optimizer rebuilt from its stored config, or None.
      metadata: the stored metadata (decoded), or None.
      path: the file. format_version, provenance: as stored.
    """

    model: Any
    params: Any
    state: Any
    opt_state: Any = None
    optimizer: Any = None
    metadata: Any = None
    path: str = ""
    format_version: int = fmt.FORMAT_VERSION
    provenance: dict[str, Any] = field(default_factory=dict)

    def predict(self, x: Any) -> Any:
        """The model's output for ``x`` in eval mode, compiled with ``jax.jit``.

        ``loaded.predict(x)`` is ``model.apply(params, state, x, train=False)[0]`` run through
        ``jax.jit``: the first call for an input shape and dtype compiles the whole model once
        (one XLA program instead of one per operation, as an eager ``apply`` runs), later calls
        with that shape reuse it. The compiled function is kept on this object; the params and
        state are its arguments, not constants baked into it. To also skip compiling in a
        script that restarts often, turn on jax's persistent compilation cache yourself
        (docs/saving_loading.md, "Fast predictions").

        Args:
          x: the model's input, e.g. ``(batch, in_features)`` for an MLP; any pytree its
            ``apply`` takes.

        Returns:
          The model's output (``apply``'s first result), a jax array (or pytree of them).

        Raises:
          ValueError: the file was weights-only, so there is no model to run.
        """
        return self._predict(self.params, self.state, x)

    @functools.cached_property
    def _predict(self) -> Callable[[Any, Any, Any], Any]:
        # Built once per LoadedModel (a frozen dataclass without slots: cached_property writes to
        # its __dict__; eq/hash see only the fields). jax.jit keeps one compiled program per
        # input shape/dtype.
        model = self.model
        if model is None:
            raise ValueError(
                f"{self.path}: a weights-only file has no model to run; build the model and call "
                "jaxnets.load_state_dict(model, path), then model.apply."
            )

        def predict(params: Any, state: Any, x: Any) -> Any:
            return model.apply(params, state, x, train=False)[0]

        return jax.jit(predict)
