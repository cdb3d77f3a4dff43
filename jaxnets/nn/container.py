"""Containers with torch.nn's keys: Sequential (numbered or named children) and ModuleDict.

torch's ``ModuleList`` is a tuple field of a composite (``blocks: tuple[nn.Module, ...]``), which
gives the same ``blocks.0.weight`` keys (see :mod:`.module`).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import jax

from jaxnets.core.registry import register
from jaxnets.nn.module import Key, Module, Output, Params, State

__all__ = ["Sequential", "ModuleDict"]


def _named(owner: str, modules: Mapping[Any, Any]) -> tuple[tuple[str, ...], tuple[Module, ...]]:
    """Checked ``(names, modules)`` from a mapping, with torch's rules for child names."""
    names, mods = [], []
    for name, module in modules.items():
        if not isinstance(name, str) or not name or "." in name:
            raise ValueError(
                f"{owner}: child names must be non-empty strs without '.', got {name!r} (a '.' "
                "would make the state_dict key ambiguous, as PyTorch's add_module says)."
            )
        if not isinstance(module, Module):
            raise TypeError(f"{owner}: {name!r} is {type(module).__name__}, not a jaxnets.nn.Module")
        names.append(name)
        mods.append(module)
    return tuple(names), tuple(mods)


@register(name="nn.Sequential")
class Sequential(Module):
    """Children applied in order, as ``torch.nn.Sequential``: ``y = l1(l0(x))``.

    ``Sequential(l0, l1, ...)`` names the children ``"0"``, ``"1"``, ...;
    ``Sequential(OrderedDict([("conv", l0), ("relu", l1)]))`` (or any mapping, in its order)
    names them by the keys. Params are ``{name: child_params}``, so the keys are PyTorch's:
    ``Sequential(Linear(4, 8), ReLU(), Linear(8, 2))`` has ``0.weight``, ``0.bias``,
    ``2.weight``, ``2.bias``; the named one has ``conv.weight``. Children are reachable as
    ``seq[0]``, ``seq[1:]`` (a Sequential keeping the names) and, when named, ``seq.conv``.
    In training each child gets ``fold_in(key, i)`` for its position ``i``.

    Raises:
      TypeError: an argument is not a Module.
      ValueError: a name is empty, not a str, or contains ``"."``.
    """

    layers: tuple[Module, ...]
    names: tuple[str, ...] | None = None  # None: "0", "1", ... (0.1 files store no names)

    def __init__(self, *layers: Module | Mapping[str, Module]):
        names: tuple[str, ...] | None = None
        if len(layers) == 1 and isinstance(layers[0], Mapping):
            names, mods = _named("Sequential", layers[0])
            if names == tuple(str(i) for i in range(len(mods))):
                names = None  # the same model as Sequential(*mods): equal specs, equal configs
        else:
            for i, layer in enumerate(layers):
                if not isinstance(layer, Module):
                    raise TypeError(
                        f"Sequential: argument {i} is {type(layer).__name__}, not a "
                        "jaxnets.nn.Module (name children with one OrderedDict argument)."
                    )
            mods = tuple(layers)  # type: ignore[arg-type]
        object.__setattr__(self, "layers", mods)
        object.__setattr__(self, "names", names)

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> Sequential:
        layers, names = tuple(config["layers"]), config.get("names")  # 0.1 files have no names
        if names is None:
            return cls(*layers)
        if len(names) != len(layers):
            raise ValueError(f"Sequential: {len(names)} names for {len(layers)} layers in the config.")
        return cls(dict(zip(names, layers)))

    def get_config(self) -> dict[str, Any]:
        if self.names is None:
            return {"layers": self.layers}
        return {"layers": self.layers, "names": self.names}

    def _keys(self) -> tuple[str, ...]:
        return self.names if self.names is not None else tuple(map(str, range(len(self.layers))))

    def __getitem__(self, i: int | slice) -> Any:
        if isinstance(i, slice):
            return Sequential(dict(zip(self._keys()[i], self.layers[i])))
        return self.layers[i]

    def __getattr__(self, name: str) -> Module:
        names = self.__dict__.get("names")
        if names is not None and name in names:
            return self.__dict__["layers"][names.index(name)]  # type: ignore[no-any-return]
        raise AttributeError(f"Sequential has no attribute or child named {name!r}")

    def __len__(self) -> int:
        return len(self.layers)

    def __iter__(self) -> Iterator[Module]:
        return iter(self.layers)

    def children(self) -> dict[str, Module | tuple[Module, ...]]:
        return dict(zip(self._keys(), self.layers))

    def apply(
        self, params: Params, state: State, x: Any, *, train: bool = False, key: Key = None
    ) -> Output:
        new_state: State = {}
        for i, (name, layer) in enumerate(zip(self._keys(), self.layers)):
            k = None if key is None else jax.random.fold_in(key, i)
            x, new_state[name] = layer.apply(params[name], state[name], x, train=train, key=k)
        return x, new_state


@register(name="nn.ModuleDict")
class ModuleDict(Module):
    """Modules by name, in insertion order, as ``torch.nn.ModuleDict``: keys ``<name>.weight``.

    A container, not a layer (it has no ``apply``, as torch's has no ``forward``): a composite
    calls one of its modules through ``bind``, ``m = self.bind(...); y = m.heads["cls"](x)``
    (state and keys threaded as for any child). Supports ``md[name]``, ``in``, ``len``, iteration over the names,
    ``keys()``, ``values()``, ``items()``. Stored in files as a config like any layer.

    Raises:
      TypeError: a value is not a Module.
      ValueError: a name is empty, not a str, or contains ``"."``.
    """

    names: tuple[str, ...]
    modules: tuple[Module, ...]

    def __init__(self, modules: Mapping[str, Module] | None = None):
        names, mods = _named("ModuleDict", modules or {})
        object.__setattr__(self, "names", names)
        object.__setattr__(self, "modules", mods)

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> ModuleDict:
        return cls(config["modules"])

    def get_config(self) -> dict[str, Any]:
        return {"modules": dict(self.items())}

    def __getitem__(self, name: str) -> Module:
        if name not in self.names:
            raise KeyError(f"ModuleDict has no module {name!r}; it has {list(self.names)}")
        return self.modules[self.names.index(name)]

    def __contains__(self, name: object) -> bool:
        return name in self.names

    def __len__(self) -> int:
        return len(self.names)

    def __iter__(self) -> Iterator[str]:
        return iter(self.names)

    def keys(self) -> tuple[str, ...]:
        return self.names

    def values(self) -> tuple[Module, ...]:
        return self.modules

    def items(self) -> list[tuple[str, Module]]:
        return list(zip(self.names, self.modules))

    def children(self) -> dict[str, Module | tuple[Module, ...]]:
        return dict(self.items())

    def apply(
        self, params: Params, state: State, x: Any, *, train: bool = False, key: Key = None
    ) -> Output:
        raise TypeError(
            "ModuleDict is a container, not a layer (as torch's, it has no forward): apply one of "
            f"its modules ({', '.join(map(repr, self.names))}) from the composite's apply: "
            "m = self.bind(params, state, train=train, key=key); y = m.heads[name](x)."
        )
