"""The layer protocol. Every jaxnets layer and model is a :class:`Module`:

* a **frozen dataclass of hyperparameters** (JSON-able data, no arrays), so an architecture can be
  stored as a config and rebuilt without its code;
* ``init(key) -> (params, state)``: fresh parameters and buffers as nested dicts whose keys,
  shapes and layouts are PyTorch's (``weight`` of a Linear is ``(out_features, in_features)``).
  Shapes come from the hyperparameters; no sample input is needed. ``state`` holds buffers
  (BatchNorm's running statistics) and is ``{}`` for stateless layers;
* ``apply(params, state, x, *, train=False, key=None) -> (y, new_state)``: pure, so it composes
  with ``jit`` (mark ``train`` static), ``grad`` and ``vmap``. Layers that need randomness in
  training (Dropout) raise a clear error when ``train=True`` and no ``key`` is given.

Composite models list their children as dataclass fields; keys come out as the field names, as
``self.fc1 = nn.Linear(...)`` does in PyTorch::

    @jaxnets.register
    @dataclass(frozen=True)
    class MLP(nn.Module):
        fc1: nn.Linear = nn.Linear(4, 16)
        fc2: nn.Linear = nn.Linear(16, 3)

        def apply(self, params, state, x, *, train=False, key=None):
            m = self.bind(params, state, train=train, key=key)
            return m.fc2(jax.nn.relu(m.fc1(x))), m.state

``init`` of a composite initialises each child in field order; ``state_dict`` keys are
``fc1.weight``, ``fc1.bias``, ``fc2.weight``, ``fc2.bias``. A field holding a tuple of modules
(torch's ``ModuleList``) gives keys ``blocks.0.weight`` and is called as ``m.blocks[0](x)``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from typing import Any

import jax

from jaxnets.errors import JaxnetsError

__all__ = ["Module", "Bound", "Params", "State", "need_key"]

Params = dict[str, Any]
State = dict[str, Any]


class Module:
    """Base class of every layer and model (see the module docstring for the contract).

    Subclasses are ``@dataclasses.dataclass(frozen=True)`` and override ``apply``; leaf layers
    also override ``init``. Register a subclass with ``@jaxnets.register`` to save it in files.
    """

    # --- the protocol -------------------------------------------------------------------------
    def init(self, key: jax.Array) -> tuple[Params, State]:
        """Fresh ``(params, state)``; the default initialises each child (in field order).

        Args:
          key: a PRNG key (``jax.random.key(0)`` or ``jax.random.PRNGKey(0)``).
        """
        params: Params = {}
        state: State = {}
        kids = list(self.children().items())
        keys = jax.random.split(key, max(len(kids), 1))
        for (name, child), k in zip(kids, keys):
            if isinstance(child, tuple):
                sub = jax.random.split(k, max(len(child), 1))
                pairs = [c.init(sk) for c, sk in zip(child, sub)]
                params[name] = {str(i): p for i, (p, _) in enumerate(pairs)}
                state[name] = {str(i): s for i, (_, s) in enumerate(pairs)}
            else:
                params[name], state[name] = child.init(k)
        return params, state

    def apply(
        self, params: Params, state: State, x: Any, *, train: bool = False, key: jax.Array | None = None
    ) -> tuple[Any, State]:
        """Runs the layer: ``(y, new_state)``. Subclasses override this."""
        raise NotImplementedError(f"{type(self).__name__} must define apply(params, state, x, *, train, key).")

    # --- composition ---------------------------------------------------------------------------
    def children(self) -> dict[str, Module | tuple[Module, ...]]:
        """Child modules by name, in field order: fields holding a Module or a tuple of Modules."""
        out: dict[str, Module | tuple[Module, ...]] = {}
        for f in dataclasses.fields(self):  # type: ignore[arg-type]
            value = getattr(self, f.name)
            if isinstance(value, Module):
                out[f.name] = value
            elif isinstance(value, tuple) and value and all(isinstance(v, Module) for v in value):
                out[f.name] = value
        return out

    def bind(
        self, params: Params, state: State, *, train: bool = False, key: jax.Array | None = None
    ) -> Bound:
        """Children as callables that thread state and keys: ``m = self.bind(...); y = m.fc1(x)``.

        ``m.state`` is the new state after the calls. Each child gets ``fold_in(key, i)`` for its
        position ``i``; pass ``key=`` to a call to override it (e.g. when a child is called twice).
        """
        return Bound(self, params, state, train, key)

    # --- PyTorch vocabulary ----------------------------------------------------------------------
    def state_dict(self, params: Params, state: State | None = None) -> dict[str, Any]:
        """``jaxnets.state_dict(params, state, model=self)``: keys in PyTorch's order."""
        from jaxnets.core.state_dict import state_dict

        return state_dict(params, state, model=self)

    def load_state_dict(self, source: Any, *, strict: bool = True, **kwargs: Any) -> tuple[Params, State]:
        """``jaxnets.load_state_dict(self, source, ...)`` -> ``(params, state)``."""
        from jaxnets.core.state_dict import load_state_dict

        return load_state_dict(self, source, strict=strict, **kwargs)

    def summary(self, input_shape: tuple[int, ...], *, dtype: Any = "float32") -> str:
        """``jaxnets.summary(self, input_shape, dtype=dtype)``: a table of layers, shapes and sizes."""
        from jaxnets.nn.summary import summary

        return summary(self, input_shape, dtype=dtype)


