"""The ``meta`` item of a checkpoint step: the one reader, and the checks that come before any use.

``meta`` is the JSON that describes a step (docs/checkpoints.md, "On disk"): format and version,
the tree spec, per leaf its kind, shape, dtype and where its data is, the packed groups, the
checksums of all array data, the model/optimizer configs, metrics and extras, and (format 2) the
XXH3 checksum of itself. :func:`read_meta` reads it and :func:`check_meta` validates every field
against every other one, so that nothing downstream (the manager's restore, the CLI) ever slices
an array with an offset or a shape that was not checked. Both the manager and the CLI read
metadata only through here.

A meta that lies consistently (fields edited *and* its checksum recomputed) is beyond what a
checksum can catch; everything that does not add up is refused.
"""

from __future__ import annotations

import contextlib
import functools
import json
import math
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, NamedTuple

import xxhash

from jaxnets.checkpoint._pieces import grid_problem, volume
from jaxnets.core.prng import canonical_impl, key_info
from jaxnets.core.structure import LeafInfo
from jaxnets.core.tree import spec_keys
from jaxnets.errors import CheckpointError, JaxnetsError

__all__ = [
    "ARRAYS",
    "FIELDS",
    "FORMAT",
    "GROUP_PREFIX",
    "KINDS",
    "META",
    "PGROUP_PREFIX",
    "VERSION",
    "ArraySpec",
    "array_specs",
    "check_meta",
    "describe",
    "json_checksum",
    "key_size",
    "read_meta",
    "seal",
    "step_label",
    "step_of",
    "stored_infos",
]

FORMAT = "jaxnets.checkpoint"
# 3: saves of several processes (per-process rows, pieces, per-process values, shard checksums;
# a single process still writes 2, which jaxnets 0.2 reads); 2: checksums of every array, group
# and of the meta itself; 1: jaxnets 0.1.
VERSION = 3
FIELDS = ("params", "state", "opt_state", "rng")
ARRAYS, META = "arrays", "meta"  # the two orbax items of a step
GROUP_PREFIX = "__group__."  # packed leaves stored once: one flat buffer per dtype
PGROUP_PREFIX = "__pgroup__."  # packed per process: (processes, length), row p written by process p
# "jax" (jax.Array), "key" (typed PRNG key array, stored as its uint32 key data), "numpy"
# (np.ndarray), "npscalar" (np.generic), "py" (bool/int/float/str, value kept in the JSON).
KINDS = ("jax", "key", "numpy", "npscalar", "py")

_HEX16 = re.compile(r"[0-9a-f]{16}")
_MAX_DIM = 1 << 48  # no real array has a dimension or a size above this: a lie, caught early
_MAX_PROBLEMS = 10


def step_of(step_dir: str | os.PathLike[str]) -> int | None:
    """The step number a step directory's name gives (``ckpt/12`` -> 12), or None."""
    name = Path(step_dir).name
    return int(name) if name.isdigit() else None


def step_label(step_dir: str) -> str:
    """How errors name a step directory: ``"ckpt/3 (step 3)"``."""
    step = step_of(step_dir)
    return f"{step_dir} (step {step})" if step is not None else step_dir


@functools.cache
def key_size(impl: str) -> int:
    """uint32 words per key of a PRNG impl (2 for threefry, 4 for rbg).

    Raises:
      ValueError: ``impl`` is not a PRNG implementation jaxnets or the running jax knows.
    """
    try:
        return math.prod(key_info(impl)[1])
    except JaxnetsError as e:
        raise ValueError(str(e)) from e


def json_checksum(value: Any) -> str:
    """XXH3-64 of the canonical JSON text of ``value`` (sorted keys, no spaces).

    Canonical, so that it does not depend on how a writer spaced the file: a stored meta is
    parsed, and its checksum recomputed from the values it holds.
    """
    text = json.dumps(value, sort_keys=True, separators=(",", ":"), allow_nan=False)
    return f"{xxhash.xxh3_64_intdigest(text.encode()):016x}"


def seal(meta: dict[str, Any]) -> dict[str, Any]:
    """``meta`` with its own checksum added under ``"xxh3"`` (what :func:`check_meta` verifies)."""
    body = {k: v for k, v in meta.items() if k != "xxh3"}
    return {**body, "xxh3": json_checksum(body)}


