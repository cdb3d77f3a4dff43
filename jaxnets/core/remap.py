"""Load hooks: rename a state_dict's keys and transform its values before the structure check.

Keys are mapped in this order (docs/saving_loading.md, "Renaming and transforming"):

1. ``strip_prefix``: removed from every key that starts with it (``"module."`` of
   ``DataParallel``);
2. ``rename``: an ordered list of regex rules ``(pattern, replacement)``, each applied with
   ``re.sub`` to the result of the previous one (a replacement of ``None`` drops the keys the
   pattern matches), or a function ``fn(key) -> new key | None`` (``None`` drops the key);
3. ``prefix``: added to every key.

``transform`` then changes values by the *mapped* key (the model's name): ``{pattern: fn(array)}``
(a key, or a regex matching whole keys) or one function ``fn(key, array)``. Everything is lazy:
a transform's output shape and dtype come from ``jax.eval_shape`` on the stored shape and dtype,
so the structure check sees the transformed entries before any data is read, and each value is
read and transformed only when the loader asks for it.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeAlias

import jax

from jaxnets.core.structure import LeafInfo, dtype_name, jax_dtype

__all__ = ["Rename", "Transform", "LoadHooks", "Remapped"]

Rename: TypeAlias = Sequence[tuple[str | re.Pattern[str], str | None]] | Callable[[str], str | None]
Transform: TypeAlias = Mapping[str, Callable[[Any], Any]] | Callable[[str, Any], Any]
# prepare(key, stored value, stored dtype, dtype) -> an owned jax array of dtype (the loader's
# checked cast).
Prepare = Callable[[str, Any, str, str], Any]


@dataclass(frozen=True)
class LoadHooks:
    """The key mapping and transforms of one load, validated (see the module docstring)."""

    prefix: str = ""
    strip_prefix: str = ""
    rename: Rename | None = None
    transform: Transform | None = None

    def __post_init__(self) -> None:
        for name in ("prefix", "strip_prefix"):
            if not isinstance(getattr(self, name), str):
                raise TypeError(f"{name} must be a str, got {type(getattr(self, name)).__name__}.")
        r = self.rename
        if r is not None and not callable(r):
            if isinstance(r, (str, bytes, Mapping)) or not isinstance(r, Sequence):
                raise TypeError(
                    "rename must be a list of (pattern, replacement) pairs or a function "
                    f"key -> key | None, got {type(r).__name__}."
                )
            for rule in r:
                if (
                    not isinstance(rule, (tuple, list))
                    or len(rule) != 2
                    or not isinstance(rule[0], (str, re.Pattern))
                    or not (rule[1] is None or isinstance(rule[1], str))
                ):
                    raise TypeError(
                        f"each rename rule must be a (pattern, replacement or None) pair, got {rule!r}."
                    )
        t = self.transform
        if t is not None and not callable(t):
            if not isinstance(t, Mapping):
                raise TypeError(
                    "transform must be a mapping {key or pattern: fn(array)} or a function "
                    f"fn(key, array), got {type(t).__name__}."
                )
            for k, fn in t.items():
                if not isinstance(k, str) or not callable(fn):
                    raise TypeError(f"transform entries must be str -> callable, got {k!r}: {fn!r}.")

    @property
    def active(self) -> bool:
        return bool(self.prefix or self.strip_prefix or self.rename is not None or self.transform is not None)

    def map_keys(self, keys: Iterator[str] | Sequence[str]) -> dict[str, str]:
        """``{mapped key: stored key}`` in the stored order, without the dropped keys.

        Raises:
          ValueError: two stored keys map to the same key.
          TypeError: a rename function returned something other than a str or None.
        """
        rules = None
        if self.rename is not None and not callable(self.rename):
            rules = [(re.compile(p) if isinstance(p, str) else p, r) for p, r in self.rename]
        out: dict[str, str] = {}
        for old in keys:
            name = old[len(self.strip_prefix) :] if self.strip_prefix and old.startswith(self.strip_prefix) else old
            k: str | None = name
            if callable(self.rename):
                k = self.rename(name)
                if k is not None and not isinstance(k, str):
                    raise TypeError(f"rename({old!r}) returned {k!r}; it must return a str or None.")
            elif rules is not None:
                k = _apply_rules(rules, name)
            if k is None:
                continue
            k = self.prefix + k
            if k in out:
                raise ValueError(f"the stored keys {out[k]!r} and {old!r} both map to {k!r}; fix rename/prefix.")
            out[k] = old
        return out


def _apply_rules(rules: list[tuple[re.Pattern[str], str | None]], key: str) -> str | None:
    for pattern, replacement in rules:
        if replacement is None:
            if pattern.search(key):
                return None
        else:
            key = pattern.sub(replacement, key)
    return key


class _TraceError(Exception):
    def __init__(self, key: str, cause: BaseException):
        super().__init__(key)
        self.key, self.cause = key, cause


class Remapped(Mapping[str, Any]):
    """A flat state_dict seen through :class:`LoadHooks`: mapped keys, lazily transformed values.

    Attributes:
      precasts: ``(key, stored dtype, dtype the transform saw)`` for transformed entries whose
        stored dtype jax cannot hold (float64 without 64-bit mode): the loader reports them as
        casts.
    """

    def __init__(self, flat: Mapping[str, Any], infos: Mapping[str, LeafInfo], hooks: LoadHooks, prepare: Prepare):
        self._flat = flat
        self._prepare = prepare
        self._names = hooks.map_keys(list(infos))
        self._fns = _transforms(hooks.transform, list(self._names))
        self._keyed = callable(hooks.transform) and not isinstance(hooks.transform, Mapping)
        self.precasts: list[tuple[str, str, str]] = []
        stored = {new: infos[old] for new, old in self._names.items()}
        self._stored = stored
        self._inputs: dict[str, str] = {}  # key -> dtype given to its transform
        for k in self._fns:
            info = stored[k]
            dtype = info.dtype if info.dtype.startswith("key<") else dtype_name(
                jax.dtypes.canonicalize_dtype(jax_dtype(info.dtype))
            )
            self._inputs[k] = dtype
            if dtype != info.dtype:
                self.precasts.append((k, info.dtype, dtype))
        self._infos = dict(stored)
        self._infos.update(self._transformed_infos(stored))

    def _transformed_infos(self, stored: Mapping[str, LeafInfo]) -> dict[str, LeafInfo]:
        if not self._fns:
            return {}
        # A {pattern: fn(array)} transform cannot depend on the key: keys of one function, shape
        # and dtype share one trace (GPT-2's 48 Conv1D weights: 4 traces). fn(key, array) may
        # depend on the key: one trace per key, all in one eval_shape.
        groups: dict[Any, list[str]] = {}
        for k, fn in self._fns.items():
            group = (k if self._keyed else id(fn), stored[k].shape, self._inputs[k])
            groups.setdefault(group, []).append(k)
        firsts = [ks[0] for ks in groups.values()]
        structs = {k: jax.ShapeDtypeStruct(stored[k].shape, jax_dtype(self._inputs[k])) for k in firsts}

        def run(arrays: dict[str, Any]) -> dict[str, Any]:
            out = {}
            for k, x in arrays.items():
                try:
                    out[k] = self._fns[k](x)
                except Exception as e:  # noqa: BLE001  (re-raised below, naming the key)
                    raise _TraceError(k, e) from e
            return out

        try:  # one trace for every key: 20,000 transformed keys cost one eval_shape, not 20,000
            shapes = jax.eval_shape(run, structs)
        except _TraceError as e:
            cause = (str(e.cause).strip().splitlines() or [""])[0]
            raise ValueError(
                f"the transform of {e.key!r} cannot run on an abstract array "
                f"({type(e.cause).__name__}: {cause}); write it with jax.numpy or array methods "
                "(w.T, w.reshape(...), w.astype(...)) so its output shape is known without reading data."
            ) from e.cause
        out = {}
        for ks in groups.values():
            s = shapes[ks[0]]
            if not hasattr(s, "shape") or not hasattr(s, "dtype"):
                raise ValueError(f"the transform of {ks[0]!r} returned {s!r}, not one array.")
            info = LeafInfo(tuple(s.shape), dtype_name(s.dtype))
            out.update(dict.fromkeys(ks, info))
        return out

    def infos(self) -> dict[str, LeafInfo]:
        """Shape and dtype of every mapped entry, after its transform, without reading data."""
        return dict(self._infos)

    def __getitem__(self, key: str) -> Any:
        value = self._flat[self._names[key]]
        fn = self._fns.get(key)
        if fn is None:
            return value
        out = fn(self._prepare(key, value, self._stored[key].dtype, self._inputs[key]))
        want = self._infos[key]
        if tuple(out.shape) != want.shape or dtype_name(out.dtype) != want.dtype:
            raise ValueError(
                f"the transform of {key!r} returned shape {tuple(out.shape)} {dtype_name(out.dtype)} on the data "
                f"but {want.shape} {want.dtype} when traced; it must not depend on the values."
            )
        return out

    def __iter__(self) -> Iterator[str]:
        return iter(self._names)

    def __len__(self) -> int:
        return len(self._names)

    def __contains__(self, key: object) -> bool:
        return key in self._names

    def close(self) -> None:
        close = getattr(self._flat, "close", None)
        if callable(close):
            close()


def _transforms(transform: Transform | None, keys: list[str]) -> dict[str, Callable[[Any], Any]]:
    """``{mapped key: fn(array)}`` for the keys a transform applies to.

    Raises:
      ValueError: a pattern matches no key (a typo would otherwise load untransformed weights
        silently when their shapes are square), or a key matches several patterns.
    """
    if transform is None:
        return {}
    if callable(transform) and not isinstance(transform, Mapping):
        fn: Callable[[str, Any], Any] = transform
        return {k: functools.partial(fn, k) for k in keys}
    patterns = [(p, re.compile(p), f) for p, f in transform.items()]
    used: set[str] = set()
    out: dict[str, Callable[[Any], Any]] = {}
    for k in keys:
        exact = transform.get(k)
        if exact is not None:
            out[k] = exact
            used.add(k)
            continue
        hits = [(p, f) for p, rx, f in patterns if rx.fullmatch(k)]
        if len(hits) > 1:
            raise ValueError(f"{k!r} matches several transform patterns: {[p for p, _ in hits]}; make them exclusive.")
        if hits:
            used.add(hits[0][0])
            out[k] = hits[0][1]
    unused = [p for p in transform if p not in used]
    if unused:
        raise ValueError(
            f"transform patterns that match no key (after renaming): {unused}. Patterns match whole "
            "keys of the model's names, e.g. r'.*\\.attn\\.c_attn\\.weight'."
        )
    return out
