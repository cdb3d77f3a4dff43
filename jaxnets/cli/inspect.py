"""``jaxnets inspect PATH``: what a model file or checkpoint holds, from headers and metadata only.

No tensor data is read: shapes and dtypes come from the file's header (or orbax's metadata for a
checkpoint), so inspecting a 10 GB file takes as long as inspecting a 10 kB one.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from jaxnets.cli.sources import Source, open_source
from jaxnets.core.structure import LeafInfo, format_shape, jax_dtype
from jaxnets.core.tree import split_key

__all__ = ["inspect_path", "format_config", "format_bytes", "nbytes", "key_table", "module_table"]


def format_bytes(n: float) -> str:
    """``1536`` -> ``"1.5 KiB"``."""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError  # unreachable


def _itemsize(dtype: str) -> int:
    try:
        jdt = jax_dtype(dtype)
    except TypeError:
        return 0  # an opaque dtype this jax does not know (safetensors' float6)
    if dtype.startswith("key<"):  # a typed PRNG key: the size of its key data
        import jax

        data = jax.eval_shape(jax.random.key_data, jax.ShapeDtypeStruct((), jdt))
        return int(np.prod(data.shape, dtype=np.int64)) * data.dtype.itemsize
    return int(jdt.itemsize)


def nbytes(info: LeafInfo) -> int:
    """Bytes of the array an entry describes."""
    return int(np.prod(info.shape, dtype=np.int64)) * _itemsize(info.dtype)


def key_table(infos: Mapping[str, LeafInfo], max_keys: int = 0) -> list[str]:
    """One line per entry: key, shape, dtype, bytes (at most ``max_keys`` lines when > 0)."""
    if not infos:
        return ["  (no entries)"]
    items = list(infos.items())
    shown = items if max_keys <= 0 else items[:max_keys]
    kw = max(len(k) for k, _ in shown)
    sw = max(len(format_shape(i.shape)) for _, i in shown)
    dw = max(len(i.dtype) for _, i in shown)
    lines = [f"  {k:<{kw}}  {format_shape(i.shape):<{sw}}  {i.dtype:<{dw}}  {format_bytes(nbytes(i)):>10}" for k, i in shown]
    if len(shown) < len(items):
        lines.append(f"  ... and {len(items) - len(shown)} more (--max-keys 0 lists all)")
    return lines


def module_table(infos: Mapping[str, LeafInfo]) -> list[str]:
    """Parameter count and bytes per top-level module (the first key component), then the total."""
    groups: dict[str, list[int]] = {}
    for k, info in infos.items():
        top = split_key(k)[0] if k else "(root)"
        g = groups.setdefault(top, [0, 0, 0])
        g[0] += int(np.prod(info.shape, dtype=np.int64))
        g[1] += nbytes(info)
        g[2] += 1
    total_n = sum(g[0] for g in groups.values())
    total_b = sum(g[1] for g in groups.values())
    w = max([len(t) for t in groups] + [len("total")])
    lines = [f"  {'module':<{w}}  {'tensors':>7}  {'elements':>12}  {'bytes':>10}"]
    for top, (n, b, c) in groups.items():
        lines.append(f"  {top:<{w}}  {c:>7}  {n:>12,}  {format_bytes(b):>10}")
    lines.append(f"  {'total':<{w}}  {len(infos):>7}  {total_n:>12,}  {format_bytes(total_b):>10}")
    return lines


def format_config(config: Any, indent: int = 0, width: int = 96) -> str:
    """A stored config as Python-like text: ``nn.Linear(in_features=4, out_features=2, bias=True)``.

    Short values stay on one line; long ones break one child per line (e.g. a Sequential's layers).
    """
    one = _config_inline(config)
    if len(one) + indent <= width:
        return one
    pad = " " * (indent + 4)
    end = " " * indent
    if isinstance(config, dict) and "__class__" in config:
        fields = _non_default(config)
        if list(fields) == ["layers"]:  # a Sequential: one layer per line, numbered as its keys
            layers = fields["layers"]
            items = layers.get("__tuple__", layers) if isinstance(layers, dict) else layers
            body = [f"{pad}{format_config(v, indent + 4, width)},  # {i}" for i, v in enumerate(items)]
        else:
            body = [f"{pad}{k}={format_config(v, indent + 4, width)}," for k, v in fields.items()]
        return f"{config['__class__']}(\n" + "\n".join(body) + f"\n{end})"
    if isinstance(config, dict) and "__tuple__" in config:
        body = [f"{pad}{format_config(v, indent + 4, width)}," for v in config["__tuple__"]]
        return "(\n" + "\n".join(body) + f"\n{end})"
    if isinstance(config, list):
        body = [f"{pad}{format_config(v, indent + 4, width)}," for v in config]
        return "[\n" + "\n".join(body) + f"\n{end}]"
    if isinstance(config, dict):
        body = [f"{pad}{k!r}: {format_config(v, indent + 4, width)}," for k, v in config.items()]
        return "{\n" + "\n".join(body) + f"\n{end}}}"
    return one


def _non_default(config: dict[str, Any]) -> dict[str, Any]:
    """A class config's fields without those at the class's defaults, when the class is known.

    Only the registry is consulted (built-in layers, or classes registered in this process):
    nothing is imported on a file's say-so.
    """
    import dataclasses

    from jaxnets.core.registry import lookup, to_config
    from jaxnets.errors import JaxnetsError

    fields = dict(config.get("config", {}) or {})
    try:
        cls = lookup(str(config["__class__"])).cls
    except JaxnetsError:
        return fields
    if not dataclasses.is_dataclass(cls):
        return fields
    for f in dataclasses.fields(cls):
        if f.name in fields and f.default is not dataclasses.MISSING:
            try:
                if to_config(f.default) == fields[f.name]:
                    del fields[f.name]
            except JaxnetsError:
                pass
    return fields


def _config_inline(config: Any) -> str:
    if isinstance(config, dict):
        if "__class__" in config:
            fields = _non_default(config)
            return f"{config['__class__']}(" + ", ".join(f"{k}={_config_inline(v)}" for k, v in fields.items()) + ")"
        if "__tuple__" in config:
            items = [_config_inline(v) for v in config["__tuple__"]]
            return "(" + ", ".join(items) + ("," if len(items) == 1 else "") + ")"
        if "__array__" in config:
            return f"array(shape={tuple(config.get('shape', ()))}, dtype={config.get('dtype')})"
        return "{" + ", ".join(f"{k!r}: {_config_inline(v)}" for k, v in config.items()) + "}"
    if isinstance(config, list):
        return "[" + ", ".join(_config_inline(v) for v in config) + "]"
    return repr(config)


def _count(infos: Mapping[str, LeafInfo]) -> str:
    n = sum(int(np.prod(i.shape, dtype=np.int64)) for i in infos.values())
    return f"{n:,} values in {len(infos)} tensors, {format_bytes(sum(nbytes(i) for i in infos.values()))}"


def _print_source(src: Source, max_keys: int) -> None:
    config = src.config
    if config is not None:
        print("\narchitecture:")
        print("  " + format_config(config, indent=2))
    meta = src.metadata
    if meta:
        print("\nmetadata:")
        for k, v in meta.items():
            text = v if isinstance(v, str) else format_config(v, indent=4 + len(str(k)))
            print(f"  {k}: {text}")
    groups_fn = getattr(src, "groups", None)
    groups = groups_fn() if callable(groups_fn) else {"entries": src.infos()}
    print("\ncontents:")
    for name, sub in groups.items():
        if sub:
            print(f"  {name + ':':<18} {_count(sub)}")
    for name, sub in groups.items():
        if not sub:
            continue
        print(f"\n{name}:")
        print("\n".join(key_table({k or "<root>": v for k, v in sub.items()}, max_keys)))
        if name in ("params", "entries"):
            print(f"\n{name} per top-level module:")
            print("\n".join(module_table(sub)))


def inspect_path(path: str | os.PathLike[str], *, step: int | None = None, max_keys: int = 200) -> int:
    """Prints what ``path`` holds. Returns the exit status (0).

    Raises:
      FileNotFoundError: nothing at ``path``.
      JaxnetsError: the file is not a valid file of its format.
    """
    src = open_source(path)
    try:
        p = Path(path)
        size = sum(f.stat().st_size for f in p.rglob("*") if f.is_file()) if p.is_dir() else p.stat().st_size
        print(f"{p}  ({src.kind}, {format_bytes(size)} on disk)")
        describe = getattr(src, "describe", None)
        if callable(describe):  # a checkpoint directory: its steps, metrics, then one step's tree
            src = describe(step)
        _print_source(src, max_keys)
    finally:
        src.close()
    return 0
