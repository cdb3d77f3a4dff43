"""The one registry: class names in files <-> Python classes, and configs <-> objects.

Files and checkpoints never store code. They store a registered *name* plus a JSON-able
*config*; loading looks the name up here and calls the class with the config. Nothing is
imported, unpickled or evaluated: a name that is not registered is an error that says how to
register it.

What can be registered (with ``@jaxnets.register``):

* frozen dataclasses (every ``jaxnets.nn`` layer; user layers and models): config = init fields;
* ``NamedTuple`` types (e.g. a custom optimizer state): config = fields;
* any class with ``get_config(self) -> dict`` and ``from_config(cls, config) -> obj``.

optax's own state ``NamedTuple`` types need no registration: they are found by name among the
optax modules already imported (never by importing a module named in a file).

A registered class may declare ``version`` and ``upgrade`` (see :func:`register`) so that files
written by older versions of it are migrated on load.
"""

from __future__ import annotations

import dataclasses
import math
import sys
import warnings
from collections.abc import Callable
from typing import Any, NamedTuple, TypeVar

import numpy as np

from jaxnets.errors import FileFormatError, RegistryError

__all__ = [
    "register",
    "registered_name",
    "lookup",
    "registry_entry",
    "RegistryEntry",
    "to_config",
    "from_config",
]

T = TypeVar("T", bound=type)

# A state_dict migration: (flat state_dict written at `from_version`, from_version) -> current one.
Upgrade = Callable[[dict[str, Any], int], dict[str, Any]]


class RegistryEntry(NamedTuple):
    """What the registry knows about one class."""

    name: str
    cls: type
    version: int
    upgrade: Upgrade | None


_BY_NAME: dict[str, RegistryEntry] = {}
_BY_CLASS: dict[type, RegistryEntry] = {}
_MAX_DEPTH = 64
_OPTAX_PREFIX = "optax."


def register(
    cls: T | None = None,
    *,
    name: str | None = None,
    version: int = 1,
    upgrade: Upgrade | None = None,
) -> Any:
    """Makes a class saveable by name. Use as ``@register`` or ``@register(name=...)``.

    Args:
      cls: the class (a frozen dataclass, a NamedTuple, or a class with
        ``get_config``/``from_config``).
      name: the name stored in files; defaults to the class's ``__qualname__``. Keep it stable:
        renaming it makes old files unloadable (register the old name too, to keep them).
      version: the version of the class's state_dict layout, stored in files (default 1).
      upgrade: ``upgrade(state_dict, from_version) -> state_dict`` migrates the flat state_dict
        (keys relative to this layer) written by an older ``version``; see docs/custom_layers.md.

    Returns:
      The class itself, unchanged.

    Raises:
      RegistryError: the name is taken by a different class, or the class cannot be described
        by a config.
    """

    def wrap(c: T) -> T:
        if not isinstance(c, type):
            raise RegistryError(f"register() takes a class, got {c!r}.")
        if not (_is_dataclass_type(c) or _is_namedtuple_type(c) or _has_config_methods(c)):
            raise RegistryError(
                f"Cannot register {c.__qualname__}: jaxnets stores objects as configs, so the "
                "class must be a dataclass, a NamedTuple, or define get_config(self) and "
                "classmethod from_config(cls, config)."
            )
        entry_name = name or c.__qualname__
        old = _BY_NAME.get(entry_name)
        if old is not None and old.cls is not c and not _same_definition(old.cls, c):
            raise RegistryError(
                f"The name {entry_name!r} is already registered for "
                f"{old.cls.__module__}.{old.cls.__qualname__}; register "
                f"{c.__module__}.{c.__qualname__} under another name: @register(name='...')."
            )
        entry = RegistryEntry(entry_name, c, int(version), upgrade)
        _BY_NAME[entry_name] = entry
        _BY_CLASS[c] = entry
        return c

    return wrap if cls is None else wrap(cls)


def _same_definition(a: type, b: type) -> bool:
    # Re-running a notebook cell defines a new class object with the same module and name.
    return (a.__module__, a.__qualname__) == (b.__module__, b.__qualname__)