def read_meta(step_dir: str | os.PathLike[str], *, verify: bool = True) -> dict[str, Any]:
    """Reads and checks the ``meta`` item of one step directory. Opens no CheckpointManager.

    Args:
      step_dir: the step directory (``ckpt/12``).
      verify: check the metadata's own checksum (the structural checks always run).

    Returns:
      The metadata, every field checked (see :func:`check_meta`).

    Raises:
      CheckpointError: the file is missing, unreadable, not JSON, not a jaxnets checkpoint's, of
        a newer format, corrupted or inconsistent; the message names the step and the field/key.
    """
    import orbax.checkpoint as ocp

    step_dir = os.fspath(step_dir)
    where = os.path.join(step_dir, META)
    try:
        meta = ocp.JsonCheckpointHandler().restore(Path(where))
    except (OSError, ValueError, RecursionError) as e:  # missing, unreadable, not JSON
        raise CheckpointError(
            f"{step_label(step_dir)}: cannot read the checkpoint metadata ({type(e).__name__}: {e}).",
            file=where,
        ) from e
    return check_meta(meta, step_dir=step_dir, verify=verify)


def check_meta(meta: Any, *, step_dir: str, verify: bool = True) -> dict[str, Any]:
    """Checks a step's metadata: its checksum (if ``verify``), then that every field adds up.

    Checked always: format and version; the step number; the tree spec parses and names exactly
    the stored leaves, in order; every leaf has a known kind, a shape of non-negative ints and a
    dtype; a packed leaf's group exists, has its dtype, and its offset is where the leaves before
    it end (so offsets and shapes tile each group exactly, with no gap or overlap); every group's
    length is the sum of its leaves; checksums are well formed; metrics are numbers.

    Args:
      meta: the parsed JSON.
      step_dir: the step directory it came from (named in errors).
      verify: check the metadata's own checksum (format 1, from jaxnets 0.1, has none; its
        arrays have none either, which :func:`verify_checksums` refuses).

    Returns:
      ``meta`` itself.

    Raises:
      CheckpointError: listing what is wrong, naming the step and the keys.
    """
    where = step_label(step_dir)

    def fail(msg: str, path: str | None = None) -> CheckpointError:
        return CheckpointError(f"{where}: {msg}", path=path, file=step_dir)

    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise fail("not a jaxnets checkpoint (no jaxnets metadata).")
    version = meta.get("version")
    if type(version) is not int or version < 1:
        raise fail(f"malformed checkpoint format version {version!r}: the metadata is corrupted.")
    if version > VERSION:
        raise fail(
            f"written by a newer jaxnets (checkpoint format {version}, this one reads up to "
            f"{VERSION}); upgrade jaxnets."
        )
    if verify and version >= 2:  # format 1 (jaxnets 0.1) has no checksums: see verify_checksums
        body = {k: v for k, v in meta.items() if k != "xxh3"}
        if meta.get("xxh3") != json_checksum(body):
            raise fail(
                "the metadata does not match its checksum: the file was corrupted or edited after "
                "it was written. Restore another step."
            )
    leaves = meta.get("leaves")
    if isinstance(leaves, dict):  # impl names of older jax ('fry') as every jax in range reads them
        for e in leaves.values():
            if isinstance(e, dict) and e.get("kind") == "key" and isinstance(e.get("impl"), str):
                with contextlib.suppress(JaxnetsError):  # an unknown name is reported below
                    e["impl"] = canonical_impl(e["impl"])
    problems = _problems(meta, version, step_of(step_dir))
    if problems:
        more = f"\n  ... and {len(problems) - _MAX_PROBLEMS} more" if len(problems) > _MAX_PROBLEMS else ""
        lines = "\n".join(f"  {p}" for _, p in problems[:_MAX_PROBLEMS])
        raise fail(f"inconsistent checkpoint metadata (corrupted or edited):\n{lines}{more}", problems[0][0])
    return meta


def _int(x: Any) -> bool:
    return type(x) is int


