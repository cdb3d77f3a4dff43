"""The one structure checker: compares what is expected with what was given, key by key.

Every restore in jaxnets (state_dicts, model files, checkpoints) calls :func:`compare` and
raises with :meth:`StructureReport.format` when the report is not clean, so users always see
every missing, unexpected, misshapen and mistyped entry at once, by path.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple

import jax
import numpy as np

__all__ = ["LeafInfo", "Mismatch", "StructureReport", "leaf_info", "compare", "dtype_name"]


class LeafInfo(NamedTuple):
    """Shape and dtype name of one leaf (``"float32"``, ``"bfloat16"``, ``"key<fry>"``)."""

    shape: tuple[int, ...]
    dtype: str


class Mismatch(NamedTuple):
    """One entry whose shape or dtype differs: ``expected`` and ``got`` are shapes or dtype names."""

    path: str
    expected: Any
    got: Any


def dtype_name(dtype: Any) -> str:
    """A dtype's canonical name: ``float32``, ``bfloat16``, ``int4``, ``key<fry>``."""
    if jax.dtypes.issubdtype(dtype, jax.dtypes.prng_key):
        return str(dtype)
    return np.dtype(dtype).name


def leaf_info(x: Any) -> LeafInfo:
    """The :class:`LeafInfo` of an array, ``jax.ShapeDtypeStruct``, torch tensor or Python scalar."""
    if hasattr(x, "shape") and hasattr(x, "dtype"):
        dtype = x.dtype
        if type(x).__module__.startswith("torch"):
            dtype = str(dtype).removeprefix("torch.")
        return LeafInfo(tuple(int(d) for d in x.shape), dtype_name(dtype))
    arr = np.asarray(x)
    return LeafInfo(arr.shape, arr.dtype.name)


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
        """A multi-line message listing every problem.

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
                f"    {m.path}: shape {_shape(m.got)} in {got}, {_shape(m.expected)} in {expected}"
                for m in self.shape_mismatch
            ]
        if dtypes and self.dtype_mismatch:
            counts.append(f"{len(self.dtype_mismatch)} mistyped")
            lines.append("  mistyped:")
            lines += [
                f"    {m.path}: dtype {m.got} in {got}, {m.expected} in {expected}"
                for m in self.dtype_mismatch
            ]
        head = f"{got} does not fit {expected}: " + ", ".join(counts)
        return "\n".join([head, *lines] + ([hint] if hint else []))


def _shape(s: tuple[int, ...]) -> str:
    return "(" + ", ".join(map(str, s)) + (",)" if len(s) == 1 else ")")


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