def _is_dataclass_type(c: type) -> bool:
    # A class whose base is marked with PEP 681's dataclass_transform (every jaxnets.nn.Module
    # subclass) is a dataclass by contract, even before its fields have been processed.
    return dataclasses.is_dataclass(c) or hasattr(c, "__dataclass_transform__")


def _is_namedtuple_type(c: type) -> bool:
    return issubclass(c, tuple) and hasattr(c, "_fields")


def _has_config_methods(c: type) -> bool:
    return callable(getattr(c, "get_config", None)) and callable(getattr(c, "from_config", None))


def _optax_types() -> dict[str, type]:
    """optax state NamedTuples by name, from optax modules that are already imported."""
    found: dict[str, type] = {}
    for mod_name, mod in list(sys.modules.items()):
        if mod is None or not (mod_name == "optax" or mod_name.startswith("optax.")):
            continue
        for value in list(vars(mod).values()):
            if isinstance(value, type) and _is_namedtuple_type(value):
                if value.__module__.startswith("optax"):
                    # Prefer the type optax exports publicly when two share a name.
                    found.setdefault(value.__name__, value)
    optax = sys.modules.get("optax")
    if optax is not None:
        for n, value in vars(optax).items():
            if isinstance(value, type) and _is_namedtuple_type(value):
                found[n] = value
    return found


def registry_entry(cls: type) -> RegistryEntry:
    """The registry entry of ``cls``.

    Raises:
      RegistryError: ``cls`` is not registered (the message says how to register it).
    """
    entry = _BY_CLASS.get(cls)
    if entry is not None:
        return entry
    if cls.__module__.startswith("optax") and _is_namedtuple_type(cls):
        if _optax_types().get(cls.__name__) is cls:
            return RegistryEntry(_OPTAX_PREFIX + cls.__name__, cls, 1, None)
    raise RegistryError(
        f"{cls.__module__}.{cls.__qualname__} is not registered with jaxnets, so it cannot be "
        f"stored by name. Decorate the class with @jaxnets.register (or call "
        f"jaxnets.register({cls.__qualname__})) before saving and before loading."
    )


def registered_name(cls: type) -> str:
    """The name under which ``cls`` is stored in files. Raises RegistryError if unregistered."""
    return registry_entry(cls).name


def lookup(name: str, *, file: str | None = None) -> RegistryEntry:
    """The registry entry stored under ``name``.

    Raises:
      RegistryError: nothing is registered under ``name``; the message names the class and
        says how to register it. No module is ever imported to find it.
    """
    entry = _BY_NAME.get(name)
    if entry is not None:
        return entry
    if name.startswith(_OPTAX_PREFIX):
        import optax  # noqa: F401  (a declared dependency, not a module named by the file)

        cls = _optax_types().get(name[len(_OPTAX_PREFIX) :])
        if cls is not None:
            return RegistryEntry(name, cls, 1, None)
    where = f"{file}: " if file else ""
    raise RegistryError(
        f"{where}the class {name!r} is not registered. jaxnets never imports code named in a "
        f"file: import the module that defines {name!r} and decorate the class with "
        f"@jaxnets.register (or @jaxnets.register(name={name!r})), then load again.",
        file=file,
    )


# --- configs -----------------------------------------------------------------------------------
# A config is JSON-able: None, bool, int, float, str, lists and str-keyed dicts, plus three tagged
# dicts: {"__tuple__": [...]}, {"__class__": name, "config": {...}} and
# {"__array__": [...], "dtype": str, "shape": [...]} for small numpy arrays (e.g. a mean/std).
_TAGS = ("__tuple__", "__class__", "__array__")


