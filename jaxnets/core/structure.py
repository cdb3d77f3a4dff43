"""The one structure checker: compares what is expected with what was given, key by key.

Every restore in jaxnets (state_dicts, model files, checkpoints) calls :func:`compare` and
raises with :meth:`StructureReport.format` when the report is not clean, so users always see
every missing, unexpected, misshapen and mistyped entry at once, by path.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple

import jax
import numpy as np

__all__ = [
    "LeafInfo",
    "Mismatch",
    "StructureReport",
    "leaf_info",
    "compare",
    "dtype_name",
    "format_shape",
    "hints",
    "jax_dtype",
]


class LeafInfo(NamedTuple):
    """Shape and dtype name of one leaf (``"float32"``, ``"bfloat16"``, ``"key<fry>"``)."""

    shape: tuple[int, ...]
    dtype: str


class Mismatch(NamedTuple):
    """One entry whose shape or dtype differs: ``expected`` and ``got`` are shapes or dtype names."""

    path: str
    expected: Any
    got: Any


_DTYPE_NAMES: dict[Any, str] = {}


def dtype_name(dtype: Any) -> str:
    """A dtype's canonical name: ``float32``, ``bfloat16``, ``int4``, ``key<fry>``.

    Accepts numpy and ml_dtypes dtypes, their names, jax PRNG key dtypes and torch dtypes
    (``torch.float32`` -> ``float32``).
    """
    # np.dtype(...).name costs ~10 us (numpy walks its type hierarchy); a 20,000-key state_dict
    # has a handful of distinct dtypes, so each is named once.
    try:
        name = _DTYPE_NAMES.get(dtype)
    except TypeError:  # an unhashable dtype-like
        name = None
    if name is not None:
        return name
    cache = isinstance(dtype, (np.dtype, str)) or type(dtype).__module__.startswith("torch")
    if isinstance(dtype, str) and dtype.startswith("key<"):
        name = dtype
    elif type(dtype).__module__.startswith("torch"):
        name = str(dtype).removeprefix("torch.")
    elif jax.dtypes.issubdtype(dtype, jax.dtypes.prng_key):
        name, cache = str(dtype), True
    else:
        name = np.dtype(dtype).name
    if cache:  # dtypes only, never arbitrary dtype-likes: the cache stays a handful of entries
        _DTYPE_NAMES[dtype] = name
    return name


@functools.lru_cache(maxsize=64)
def jax_dtype(name: str) -> Any:
    """The dtype a :class:`LeafInfo` names, for ``jax.ShapeDtypeStruct`` (PRNG key dtypes too).

    Raises:
      TypeError: no dtype of that name is known to this jax.
    """
    if name.startswith("key<"):
        for impl in ("threefry2x32", "rbg", "unsafe_rbg", "philox4x32", "philox2x32", "threefry4x32"):
            try:
                dtype = jax.random.key(0, impl=impl).dtype
            except (ValueError, TypeError, KeyError):
                continue
            if str(dtype) == name:
                return dtype
        raise TypeError(f"unknown PRNG key dtype {name!r}")
    import jax.numpy as jnp

    return jnp.dtype(name)


def format_shape(shape: tuple[int, ...] | list[int]) -> str:
    """A shape as Python writes a tuple: ``(8, 4)``, ``(3,)``, ``()``."""
    return "(" + ", ".join(map(str, shape)) + (",)" if len(shape) == 1 else ")")


def leaf_info(x: Any) -> LeafInfo:
    """The :class:`LeafInfo` of an array, ``jax.ShapeDtypeStruct``, torch tensor or Python scalar."""
    if hasattr(x, "shape") and hasattr(x, "dtype"):
        shape, dtype = tuple(int(d) for d in x.shape), dtype_name(x.dtype)
        if dtype == "float4_e2m1fn_x2":  # torch packs two float4 values per element
            return LeafInfo((*shape[:-1], 2 * shape[-1]) if shape else (2,), "float4_e2m1fn")
        return LeafInfo(shape, dtype)
    arr = np.asarray(x)
    return LeafInfo(arr.shape, dtype_name(arr.dtype))


@dataclass(frozen=True)
class StructureReport:
    """Every difference between an expected flat structure and a given one.

    Attributes:
      missing: keys expected but not given.
      unexpected: keys given but not expected.
      shape_mismatch: entries whose shapes differ (never loadable).
      dtype_mismatch: entries whose dtypes differ (cast or refused by the caller's policy).
    """

    missing: tuple[str, ...] = ()
    unexpected: tuple[str, ...] = ()
    shape_mismatch: tuple[Mismatch, ...] = ()
    dtype_mismatch: tuple[Mismatch, ...] = ()
    hints: tuple[str, ...] = ()

    @property
    def keys_match(self) -> bool:
        """True when both sides have exactly the same keys."""
        return not self.missing and not self.unexpected

    @property
    def clean(self) -> bool:
        """True when keys, shapes and dtypes all agree."""
        return self.keys_match and not self.shape_mismatch and not self.dtype_mismatch

    def problem_paths(self) -> list[str]:
        """All paths the report names, in the order it lists them."""
        return [
            *self.missing,
            *self.unexpected,
            *(m.path for m in self.shape_mismatch),
            *(m.path for m in self.dtype_mismatch),
        ]

    def format(
        self,
        *,
        expected: str = "the model",
        got: str = "the state_dict",
        dtypes: bool = True,
        hint: str = "",
    ) -> str:
        """A multi-line message listing every problem, then the report's hints.

        Args:
          expected: how to call the expected side (``"the model"``, ``"the template"``).
          got: how to call the given side (``"the state_dict"``, ``"model.jnet"``).
          dtypes: whether to list dtype differences (callers that cast them pass False).
          hint: a last line telling the user what to do.
        """
        counts = []
        lines: list[str] = []
        if self.missing:
            counts.append(f"{len(self.missing)} missing")
            lines.append(f"  missing (in {expected}, not in {got}):")
            lines += [f"    {k}" for k in self.missing]
        if self.unexpected:
            counts.append(f"{len(self.unexpected)} unexpected")
            lines.append(f"  unexpected (in {got}, not in {expected}):")
            lines += [f"    {k}" for k in self.unexpected]
        if self.shape_mismatch:
            counts.append(f"{len(self.shape_mismatch)} misshapen")
            lines.append("  misshapen:")
            lines += [
                f"    {m.path}: shape {format_shape(m.got)} in {got}, "
                f"{format_shape(m.expected)} in {expected}"
                for m in self.shape_mismatch
            ]
        if dtypes and self.dtype_mismatch:
            counts.append(f"{len(self.dtype_mismatch)} mistyped")
            lines.append("  mistyped:")
            lines += [
                f"    {m.path}: dtype {m.got} in {got}, {m.expected} in {expected}"
                for m in self.dtype_mismatch
            ]
        if not counts:
            head = f"{got} fits {expected}: every key, shape and dtype agrees" if dtypes else (
                f"{got} fits {expected}: every key and shape agrees"
            )
        else:
            head = f"{got} does not fit {expected}: " + ", ".join(counts)
        lines += [f"  hint: {h}" for h in self.hints]
        return "\n".join([head, *lines] + ([hint] if hint else []))

    def __str__(self) -> str:
        """The formatted report: ``print(jaxnets.check_state_dict(model, path))``."""
        return self.format()


def compare(expected: Mapping[str, Any], got: Mapping[str, Any]) -> StructureReport:
    """Compares two flat structures key by key.

    Args:
      expected: ``{key: leaf or LeafInfo}`` of the model or template.
      got: ``{key: leaf or LeafInfo}`` of the state_dict, file or checkpoint.

    Returns:
      A :class:`StructureReport`; keys are listed in ``expected``'s order, then ``got``'s.
    """
    missing = tuple(k for k in expected if k not in got)
    unexpected = tuple(k for k in got if k not in expected)
    shapes: list[Mismatch] = []
    dtypes: list[Mismatch] = []
    for k, e in expected.items():
        if k not in got:
            continue
        ei = e if isinstance(e, LeafInfo) else leaf_info(e)
        g = got[k]
        gi = g if isinstance(g, LeafInfo) else leaf_info(g)
        if ei.shape != gi.shape:
            shapes.append(Mismatch(k, ei.shape, gi.shape))
        elif ei.dtype != gi.dtype:
            dtypes.append(Mismatch(k, ei.dtype, gi.dtype))
    return StructureReport(missing, unexpected, tuple(shapes), tuple(dtypes))


# --- hints: what the user probably has to pass to load_state_dict ---------------------------------
_MAX_PREFIX_PARTS = 3  # prefixes like "module.", "model.encoder.": a few components at most


def _dot_prefixes(key: str) -> list[str]:
    """``"a.b.c.d"`` -> ``["a.", "a.b.", "a.b.c."]`` (never the whole key)."""
    parts = key.split(".")[:-1][:_MAX_PREFIX_PARTS]
    return [".".join(parts[: i + 1]) + "." for i in range(len(parts))]


def _best(counts: dict[str, int]) -> str | None:
    return max(counts, key=lambda p: (counts[p], len(p))) if counts else None


def _listed(keys: list[str], n: int = 3) -> str:
    shown = ", ".join(repr(k) for k in keys[:n])
    return shown + (f" and {len(keys) - n} more" if len(keys) > n else "")


def hints(report: StructureReport, expected_keys: Iterable[str]) -> tuple[str, ...]:
    """What the options of ``load_state_dict`` could fix in ``report``, as sentences.

    * every unexpected key is a model key under a prefix (``module.``, ``model.``):
      ``strip_prefix=``;
    * every unexpected key is a model key without a prefix (a sub-model's state_dict):
      ``prefix=``;
    * a 2-D entry stored as the transpose of the model's shape (Hugging Face's ``Conv1D``
      stores ``(in, out)``): ``transform=`` by key. Square weights of the same layers pass the
      check silently, so the hint says so.

    Args:
      report: the result of :func:`compare`.
      expected_keys: every key of the expected side (the model's), not only the missing ones.

    Returns:
      One sentence per hint (empty when nothing applies).
    """
    expected = set(expected_keys)
    unexpected = list(report.unexpected)
    out: list[str] = []
    if unexpected:
        # strip_prefix: unexpected "module.fc.weight" is the model's "fc.weight".
        counts: dict[str, int] = {}
        for u in unexpected:
            for p in _dot_prefixes(u):
                if u[len(p) :] in expected:
                    counts[p] = counts.get(p, 0) + 1
        best = _best(counts)
        if best is not None and not any(k.startswith(best) for k in expected):
            p = best
            under = [u for u in unexpected if u.startswith(p) and u[len(p) :] in expected]
            taken = set(under)
            rest = [u for u in unexpected if u not in taken]
            covered = {u[len(p) :] for u in under}
            if not rest:
                out.append(f"every unexpected key is a key of the model under the prefix {p!r}: "
                           f"pass strip_prefix={p!r}.")
            elif all(m in covered for m in report.missing):
                out.append(
                    f"{len(under)} unexpected keys are keys of the model under the prefix {p!r}: pass "
                    f"strip_prefix={p!r}; the other {len(rest)} ({_listed(rest)}) are not the model's: "
                    "drop them with rename= (a rule mapping them to None) or load with strict=False."
                )
        # prefix: unexpected "fc.weight" is the model's "backbone.fc.weight".
        counts = {}
        missing = set(report.missing)
        given = set(unexpected)
        for m in report.missing:
            for p in _dot_prefixes(m):
                if m[len(p) :] in given:
                    counts[p] = counts.get(p, 0) + 1
        best = _best(counts)
        if best is not None and all(best + u in missing for u in unexpected):
            p = best
            out.append(f"every unexpected key is a key of the model without its prefix {p!r}: "
                       f"pass prefix={p!r}.")
    transposed = [m.path for m in report.shape_mismatch if len(m.got) == 2 and tuple(m.got) == tuple(m.expected)[::-1]]
    if transposed:
        names = sorted({".".join(k.split(".")[-2:]) for k in transposed})
        pattern = r"(.*\.)?(" + "|".join(re.escape(n) for n in names) + ")"
        out.append(
            f"{_listed(transposed)} {'is' if len(transposed) == 1 else 'are'} stored transposed "
            "(in, out) where the model has (out, in), as Hugging Face's Conv1D stores its weights: "
            f"pass transform={{r'{pattern}': lambda w: w.T}}. Square weights of the same layers "
            "load without any error but transposed: include them in the pattern too "
            "(see docs/saving_loading.md, 'Transposed weights')."
        )
    return tuple(out)