class _Call:
    """One child of a :class:`Bound` module, callable as the child's ``apply`` minus the plumbing."""

    def __init__(self, bound: Bound, path: tuple[str, ...], module: Module, index: tuple[int, ...]):
        self._bound, self._path, self._module, self._index = bound, path, module, index

    def __call__(self, *args: Any, key: jax.Array | None = None, **kwargs: Any) -> Any:
        b = self._bound
        params, state = b._params, b._new_state
        for p in self._path[:-1]:
            params, state = params[p], state[p]
        name = self._path[-1]
        if key is None and b._key is not None:
            key = b._key
            for i in self._index:
                key = jax.random.fold_in(key, i)
        y, new = self._module.apply(params[name], state[name], *args, train=b._train, key=key, **kwargs)
        b._set_state(self._path, new)
        return y


class Bound:
    """A module bound to its params and state for one ``apply``; see :meth:`Module.bind`."""

    def __init__(self, module: Module, params: Params, state: State, train: bool, key: jax.Array | None):
        self._module, self._params, self._train, self._key = module, params, train, key
        self._new_state: State = {k: (dict(v) if isinstance(v, dict) else v) for k, v in state.items()}
        self._index = {name: i for i, name in enumerate(module.children())}

    def __getattr__(self, name: str) -> Any:
        child = self._module.children().get(name)
        if child is None:
            raise AttributeError(f"{type(self._module).__name__} has no child module {name!r}")
        i = self._index[name]
        if isinstance(child, tuple):
            return [_Call(self, (name, str(j)), c, (i, j)) for j, c in enumerate(child)]
        return _Call(self, (name,), child, (i,))

    def _set_state(self, path: tuple[str, ...], new: State) -> None:
        node = self._new_state
        for p in path[:-1]:
            node = node[p]
        node[path[-1]] = new

    @property
    def state(self) -> State:
        """The state after the calls made so far (unchanged entries for children not called)."""
        return self._new_state

    def __iter__(self) -> Iterator[str]:
        return iter(self._index)


def need_key(layer: Module, key: jax.Array | None) -> jax.Array:
    """Returns ``key``, or raises the error every random layer gives in training without one."""
    if key is None:
        raise JaxnetsError(
            f"{type(layer).__name__} needs a PRNG key when train=True: call "
            "apply(params, state, x, train=True, key=jax.random.key(seed)), and pass a fresh key "
            "each step (jax.random.split)."
        )
    return key