def to_config(obj: Any, *, path: str = "") -> Any:
    """Encodes ``obj`` as a JSON-able config (see the module docstring).

    Raises:
      RegistryError: something in ``obj`` is neither plain data nor registered; the message gives
        its path inside ``obj``.
    """
    if isinstance(obj, (int, np.integer)) and not isinstance(obj, (bool, np.bool_)):
        if not -(1 << 63) <= int(obj) < (1 << 64):
            raise RegistryError(
                f"{_at(path)}: the int {int(obj)} does not fit in 64 bits; store it as a str.",
                path=path,
            )
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    if isinstance(obj, (np.integer, np.floating, np.bool_)):
        return obj.item()
    if isinstance(obj, list):
        return [to_config(v, path=f"{path}[{i}]") for i, v in enumerate(obj)]
    if type(obj) is tuple:
        return {"__tuple__": [to_config(v, path=f"{path}[{i}]") for i, v in enumerate(obj)]}
    if type(obj) is dict:
        out = {}
        for k, v in obj.items():
            if not isinstance(k, str) or k in _TAGS:
                raise RegistryError(
                    f"{_at(path)}: dict key {k!r} cannot be stored; use str keys other than "
                    f"{', '.join(_TAGS)}.",
                    path=path,
                )
            out[k] = to_config(v, path=f"{path}.{k}")
        return out
    if isinstance(obj, np.ndarray):
        if obj.dtype.kind not in "biuf":
            raise RegistryError(
                f"{_at(path)}: cannot store a {obj.dtype.name} array in a config; config "
                "arrays hold bool, int or float values (store other arrays as tensors).",
                path=path,
            )
        return {"__array__": obj.ravel().tolist(), "dtype": obj.dtype.name, "shape": list(obj.shape)}
    cls = type(obj)
    if _is_namedtuple_type(cls) or _is_dataclass_type(cls) or _has_config_methods(cls):
        name = registered_name(cls)
        return {"__class__": name, "config": to_config(_fields_of(obj), path=path)}
    raise RegistryError(
        f"{_at(path)}: cannot store {cls.__module__}.{cls.__qualname__} ({obj!r:.80}). "
        "Hyperparameters must be plain data (numbers, strings, tuples, lists, dicts) or "
        "registered classes (@jaxnets.register).",
        path=path,
    )


def _at(path: str) -> str:
    """Where in a config: ``metadata.mean``, or ``config[0]`` for a path below an unnamed root."""
    return path if path and not path.startswith((".", "[")) else f"config{path}"


def _fields_of(obj: Any) -> dict[str, Any]:
    cls = type(obj)
    if _has_config_methods(cls):
        cfg = obj.get_config()
        if not isinstance(cfg, dict):
            raise RegistryError(f"{cls.__qualname__}.get_config() must return a dict, got {cfg!r}.")
        return dict(cfg)
    if _is_namedtuple_type(cls):
        return dict(zip(cls._fields, obj))
    return {f.name: getattr(obj, f.name) for f in dataclasses.fields(obj) if f.init}


def from_config(config: Any, *, file: str | None = None, path: str = "") -> Any:
    """Rebuilds the object a config describes (the inverse of :func:`to_config`).

    Configs usually come from files, so anything malformed in one is reported, never raised raw:
    tagged dicts must have exactly their keys, arrays exactly their dtype's values and shape.
    Errors name the file and the path inside the config (``metadata.mean``), starting at ``path``.

    Raises:
      RegistryError: a class name is not registered, or its config does not fit the class.
      FileFormatError: the config is malformed or nested absurdly deep.
    """
    try:
        return _from_config(config, file, (path,) if path else ())
    except (TypeError, ValueError, KeyError, AttributeError, RecursionError, OverflowError) as e:
        raise FileFormatError(
            f"{_where(file)}malformed config ({type(e).__name__}: {e}).", file=file
        ) from e


def _where(file: str | None, path: tuple[Any, ...] = ()) -> str:
    at = f"at {'.'.join(map(str, path))}: " if path else ""
    return (f"{file}: " if file else "config: ") + at


_TAG_KEYS = {
    "__tuple__": {"__tuple__"},
    "__class__": {"__class__", "config"},
    "__array__": {"__array__", "dtype", "shape"},
}


