"""``jaxnets.summary(model, input_shape)``: a Keras-like table of layers, output shapes and sizes.

Nothing is computed: ``init`` and ``apply`` run under ``jax.eval_shape``, so a summary of a large
model costs one abstract trace and no device memory.

How output shapes are observed (design note): layers have no hooks, and adding one to every call
path (``Bound``/``_Call``, ``Sequential``, a model calling ``self.fc.apply`` itself) would touch the
hot path of every model. Instead the summary traces a *copy* of the model in which every child
found by ``Module.named_children()`` is wrapped in a private recording module that forwards ``init``,
``apply`` and attribute access to the child and notes the shape of what ``apply`` returns. The
parent's own code is untouched, so any way it calls its children is seen. Children are matched to
the dataclass fields that hold them in order; a module whose children cannot be matched that way
is shown as a single row.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxnets.core.model import Model, is_model
from jaxnets.core.tree import flatten
from jaxnets.errors import JaxnetsError

__all__ = ["summary"]


_FAILED = "\x00failed"  # sink key of the innermost layer that raised (no path contains NUL)


@dataclasses.dataclass(frozen=True)
class _Recorder:
    """Forwards to ``inner`` and appends the structure of each output to ``sink[path]``.

    A :class:`~jaxnets.core.model.Model` (so a parent sees it as a child), not an ``nn.Module``:
    ``nn.Module.summary`` calls this file, so this file must not need ``nn.module``.
    """

    inner: Any
    path: str
    sink: dict[str, list[Any]] = dataclasses.field(compare=False, repr=False)

    def init(self, key: jax.Array) -> tuple[Any, Any]:
        return self.inner.init(key)  # type: ignore[no-any-return]

    def apply(
        self,
        params: Any,
        state: Any,
        x: Any,
        *args: Any,
        train: bool = False,
        key: jax.Array | None = None,
        **kw: Any,
    ) -> tuple[Any, Any]:
        try:
            y, new_state = self.inner.apply(params, state, x, *args, train=train, key=key, **kw)
        except Exception:
            # The innermost recorder sees the error first: that is the layer to name.
            self.sink.setdefault(_FAILED, [self.path, type(self.inner).__name__])
            raise
        self.sink.setdefault(self.path, []).append(
            jax.tree.map(lambda a: jax.ShapeDtypeStruct(jnp.shape(a), jnp.result_type(a)), y)
        )
        return y, new_state

    def children(self) -> Any:
        return self.inner.children()

    def named_children(self) -> Any:
        return self.inner.named_children()

    def named_modules(self, prefix: str = "") -> Any:
        return self.inner.named_modules(prefix)

    def __getattr__(self, name: str) -> Any:  # the parent may read the child's hyperparameters
        if name in ("inner", "path", "sink") or name.startswith("__"):
            raise AttributeError(name)
        return getattr(self.inner, name)


class _Row(NamedTuple):
    path: str  # "" for the model itself
    parent: str | None
    depth: int
    module: Model


def _slots(module: Model) -> list[tuple[str, int | None]]:
    """The dataclass fields holding child modules, in order: (field, index in a tuple or None)."""
    slots: list[tuple[str, int | None]] = []
    for f in dataclasses.fields(module):  # type: ignore[arg-type]
        value = getattr(module, f.name)
        if is_model(value):
            slots.append((f.name, None))
        elif isinstance(value, tuple) and value and all(is_model(v) for v in value):
            slots.extend((f.name, j) for j in range(len(value)))
    return slots


def _instrument(
    module: Model, prefix: str, sink: dict[str, list[Any]], rows: list[_Row]
) -> Model:
    """A copy of ``module`` whose children (recursively) are wrapped in recorders; fills ``rows``."""
    kids = list(module.named_children())
    slots = _slots(module)
    matched = len(kids) == len(slots) and all(
        (getattr(module, f) if j is None else getattr(module, f)[j]) is child
        for (f, j), (_, child) in zip(slots, kids)
    )
    if not kids or not matched:
        return module
    depth = next((r.depth for r in rows if r.path == prefix), 0) + 1
    new = copy.copy(module)
    tuples: dict[str, list[Model]] = {}
    for (field, j), (name, child) in zip(slots, kids):
        path = f"{prefix}.{name}" if prefix else name
        rows.append(_Row(path, prefix, depth, child))
        wrapped = _Recorder(_instrument(child, path, sink, rows), path, sink)
        if j is None:
            object.__setattr__(new, field, wrapped)
        else:
            tuples.setdefault(field, list(getattr(module, field)))[j] = wrapped
    for field, items in tuples.items():
        object.__setattr__(new, field, tuple(items))
    return new


def _count(tree: Any) -> dict[str, tuple[int, int, bool]]:
    """``{key: (size, bytes, trainable)}`` for the arrays of an abstract tree (PRNG keys skipped)."""
    out = {}
    for k, leaf in flatten(tree).items():
        dtype = jnp.dtype(leaf.dtype)
        if jax.dtypes.issubdtype(dtype, jax.dtypes.prng_key):
            continue
        size = int(np.prod(leaf.shape, dtype=np.int64))
        out[k] = (size, size * dtype.itemsize, bool(jnp.issubdtype(dtype, jnp.inexact)))
    return out


def _under(counts: dict[str, tuple[int, int, bool]], path: str) -> int:
    if not path:
        return sum(c[0] for c in counts.values())
    return sum(c[0] for k, c in counts.items() if k == path or k.startswith(path + "."))


def _shape_text(outputs: list[Any] | None) -> str:
    if not outputs:
        return "--"  # never called by its parent
    texts = []
    for y in outputs:
        leaves = jax.tree.leaves(y)
        if len(leaves) == 1 and not isinstance(y, (tuple, list, dict)):
            texts.append(str(tuple(leaves[0].shape)))
        else:
            texts.append("[" + ", ".join(str(tuple(a.shape)) for a in leaves) + "]")
    unique = list(dict.fromkeys(texts))
    return " | ".join(unique) if len(unique) > 1 else unique[0]


def _bytes_text(n: int) -> str:
    for unit, size in (("GB", 1 << 30), ("MB", 1 << 20), ("KB", 1 << 10)):
        if n >= size:
            return f"{n / size:.2f} {unit}"
    return f"{n} B"


def summary(model: Model, input_shape: Sequence[int], *, dtype: Any = "float32") -> str:
    """A Keras-like table: each layer's path, type, output shape and parameter count, with totals.

    Example (a LeNet-like ``Sequential``; the first dimension is the batch)::

        print(jaxnets.summary(model, (1, 1, 28, 28)))

    Args:
      model: a jaxnets Module.
      input_shape: the full input shape, batch dimension included, e.g. ``(1, 3, 32, 32)``.
      dtype: the input's dtype (``"int32"`` for token ids).

    Returns:
      The table as a string. Per row, ``Param #`` counts the parameters the module holds itself
      (not those of its children, which have rows of their own), so the rows add up to the total.
      Totals: parameters (as ``sum(p.numel() for p in torch_model.parameters())``), trainable
      (floating-point) parameters, buffers (``state``, e.g. BatchNorm's running statistics) and
      the bytes of parameters and buffers together.

    Raises:
      TypeError: ``model`` is not a model.
      JaxnetsError: its ``init``/``apply`` fails on this input (the message includes the model's
        own error).
    """
    if not is_model(model):
        raise TypeError(f"summary() takes a jaxnets.nn.Module, got {type(model).__name__}.")
    sink: dict[str, list[Any]] = {}
    rows = [_Row("", None, 0, model)]
    traced = _Recorder(_instrument(model, "", sink, rows), "", sink)
    x = jax.ShapeDtypeStruct(tuple(int(d) for d in input_shape), jnp.dtype(dtype))
    try:
        params, state = jax.eval_shape(model.init, jax.random.key(0))
        jax.eval_shape(lambda p, s, a: traced.apply(p, s, a, train=False), params, state, x)
    except Exception as e:  # any model error, re-raised with the layer and input that caused it
        path, kind = sink.get(_FAILED, ["", type(model).__name__])
        where = f" in layer {path!r} ({kind})" if path else ""
        raise JaxnetsError(
            f"summary: {type(model).__name__} failed{where} on an input of shape "
            f"{tuple(x.shape)} and dtype {x.dtype}: {type(e).__name__}: {e}",
            path=path or None,
        ) from e

    pcounts, bcounts = _count(params), _count(state)
    table = []
    for row in rows:
        kids = [r.path for r in rows if r.parent == row.path]
        own = _under(pcounts, row.path) - sum(_under(pcounts, k) for k in kids)
        label = "  " * row.depth + (row.path or "(model)")
        table.append(
            (label, type(row.module).__name__, _shape_text(sink.get(row.path)), f"{own:,}")
        )

    header = ("Layer (path)", "Type", "Output shape", "Param #")
    widths = [max(len(r[i]) for r in [header, *table]) for i in range(4)]

    def line(r: tuple[str, str, str, str]) -> str:
        return "  ".join(
            [
                r[0].ljust(widths[0]),
                r[1].ljust(widths[1]),
                r[2].ljust(widths[2]),
                r[3].rjust(widths[3]),
            ]
        )

    rule = "=" * len(line(header))
    total = sum(c[0] for c in pcounts.values())
    trainable = sum(c[0] for c in pcounts.values() if c[2])
    buffers = sum(c[0] for c in bcounts.values())
    nbytes = sum(c[1] for c in pcounts.values()) + sum(c[1] for c in bcounts.values())
    out = [rule, line(header), rule, *(line(r) for r in table), rule]
    out += [
        f"Input: {tuple(x.shape)} {x.dtype}",
        f"Total params: {total:,}",
        f"Trainable params: {trainable:,}",
        f"Non-trainable params: {total - trainable:,}",
        f"Buffers: {buffers:,}",
        f"Params + buffers size: {_bytes_text(nbytes)} ({nbytes:,} bytes)",
        rule,
    ]
    return "\n".join(out)