def _problems(meta: Mapping[str, Any], version: int, step: int | None) -> list[tuple[str | None, str]]:
    out: list[tuple[str | None, str]] = []
    if not _int(meta.get("step")) or (step is not None and meta["step"] != step):
        out.append((None, f"step: {meta.get('step')!r}, but the directory is step {step}"))
    try:
        keys = spec_keys(meta.get("spec"))  # type: ignore[arg-type]
    except (JaxnetsError, AttributeError, TypeError) as err:
        return out + [(None, f"spec: malformed tree structure ({err})")]
    leaves, groups = meta.get("leaves"), meta.get("groups")
    if not isinstance(leaves, dict) or not isinstance(groups, dict):
        return out + [(None, "leaves/groups: not JSON objects")]
    if list(leaves) != keys if version >= 2 else set(leaves) != set(keys):
        lost, extra = sorted(set(keys) - set(leaves)), sorted(set(leaves) - set(keys))
        return out + [
            (
                (lost + extra + [None])[0],
                f"leaves: do not match the tree spec (in the spec only: {lost[:5]}; in leaves "
                f"only: {extra[:5]}; or in another order)",
            )
        ]
    lengths: dict[str, int] = {}
    for name, g in groups.items():
        n: Any = g if version < 2 else (g.get("length") if isinstance(g, dict) else None)
        if type(n) is not int or not 0 <= n <= _MAX_DIM:
            out.append((GROUP_PREFIX + str(name), f"group {name}: malformed length {n!r}"))
            continue
        if version >= 2 and not _is_hex(g.get("xxh3")):
            out.append((GROUP_PREFIX + name, f"group {name}: malformed checksum {g.get('xxh3')!r}"))
        lengths[name] = n
    rows = _Rows(meta, out) if version >= 3 else None
    ends = {name: 0 for name in lengths}
    broken: set[str] = set()  # groups with a bad leaf: their later offsets would only echo it
    for key, e in leaves.items():
        why = _leaf_problem(e, version)
        if why is None and rows is not None:
            why = rows.problem(e)
        group = e.get("group") if isinstance(e, dict) else None
        if why is None and group is not None and group not in broken:
            size = _size(e)
            data_dtype = "uint32" if e["kind"] == "key" else e["dtype"]
            if group not in lengths:
                why = f"packed into group {group!r}, which is not stored"
            elif group != data_dtype:
                why = f"{data_dtype} data packed into the {group} group"
            elif e["offset"] != ends[group]:
                why = (
                    f"offset {e['offset']} in group {group}, but the leaves before it end at "
                    f"{ends[group]}"
                )
            else:
                ends[group] += size
        if why is not None:
            out.append((key, f"{key}: {why}"))
            if isinstance(group, str):
                broken.add(group)
    for name, n in lengths.items():
        if name not in broken and ends[name] != n:
            out.append((GROUP_PREFIX + name, f"group {name}: length {n}, but its leaves add up to {ends[name]}"))
    if rows is not None:
        rows.finish()
    metrics = meta.get("metrics")
    if metrics is not None and not (
        isinstance(metrics, dict)
        and all(type(v) in (int, float) for v in metrics.values())
    ):
        out.append((None, f"metrics: not a {{name: number}} object: {metrics!r:.200}"))
    return out


