"""The layer protocol. Every jaxnets layer and model is a :class:`Module`:

* a **frozen dataclass of hyperparameters** (JSON-able data, no arrays), so an architecture can be
  stored as a config and rebuilt without its code. Subclasses of ``Module`` *are* frozen
  dataclasses: there is nothing to decorate (``@dataclass(frozen=True)`` on top still works);
* ``init(key) -> (params, state)``: fresh parameters and buffers as nested dicts whose keys,
  shapes and layouts are PyTorch's (``weight`` of a Linear is ``(out_features, in_features)``).
  Shapes come from the hyperparameters; no sample input is needed. ``state`` holds buffers
  (BatchNorm's running statistics) and is ``{}`` for stateless layers. The default ``init``
  initialises the children, so a layer without params of its own does not define it;
* ``apply(params, state, x, *, train=False, key=None) -> (y, new_state)``: pure, so it composes
  with ``jit`` (mark ``train`` static), ``grad`` and ``vmap``. Layers that need randomness in
  training (Dropout) raise a clear error when ``train=True`` and no ``key`` is given.

A layer is its fields and its ``apply``; the shortest correct one::

    @jaxnets.register(name="my.Scale")        # the name stored in files
    class Scale(nn.Module):
        factor: float = 2.0

        def apply(self, params: nn.Params, state: nn.State, x: jax.Array, *,
                  train: bool = False, key: nn.Key = None) -> nn.Output:
            return x * self.factor, state

Composite models list their children as fields; keys come out as the field names, as
``self.fc1 = nn.Linear(...)`` does in PyTorch::

    @jaxnets.register
    class MLP(nn.Module):
        fc1: nn.Linear = nn.Linear(4, 16)
        fc2: nn.Linear = nn.Linear(16, 3)

        def apply(self, params, state, x, *, train=False, key=None):
            m = self.bind(params, state, train=train, key=key)
            return m.fc2(jax.nn.relu(m.fc1(x))), m.state

``init`` of a composite initialises each child in field order; ``state_dict`` keys are
``fc1.weight``, ``fc1.bias``, ``fc2.weight``, ``fc2.bias``. A field holding a tuple of modules
(torch's ``ModuleList``) gives keys ``blocks.0.weight`` and is called as ``m.blocks[0](x)``.
:meth:`Module.named_modules` is the one walk over a model's tree (init, summary, file versions
and ``bind`` all go through ``children``/``named_children``).

A composite's own arrays (torch's ``self.cls = nn.Parameter(...)`` and ``register_buffer``) are
fields holding a :class:`Parameter` or a :class:`Buffer`: a shape, an initialiser named in text
and a dtype. The default ``init`` creates them with the children, so no ``init`` is written::

    @jaxnets.register(name="my.Tokens")
    class Tokens(nn.Module):
        dim: int = 8
        cls_token: nn.Parameter = field(init=False)      # derived from dim: set in __post_init__
        proj: nn.Linear = field(init=False)

        def __post_init__(self):
            object.__setattr__(self, "cls_token", nn.Parameter((1, 1, self.dim), init="normal(std=0.02)"))
            object.__setattr__(self, "proj", nn.Linear(self.dim, self.dim))

Keys: ``cls_token``, ``proj.weight``, ``proj.bias``: as in torch, a module's own parameters come
first, then its children's; its own buffers go to ``state``. In ``apply`` they are
``params["cls_token"]`` (buffers: ``state[...]``), or ``m.cls_token`` on a bound module. ``init``
splits its key over the module's fields in field order (children and declared arrays alike), so
a module without declared arrays initialises exactly as before.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from typing import Any, TypeAlias, dataclass_transform

import jax

from jaxnets.core.model import is_model
from jaxnets.core.registry import register
from jaxnets.core.state_dict import load_state_dict as _load_state_dict
from jaxnets.core.state_dict import state_dict as _state_dict
from jaxnets.nn import init as initializers
from jaxnets.nn.summary import summary as _summary

__all__ = ["Module", "Bound", "Parameter", "Buffer", "Params", "State", "Key", "Output", "need_key"]

Params: TypeAlias = dict[str, Any]
State: TypeAlias = dict[str, Any]
Key: TypeAlias = "jax.Array | None"
"""The ``key=`` argument of ``apply``: a PRNG key in training, else usually None."""
Output: TypeAlias = tuple[Any, State]
"""What ``apply`` returns: ``(y, new_state)``."""

Child: TypeAlias = "Module | tuple[Module, ...]"


def _make_dataclass(cls: type) -> None:
    """Turns a Module subclass into a frozen dataclass, bases first (once per class).

    Done when the class is first subclassed or instantiated (a stored config rebuilds it by
    instantiating it) rather than when it is defined, so that an explicit
    ``@dataclass(frozen=True)`` under the class statement (the 0.1 style) still runs first on the
    raw class, exactly as it always did. Until then ``dataclasses.fields(cls)`` does not work on
    the class itself (it does on any instance).
    """
    if "__dataclass_fields__" in cls.__dict__ or cls is Module:
        return
    for base in reversed(cls.__mro__[1:]):
        if issubclass(base, Module):
            _make_dataclass(base)
    dataclasses.dataclass(frozen=True)(cls)


@dataclasses.dataclass(frozen=True)
class _Declared:
    shape: tuple[int, ...]
    init: str = "zeros"
    dtype: str = "float32"

    def __post_init__(self) -> None:
        kind = type(self).__name__
        shape = (self.shape,) if isinstance(self.shape, int) else self.shape
        if not isinstance(shape, (tuple, list)) or not all(
            isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape
        ):
            raise TypeError(f"nn.{kind}: shape must be a tuple of non-negative ints, got {self.shape!r}.")
        object.__setattr__(self, "shape", tuple(shape))
        initializers.from_spec(self.init)  # a bad spec fails here, not at init time
        try:
            dtype = jax.numpy.dtype(self.dtype)
        except TypeError as e:
            raise TypeError(f"nn.{kind}: unknown dtype {self.dtype!r} ({e}).") from None
        object.__setattr__(self, "dtype", dtype.name)

    def create(self, key: jax.Array) -> jax.Array:
        """A fresh array: ``init`` drawn with ``key``, of ``shape`` and ``dtype``."""
        return initializers.from_spec(self.init)(key, self.shape, self.dtype)


@register(name="nn.Parameter")
class Parameter(_Declared):
    """A trainable array of a composite, declared as a field (torch's ``nn.Parameter``).

    Args:
      shape: its shape (an int is a 1-D shape).
      init: its initialiser as text, a name with optional number arguments:
        ``"zeros"`` (default), ``"ones"``, ``"constant(val=...)"``, ``"normal(mean=0, std=1)"``,
        ``"uniform(a=0, b=1)"``, ``"trunc_normal(mean=0, std=1, a=-2, b=2)"``,
        ``"xavier_uniform(gain=1)"``, ``"arange"`` (see ``jaxnets.nn.init.INITIALIZERS``).
      dtype: its dtype name (default ``"float32"``).

    Raises:
      TypeError: a shape that is not a tuple of non-negative ints, or an unknown dtype.
      ValueError: an initialiser spec that is not understood (the message lists the accepted ones).
    """


@register(name="nn.Buffer")
class Buffer(_Declared):
    """A non-trainable array of a composite, kept in ``state`` (torch's ``register_buffer``).

    Same arguments as :class:`Parameter`, e.g. ``nn.Buffer((1, 512), init="arange", dtype="int32")``.
    Only persistent buffers are declared: torch's ``persistent=False`` buffers are not in its
    state_dict, so compute them in ``apply`` instead (``jnp.arange(n)``).
    """


Declared: TypeAlias = "Parameter | Buffer"


@dataclass_transform(frozen_default=True, field_specifiers=(dataclasses.field,))
class Module:
    """Base class of every layer and model (see the module docstring for the contract).

    Subclasses are frozen dataclasses of their fields and override ``apply``; leaf layers with
    params or buffers also override ``init``. Register a subclass with ``@jaxnets.register`` to
    save it in files.
    """

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        for base in cls.__mro__[1:]:  # a subclass inherits its bases' fields: make them first
            if issubclass(base, Module):
                _make_dataclass(base)

    def __new__(cls, *args: Any, **kwargs: Any) -> Any:
        _make_dataclass(cls)
        return super().__new__(cls)

    # --- the protocol -------------------------------------------------------------------------
    def init(self, key: jax.Array) -> tuple[Params, State]:
        """Fresh ``(params, state)``; the default creates the declared arrays and initialises the
        children, splitting ``key`` over them in field order.

        Args:
          key: a PRNG key (``jax.random.key(0)`` or ``jax.random.PRNGKey(0)``).
        """
        own = self.declared()
        entries: list[tuple[str, Child | Declared]] = list(self.children().items())
        if own:  # children and declared arrays in field order (a custom children() goes last)
            order = {f.name: i for i, f in enumerate(dataclasses.fields(self))}  # type: ignore[arg-type]
            entries = sorted([*own.items(), *entries], key=lambda e: order.get(e[0], len(order)))
        own_params: Params = {}
        own_state: State = {}
        params: Params = {}
        state: State = {}
        keys = initializers.split(key, max(len(entries), 1))
        for (name, entry), k in zip(entries, keys):
            if isinstance(entry, Parameter):
                own_params[name] = entry.create(k)
            elif isinstance(entry, Buffer):
                own_state[name] = entry.create(k)
            elif isinstance(entry, tuple):
                sub = initializers.split(k, max(len(entry), 1))
                pairs = [c.init(sk) for c, sk in zip(entry, sub)]
                params[name] = {str(i): p for i, (p, _) in enumerate(pairs)}
                state[name] = {str(i): s for i, (_, s) in enumerate(pairs)}
            else:
                params[name], state[name] = entry.init(k)
        # torch's order: a module's own parameters (then buffers) before its children's.
        return {**own_params, **params}, {**own_state, **state}

    def apply(
        self, params: Params, state: State, x: Any, *, train: bool = False, key: Key = None
    ) -> Output:
        """Runs the layer: ``(y, new_state)``. Subclasses override this."""
        raise NotImplementedError(
            f"{type(self).__name__} must define apply(params, state, x, *, train, key)."
        )

    # --- the one walk over the tree --------------------------------------------------------------
    def children(self) -> dict[str, Child]:
        """Child modules by field name, in field order: fields holding a model or a tuple of them.

        Raises:
          TypeError: a field holds a list or dict of modules (their params would be lost): use a
            tuple (ModuleList-style) or one field per child.
        """
        out: dict[str, Child] = {}
        for f in dataclasses.fields(self):  # type: ignore[arg-type]
            value = getattr(self, f.name)
            if is_model(value):
                out[f.name] = value
            elif isinstance(value, tuple) and value and all(is_model(v) for v in value):
                out[f.name] = value
            elif isinstance(value, (list, dict)) and any(
                is_model(v) for v in (value.values() if isinstance(value, dict) else value)
            ):
                raise TypeError(
                    f"{type(self).__name__}.{f.name} holds a {type(value).__name__} of modules, "
                    "which jaxnets cannot see as children (they would get no params). Use a "
                    f"tuple of modules ({f.name}: tuple[nn.Module, ...] = (...)) or one field "
                    "per child."
                )
        return out

    def declared(self) -> dict[str, Declared]:
        """This module's own :class:`Parameter` and :class:`Buffer` fields by name, in field order.

        Raises:
          TypeError: a field holds a tuple, list or dict of them (declare one field per array).
        """
        out: dict[str, Declared] = {}
        for f in dataclasses.fields(self):  # type: ignore[arg-type]
            value = getattr(self, f.name)
            if isinstance(value, (Parameter, Buffer)):
                out[f.name] = value
            elif isinstance(value, (tuple, list, dict)) and any(
                isinstance(v, (Parameter, Buffer))
                for v in (value.values() if isinstance(value, dict) else value)
            ):
                raise TypeError(
                    f"{type(self).__name__}.{f.name} holds a {type(value).__name__} of "
                    "nn.Parameter/nn.Buffer, which jaxnets does not create: declare one field "
                    "per array."
                )
        return out

    def named_children(self) -> Iterator[tuple[str, Module]]:
        """``(name, module)`` of each direct child; tuple fields give ``"blocks.0"``, ``"blocks.1"``."""
        for name, child in self.children().items():
            if isinstance(child, tuple):
                for i, c in enumerate(child):
                    yield f"{name}.{i}", c
            else:
                yield name, child

    def named_modules(self, prefix: str = "") -> Iterator[tuple[str, Module]]:
        """This module under ``prefix`` and every descendant under its dotted path, depth first.

        As ``torch.nn.Module.named_modules``: ``("", model), ("features", ...),
        ("features.0", ...)``; the paths are the state_dict key prefixes of their params.
        """
        yield prefix, self
        for name, child in self.named_children():
            yield from child.named_modules(f"{prefix}.{name}" if prefix else name)

    def bind(self, params: Params, state: State, *, train: bool = False, key: Key = None) -> Bound:
        """Children as callables that thread state and keys: ``m = self.bind(...); y = m.fc1(x)``.

        ``m.state`` is the new state after the calls. Each child gets ``fold_in(key, i)`` for its
        position ``i``; pass ``key=`` to a call to override it (e.g. when a child is called twice).
        """
        return Bound(self, params, state, train, key)

    # --- PyTorch vocabulary ----------------------------------------------------------------------
    def state_dict(self, params: Params, state: State | None = None) -> dict[str, Any]:
        """``jaxnets.state_dict(params, state, model=self)``: keys in PyTorch's order."""
        return _state_dict(params, state, model=self)

    def load_state_dict(
        self, source: Any, *, strict: bool = True, **kwargs: Any
    ) -> tuple[Params, State]:
        """``jaxnets.load_state_dict(self, source, ...)`` -> ``(params, state)``.

        ``source`` is a state_dict or the path of a file (see :func:`jaxnets.load_state_dict`).
        """
        return _load_state_dict(self, source, strict=strict, **kwargs)  # type: ignore[no-any-return]

    def summary(self, input_shape: tuple[int, ...], *, dtype: Any = "float32") -> str:
        """``jaxnets.summary(self, input_shape, dtype=dtype)``: a table of layers, shapes and sizes."""
        return _summary(self, input_shape, dtype=dtype)


class _Call:
    """One child of a :class:`Bound` module, callable as the child's ``apply`` minus the plumbing."""

    def __init__(self, bound: Bound, path: tuple[str, ...], module: Module, index: tuple[int, ...]):
        self._bound, self._path, self._module, self._index = bound, path, module, index

    def __call__(self, *args: Any, key: Key = None, **kwargs: Any) -> Any:
        b = self._bound
        params, state = b._params, b._new_state
        for p in self._path[:-1]:
            params, state = params[p], state[p]
        name = self._path[-1]
        if key is None and b._key is not None:
            key = b._key
            for i in self._index:
                key = jax.random.fold_in(key, i)
        y, new = self._module.apply(
            params[name], state[name], *args, train=b._train, key=key, **kwargs
        )
        b._set_state(self._path, new)
        return y

    def __getitem__(self, name: str | int) -> _Call:
        """A child of this child, e.g. ``m.heads["cls"](x)`` for a ModuleDict or named Sequential."""
        kids = self._module.children()
        key = str(name)
        if key not in kids or isinstance(kids[key], tuple):
            raise KeyError(f"{type(self._module).__name__} at {'.'.join(self._path)!r} has no child "
                           f"module {key!r}; it has {list(kids)}")  # fmt: skip
        return _Call(self._bound, (*self._path, key), kids[key], (*self._index, list(kids).index(key)))  # type: ignore[arg-type]


class Bound:
    """A module bound to its params and state for one ``apply``; see :meth:`Module.bind`.

    ``m.fc1`` calls a child; ``m.cls_token`` reads a declared :class:`Parameter` (from params) or
    :class:`Buffer` (from the state so far).
    """

    def __init__(self, module: Module, params: Params, state: State, train: bool, key: Key):
        self._module, self._params, self._train, self._key = module, params, train, key
        self._new_state: State = {
            k: (dict(v) if isinstance(v, dict) else v) for k, v in state.items()
        }
        self._children = module.children()
        self._declared = module.declared()
        self._index = {name: i for i, name in enumerate(self._children)}

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        declared = self._declared.get(name)
        if declared is not None:  # an own array: the param, or the buffer's current value
            return (self._params if isinstance(declared, Parameter) else self._new_state)[name]
        child = self._children.get(name)
        if child is None:
            raise AttributeError(
                f"{type(self._module).__name__} has no child module {name!r} (nor a declared "
                "nn.Parameter or nn.Buffer of that name)"
            )
        i = self._index[name]
        if isinstance(child, tuple):
            return [_Call(self, (name, str(j)), c, (i, j)) for j, c in enumerate(child)]
        return _Call(self, (name,), child, (i,))

    def _set_state(self, path: tuple[str, ...], new: State) -> None:
        node = self._new_state
        for p in path[:-1]:  # copy each level: the caller's state dicts are never written to
            node[p] = dict(node[p])
            node = node[p]
        node[path[-1]] = new

    @property
    def state(self) -> State:
        """The state after the calls made so far (unchanged entries for children not called)."""
        return self._new_state

    def __iter__(self) -> Iterator[str]:
        return iter(self._index)


def need_key(layer: Module, key: Key) -> jax.Array:
    """Returns ``key``, or raises the error every random layer gives in training without one."""
    if key is None:
        raise ValueError(
            f"{type(layer).__name__} needs a PRNG key when train=True: call "
            "apply(params, state, x, train=True, key=jax.random.key(seed)), and pass a fresh key "
            "each step (jax.random.split)."
        )
    return key