def _from_config(config: Any, file: str | None, path: tuple[Any, ...]) -> Any:
    if len(path) > _MAX_DEPTH:
        raise FileFormatError(f"{_where(file)}config nested deeper than {_MAX_DEPTH} levels.", file=file)
    if config is None or isinstance(config, (bool, int, float, str)):
        return config
    if isinstance(config, list):
        return [_from_config(v, file, (*path, i)) for i, v in enumerate(config)]
    if not isinstance(config, dict):
        raise FileFormatError(f"{_where(file, path)}unexpected value {config!r:.80} in a config.", file=file)
    tags = [t for t in _TAGS if t in config]
    if tags and (len(tags) > 1 or not set(config) <= _TAG_KEYS[tags[0]]):
        raise FileFormatError(
            f"{_where(file, path)}malformed config: a tagged dict with keys {sorted(map(str, config))[:6]}.",
            file=file,
        )
    if "__tuple__" in config:
        items = config["__tuple__"]
        if not isinstance(items, list):
            raise FileFormatError(f"{_where(file, path)}malformed config: a __tuple__ that is not a list.", file=file)
        return tuple(_from_config(v, file, (*path, i)) for i, v in enumerate(items))
    if "__array__" in config:
        return _array(config, file, path)
    if "__class__" in config:
        entry = lookup(str(config["__class__"]), file=file)
        fields = _from_config(config.get("config", {}), file, path)
        if not isinstance(fields, dict):
            raise FileFormatError(f"{_where(file, path)}config of {entry.name} is not a dict.", file=file)
        return _construct(entry, fields, file)
    return {k: _from_config(v, file, (*path, k)) for k, v in config.items()}


def _array(config: dict[str, Any], file: str | None, path: tuple[Any, ...]) -> np.ndarray:
    """A small numpy array from ``{"__array__": flat values, "dtype": name, "shape": [...]}``,
    refusing any value its dtype cannot hold exactly (never a silent wrap, overflow or rounding)."""
    values, shape, name = config["__array__"], config.get("shape"), config.get("dtype")
    try:
        dtype = np.dtype(name) if isinstance(name, str) else np.dtype("O")
    except TypeError:
        dtype = np.dtype("O")
    if dtype.kind not in "biufc" or dtype.fields is not None or dtype.shape:
        problem = f"dtype {name!r:.40} is not a numeric dtype"
    elif not isinstance(values, list) or not all(isinstance(v, (bool, int, float)) for v in values):
        problem = "the values are not a flat list of numbers"
    elif (
        not isinstance(shape, list)
        or not all(type(d) is int and d >= 0 for d in shape)
        or math.prod(shape) != len(values)
    ):
        problem = f"shape {shape!r:.60} does not hold {len(values)} values"
    else:
        try:
            with np.errstate(all="ignore"), warnings.catch_warnings():
                warnings.simplefilter("ignore")  # inexact values are reported below
                arr = np.asarray(values, dtype=dtype)
        except (OverflowError, ValueError, TypeError) as e:
            problem = f"values out of range for {dtype.name} ({e})"
        else:
            back = arr.tolist()
            if all(a == b or (a != a and b != b) for a, b in zip(back, values)):
                return arr.reshape(shape)
            problem = f"values that {dtype.name} cannot hold exactly"
    raise FileFormatError(
        f"{_where(file, path)}malformed array in a config: {problem}; the file is corrupted or was "
        "not written by jaxnets.",
        file=file,
        path=".".join(map(str, path)) or None,
    )


def _construct(entry: RegistryEntry, fields: dict[str, Any], file: str | None) -> Any:
    cls = entry.cls
    try:
        if _has_config_methods(cls):
            return cls.from_config(fields)  # type: ignore[attr-defined]
        if _is_namedtuple_type(cls):
            return cls(**fields)
        try:
            return cls(**fields)
        except TypeError:
            known = {f.name for f in dataclasses.fields(cls) if f.init}
            unknown = sorted(set(fields) - known)
            if unknown:
                raise TypeError(f"unknown field(s) {unknown}; the class has {sorted(known)}") from None
            raise
    except (FileFormatError, RegistryError):
        raise  # a nested config's own problem, already named
    except Exception as e:  # whatever a class's own checks raise on stored fields (user code)
        raise RegistryError(
            f"{file + ': ' if file else ''}cannot rebuild {entry.name} from its stored config "
            f"({type(e).__name__}: {e}). Was the file written by another version of {entry.name}?",
            file=file,
        ) from e