class _Rows:
    """The checks of a multi-process step's rows (format 3): ``processes`` and ``pgroups`` are
    well formed, and the pieces and per-process values of every packed leaf tile each process's
    row exactly, in leaf order, as :mod:`jaxnets.checkpoint._spread` lays them out."""

    def __init__(self, meta: Mapping[str, Any], out: list[tuple[str | None, str]]) -> None:
        self.out = out
        n, groups = meta.get("processes", 1), meta.get("pgroups", {})
        self.n = n if _int(n) and 1 <= n <= _MAX_DIM else 0
        if not self.n:
            out.append((None, f"processes: malformed process count {n!r}"))
        self.lengths: dict[str, int] = {}
        if not isinstance(groups, dict):
            out.append((None, "pgroups: not a JSON object"))
            groups = {}
        for name, g in groups.items():
            length: Any = g.get("length") if isinstance(g, dict) else None
            sums: Any = g.get("rows") if isinstance(g, dict) else None
            where = PGROUP_PREFIX + str(name)
            if not _int(length) or not 0 <= length <= _MAX_DIM:
                out.append((where, f"per-process group {name}: malformed length {length!r}"))
            elif not isinstance(sums, list) or len(sums) != self.n or not all(map(_is_hex, sums)):
                out.append((where, f"per-process group {name}: malformed row checksums {sums!r:.200}"))
            else:
                self.lengths[name] = length
        self.ends = {name: [0] * self.n for name in self.lengths}
        self.broken: set[str] = set()
        self.grids: dict[tuple[str, str], str | None] = {}

    def problem(self, e: dict[str, Any]) -> str | None:
        """What is wrong with one (already well-formed) leaf entry's rows or shards, or None."""
        if "shards" in e:
            shards = e["shards"]
            if "pgroup" in e or "group" in e or not isinstance(shards, list):
                return "malformed shards"
            if not all(isinstance(s, list) and len(s) == 2 and _is_hex(s[1]) for s in shards):
                return f"malformed shard checksums {shards!r:.200}"
            why = grid_problem([s[0] for s in shards], e["shape"])
            return None if why is None else f"shards: {why}"
        if "pgroup" not in e:
            return None
        name = e["pgroup"]
        if not isinstance(name, str):
            return f"malformed per-process group {name!r:.100}"
        if name in self.broken:
            return None  # its first bad leaf is reported; later offsets would only echo it
        data_dtype = "uint32" if e["kind"] == "key" else e["dtype"]
        why = self._row_problem(e, name, data_dtype)
        if why is not None:
            self.broken.add(name)
        return why

    def _row_problem(self, e: dict[str, Any], name: str, data_dtype: str) -> str | None:
        if "group" in e or e["kind"] == "py":
            return "packed twice"
        if name not in self.lengths:
            return f"packed into per-process group {name!r}, which is not stored"
        if name != data_dtype:
            return f"{data_dtype} data packed into the per-process {name} group"
        words = key_size(e["impl"]) if e["kind"] == "key" else 1
        ends = self.ends[name]
        if "offsets" in e:
            offsets = e["offsets"]
            if offsets != ends:
                return f"per-process offsets {offsets!r:.100} in group {name}, but the rows end at {ends}"
            size = math.prod(e["shape"]) * words
            self.ends[name] = [x + size for x in ends]
            return None
        stored = e.get("pieces")
        if not isinstance(stored, list) or not all(isinstance(s, list) and len(s) == 3 for s in stored):
            return f"malformed pieces {stored!r:.200}"
        indices = [s[2] for s in stored]
        grid = (str(e["shape"]), str(indices))  # leaves sharded alike share one check
        if grid not in self.grids:
            self.grids[grid] = grid_problem(indices, e["shape"])
        if self.grids[grid] is not None:
            return f"pieces: {self.grids[grid]}"
        for owner, offset, index in stored:
            if not _int(owner) or not 0 <= owner < self.n:
                return f"a piece of process {owner!r}, of {self.n}"
            if offset != ends[owner]:
                return f"a piece at offset {offset!r} of row {owner} in group {name}, but the row ends at {ends[owner]}"
            ends[owner] += volume(tuple(map(tuple, index))) * words
        return None

    def finish(self) -> None:
        for name, length in self.lengths.items():
            if name not in self.broken and max(self.ends[name], default=0) != length:
                self.out.append(
                    (PGROUP_PREFIX + name, f"per-process group {name}: length {length}, but its longest row adds up to {max(self.ends[name], default=0)}")
                )


def _is_hex(x: Any) -> bool:
    return isinstance(x, str) and _HEX16.fullmatch(x) is not None


def _size(e: Mapping[str, Any]) -> int:
    n = math.prod(e["shape"])
    return n * key_size(e["impl"]) if e["kind"] == "key" else n


def _leaf_problem(e: Any, version: int) -> str | None:
    """What is wrong with one leaf entry, or None."""
    if not isinstance(e, dict):
        return "not a JSON object"
    kind, shape, dtype = e.get("kind"), e.get("shape"), e.get("dtype")
    if kind not in KINDS:
        return f"unknown kind {kind!r}"
    if not isinstance(shape, list) or not all(_int(d) and 0 <= d <= _MAX_DIM for d in shape):
        return f"malformed shape {shape!r}"
    if math.prod(shape) > _MAX_DIM:
        return f"shape {shape} is impossibly large"
    if not isinstance(dtype, str):
        return f"malformed dtype {dtype!r}"
    if kind == "py":
        v = e.get("value")
        if shape or "group" in e or "pgroup" in e:
            return "a Python scalar with a shape or a group"
        t = type(v)
        if e.get("float") is True:  # nan/inf, stored as text (JSON has no such numbers)
            ok = t is str and v in ("nan", "inf", "-inf") and dtype == "float64"
        else:
            ok = (
                (t is bool and dtype == "bool")
                or (t is int and dtype in ("int64", "uint64", "object"))
                or (t is float and dtype == "float64")
                or (t is str and dtype.startswith("str"))
            )
        return None if ok else f"value {v!r:.100} does not fit dtype {dtype}"
    if kind == "key":
        try:
            key_size(str(e.get("impl")))
        except ValueError as err:
            return str(err)
        if not dtype.startswith("key<"):
            return f"a PRNG key with dtype {dtype}"
    if kind == "npscalar" and shape:
        return f"a numpy scalar with shape {shape}"
    if "group" in e:
        if not isinstance(e["group"], str) or not _int(e.get("offset")) or e["offset"] < 0:
            return f"malformed group/offset {e['group']!r}/{e.get('offset')!r}"
    elif ("pgroup" in e or "shards" in e) and version < 3:
        return "multi-process fields in a single-process format"
    elif "pgroup" in e or "shards" in e:
        pass  # checked with their rows (_Rows)
    elif version >= 2 and e.get("xxh3") is not None and not _is_hex(e.get("xxh3")):
        return f"malformed checksum {e.get('xxh3')!r}"
    return None


