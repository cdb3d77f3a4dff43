"""``jaxnets diff A B``: which keys differ in presence, shape or dtype, and by how much the values do.

The key comparison is the core's :func:`~jaxnets.compare` (A is the expected side). Common
tensors of equal shape are then read one pair at a time, so memory stays at two tensors.
"""

from __future__ import annotations

import os

import numpy as np

from jaxnets.cli.sources import Source, open_source
from jaxnets.core.structure import compare, format_shape

__all__ = ["diff_paths", "max_abs_diff"]


def max_abs_diff(a: np.ndarray, b: np.ndarray) -> float:
    """``max |a - b|`` computed in float64 (bfloat16 and ints exactly); NaNs in the same places count as equal."""
    if a.size == 0:
        return 0.0
    x = np.asarray(a).astype(np.complex128 if np.iscomplexobj(a) else np.float64)
    y = np.asarray(b).astype(np.complex128 if np.iscomplexobj(b) else np.float64)
    d = np.abs(x - y)
    both_nan = np.isnan(x) & np.isnan(y) if not np.iscomplexobj(x) else np.zeros(d.shape, bool)
    d = np.where(both_nan, 0.0, d)
    return float(np.nanmax(np.where(np.isnan(d), np.inf, d)))


def _raw(src: Source, key: str) -> np.ndarray:
    """One entry as numpy; a typed PRNG key array as its raw key data (compared bit for bit)."""
    value = src[key]
    if not isinstance(value, np.ndarray):
        import jax

        return np.asarray(jax.random.key_data(value))
    return value


def diff_paths(a: str | os.PathLike[str], b: str | os.PathLike[str], *, atol: float = 0.0) -> int:
    """Prints the differences between the tensors of ``a`` and ``b``.

    Returns:
      0 when both hold the same keys, shapes, dtypes and values (within ``atol``), 1 otherwise.

    Raises:
      FileNotFoundError, JaxnetsError: a path is missing or not a readable file.
    """
    src_a = open_source(a)
    try:
        src_b = open_source(b)
    except BaseException:
        src_a.close()
        raise
    try:
        ia, ib = src_a.infos(), src_b.infos()
        report = compare(ia, ib)
        print(f"A: {a}  ({src_a.kind}, {len(ia)} entries)")
        print(f"B: {b}  ({src_b.kind}, {len(ib)} entries)")
        if report.missing:
            print(f"\nremoved (in A, not in B): {len(report.missing)}")
            for k in report.missing:
                print(f"  - {k}  {format_shape(ia[k].shape)} {ia[k].dtype}")
        if report.unexpected:
            print(f"\nadded (in B, not in A): {len(report.unexpected)}")
            for k in report.unexpected:
                print(f"  + {k}  {format_shape(ib[k].shape)} {ib[k].dtype}")
        if report.shape_mismatch:
            print(f"\nshape changed: {len(report.shape_mismatch)}")
            for m in report.shape_mismatch:
                print(f"  ~ {m.path}  {format_shape(m.expected)} -> {format_shape(m.got)}")
        if report.dtype_mismatch:
            print(f"\ndtype changed: {len(report.dtype_mismatch)}")
            for m in report.dtype_mismatch:
                print(f"  ~ {m.path}  {m.expected} -> {m.got}")

        misshapen = {m.path for m in report.shape_mismatch}
        common = [k for k in ia if k in ib and k not in misshapen]
        changed: list[tuple[str, float]] = []
        for k in common:  # one pair of tensors in memory at a time
            d = max_abs_diff(_raw(src_a, k), _raw(src_b, k))
            if d > atol:
                changed.append((k, d))
        print(f"\nvalues: {len(common) - len(changed)} of {len(common)} common tensors equal"
              + (f" (within atol={atol:g})" if atol else ""))
        if changed:
            w = max(len(k) for k, _ in changed)
            print(f"  {'key':<{w}}  max |A - B|")
            for k, d in sorted(changed, key=lambda kd: -kd[1]):
                print(f"  {k:<{w}}  {d:.6g}")
        same = report.clean and not changed
        print("\nidentical" if same else "\ndifferent")
        return 0 if same else 1
    finally:
        src_a.close()
        src_b.close()