def stored_infos(meta: Mapping[str, Any]) -> dict[str, LeafInfo]:
    """``{key: LeafInfo}`` of every stored leaf, as :func:`jaxnets.core.structure.compare` takes."""
    return {k: LeafInfo(tuple(e["shape"]), e["dtype"]) for k, e in meta["leaves"].items()}


class ArraySpec(NamedTuple):
    """One entry of the orbax ``arrays`` item as the checked metadata describes it.

    Attributes:
      shape, dtype: what orbax must return (dtype as :func:`jaxnets.core.structure.dtype_name`).
      xxh3: the checksum of its bytes (C order), or None where none was stored.
      keys: the leaves stored in it (one, or every leaf of a packed group).
      rows: a per-process group's checksum of each row (process), else None.
      shards: an array saved by several processes: ``((index ranges, checksum), ...)`` of each
        distinct block, else None.
    """

    shape: tuple[int, ...]
    dtype: str
    xxh3: str | None
    keys: tuple[str, ...]
    rows: tuple[str, ...] | None = None
    shards: tuple[tuple[tuple[tuple[int, int], ...], str], ...] | None = None


def array_specs(meta: Mapping[str, Any], keys: list[str]) -> dict[str, ArraySpec]:
    """The orbax ``arrays`` entries that hold the leaves ``keys`` (of a checked ``meta``)."""
    members: dict[str, list[str]] = {}
    for k, e in meta["leaves"].items():
        if "group" in e:
            members.setdefault(GROUP_PREFIX + e["group"], []).append(k)
        elif "pgroup" in e:
            members.setdefault(PGROUP_PREFIX + e["pgroup"], []).append(k)
    out: dict[str, ArraySpec] = {}
    for k in keys:
        e = meta["leaves"][k]
        if e["kind"] == "py":
            continue
        if "pgroup" in e:
            name = PGROUP_PREFIX + e["pgroup"]
            if name not in out:
                g = meta["pgroups"][e["pgroup"]]
                shape = (meta["processes"], g["length"])
                out[name] = ArraySpec(shape, e["pgroup"], None, tuple(members[name]), rows=tuple(g["rows"]))
            continue
        shards = None
        if "shards" in e:
            shards = tuple((tuple((a, b) for a, b in idx), h) for idx, h in e["shards"])
        if "group" in e:
            name = GROUP_PREFIX + e["group"]
            if name not in out:
                g = meta["groups"][e["group"]]
                length, xxh3 = (g, None) if isinstance(g, int) else (g["length"], g["xxh3"])
                out[name] = ArraySpec((length,), e["group"], xxh3, tuple(members[name]))
        elif e["kind"] == "key":
            shape = (*e["shape"], key_size(e["impl"]))
            out[k] = ArraySpec(shape, "uint32", e.get("xxh3"), (k,), shards=shards)
        else:
            out[k] = ArraySpec(tuple(e["shape"]), e["dtype"], e.get("xxh3"), (k,), shards=shards)
    return out


def describe(name: str, spec: ArraySpec) -> str:
    """``"params.fc1.weight"`` or ``"the packed group float32 (params.a, params.b, ... 40 leaves)"``."""
    shown = ", ".join(spec.keys[:3]) + (f", ... {len(spec.keys)} leaves" if len(spec.keys) > 3 else "")
    if name.startswith(GROUP_PREFIX):
        return f"the packed group {name[len(GROUP_PREFIX):]} ({shown})"
    if name.startswith(PGROUP_PREFIX):
        return f"the per-process packed group {name[len(PGROUP_PREFIX):]} ({shown})"
    return name
