"""The restore of one step, in two parts: :func:`prepare` (the metadata, the template check, where
every leaf goes) and :func:`read` (orbax's read, the checks, the leaves).

The manager runs them with an agreement between the processes before each (a multi-process job
must read with the same step, keys and global shardings everywhere; see :mod:`._processes`), so
that nothing collective starts unless every process is there, and a failure on one process is
raised on all.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import jax
import jax.numpy as jnp

from jaxnets.checkpoint import _layout, _orbax
from jaxnets.checkpoint._integrity import check_arrays, verify_checksums
from jaxnets.checkpoint.meta import array_specs, json_checksum, stored_infos
from jaxnets.core import progress as _progress
from jaxnets.core.placement import Device, Placer, ShardingSpec, placer
from jaxnets.core.registry import from_config
from jaxnets.core.structure import LeafInfo, StructureReport, compare
from jaxnets.core.tree import flatten, map_with_keys, tree_from_spec
from jaxnets.errors import CheckpointError, StateDictError

__all__ = ["Reading", "fingerprint", "prepare", "read"]


@dataclasses.dataclass(frozen=True)
class Reading:
    """A prepared restore (see :func:`prepare`)."""

    step: int
    step_dir: str
    meta: dict[str, Any]
    keys: list[str]  # the leaves restored
    fields_like: dict[str, Any]  # the template's trees (empty without like=)
    partial: bool
    place: Placer
    targets: dict[str, jax.sharding.Sharding | None]  # every array leaf's placement (None: default)
    only: tuple[str, ...] | None  # restore only these fields (export)


def prepare(
    step: int,
    step_dir: str,
    meta: dict[str, Any],
    *,
    fields_like: dict[str, Any],
    partial: bool,
    device: Device | None,
    sharding: ShardingSpec | None,
    only: tuple[str, ...] | None = None,
) -> Reading:
    """Checks the template and the placement against a step's (checked) metadata.

    Raises:
      StateDictError: ``like`` does not fit the checkpoint (lists every differing key).
      CheckpointError: a per-process leaf is restored in a job of another size than saved it.
      TypeError, ValueError: bad placement arguments.
    """
    stored = stored_infos(meta)
    like_flat = flatten(fields_like) if fields_like else {}
    if fields_like:
        in_fields = {k: v for k, v in stored.items() if k.split(".", 1)[0] in fields_like}
        report = compare(like_flat, in_fields)
        if partial:  # stored leaves the template lacks are skipped, nothing else
            report = StructureReport(report.missing, (), report.shape_mismatch, report.dtype_mismatch)
        if not report.clean:
            raise StateDictError(
                report.format(
                    expected="the template (like=)",
                    got=f"checkpoint step {step}",
                    hint="Restore without like= to get the checkpoint as saved, or pass "
                    "partial=True to skip stored entries the template lacks.",
                ),
                report,
                file=step_dir,
            )
    keys = list(like_flat) if partial else list(meta["leaves"])  # the same keys as the spec
    if only is not None:
        keys = [k for k in keys if k.split(".", 1)[0] in only]
    leaves = meta["leaves"]
    apart = [k for k in keys if "offsets" in leaves[k]]
    if apart and len(leaves[apart[0]]["offsets"]) != jax.process_count():
        shown = ", ".join(apart[:5]) + (f" ... ({len(apart)} in all)" if len(apart) > 5 else "")
        raise CheckpointError(
            f"{step_dir}: {shown} {'was' if len(apart) == 1 else 'were'} saved per process by "
            f"{len(leaves[apart[0]]['offsets'])} processes, and this job has "
            f"{jax.process_count()}: process p gets back what process p saved, so the job must "
            "have as many processes. Leave them out to restore the rest: "
            "restore(like={...}, partial=True) without them.",
            path=apart[0],
            file=step_dir,
        )
    place = placer(device=device, sharding=sharding, like=like_flat, keys=stored)
    targets = {
        k: place.sharding(k, stored[k]) for k in keys if leaves[k]["kind"] in ("jax", "key")
    }
    _check_fit(targets, stored)
    return Reading(step, step_dir, meta, keys, fields_like, partial, place, targets, only)


def _check_fit(targets: dict[str, jax.sharding.Sharding | None], stored: dict[str, LeafInfo]) -> None:
    """Every sharding fits its leaf's shape (before anything is read).

    Raises:
      ValueError: naming the keys, the shapes and the sharding.
    """
    fits: dict[tuple[int, tuple[int, ...]], str | None] = {}
    bad = []
    for k, s in targets.items():
        if s is None:
            continue
        shape = stored[k].shape
        if (id(s), shape) not in fits:
            try:
                check = getattr(s, "check_compatible_aval", None)  # the rank (not in every jax)
                if check is not None:
                    check(shape)
                s.shard_shape(shape)  # the divisibility
                fits[id(s), shape] = None
            except ValueError as e:  # jax: indivisible, or a spec longer than the rank
                fits[id(s), shape] = str(e).split("(full shape")[0].strip()
        why = fits[id(s), shape]
        if why is not None:
            bad.append(f"{k} {list(shape)}: {why}")
    if bad:
        more = f"\n  ... and {len(bad) - 5} more" if len(bad) > 5 else ""
        raise ValueError(
            "restore(): these shardings do not fit their leaves:\n  " + "\n  ".join(bad[:5]) + more
            + "\nPass a sharding tree or a function that returns None (the default device) for "
            "leaves a sharding does not fit."
        )


def _describe(s: jax.sharding.Sharding | None) -> str:
    """A sharding as the processes compare it: only those spanning several processes matter."""
    if s is None or s.is_fully_addressable:
        return "local"
    if isinstance(s, jax.sharding.NamedSharding):
        ids = [d.id for d in s.mesh.devices.flat]  # type: ignore[attr-defined]
        return f"NamedSharding {dict(s.mesh.shape)} {ids} {s.spec} {s.memory_kind}"
    return f"{type(s).__name__} {sorted(d.id for d in s.device_set)} {s!r}"  # type: ignore[attr-defined]


def fingerprint(r: Reading, *, verify: bool) -> tuple[dict[str, str], dict[str, Any]]:
    """What every process's restore must agree on, and the per-key details behind each hash."""
    seen: dict[int, str] = {}
    placement = {}
    for k, s in r.targets.items():
        if id(s) not in seen:
            seen[id(s)] = _describe(s)
        placement[k] = seen[id(s)]
    fields = {
        "step": str(r.step),
        "verify": str(verify),
        "leaves": json_checksum(r.keys),
        "placement": json_checksum(placement),
    }
    details = {"leaves": lambda: dict.fromkeys(r.keys, "restored"), "placement": lambda: placement}
    return fields, details


HINTS = {
    "placement": "A sharding that spans several processes' devices must be the same on each of "
    "them (device= and shardings of a process's own devices may differ).",
    "leaves": "like=/partial= select different leaves on different processes.",
    "step": "The processes see different steps: pass step= explicitly, or check that they share "
    "the checkpoint directory.",
}


def read(r: Reading, reader: Any, *, verify: bool, progress: bool | None = False) -> dict[str, Any]:
    """Reads, checks and rebuilds a prepared restore.

    ``progress``: a bar counted in the bytes this process reads while orbax reads the arrays
    (:mod:`jaxnets.core.progress`).

    Returns:
      The fields of a :class:`jaxnets.Checkpoint` (``step``, the trees, configs, metrics, extra).

    Raises:
      CheckpointError: the step is damaged (orbax cannot read it, shapes or checksums differ).
      RegistryError: the stored model/optimizer class is not registered in this process.
    """
    meta, step_dir = r.meta, r.step_dir
    specs = array_specs(meta, r.keys)
    # Leaves stored alone are read straight onto their placement (packed ones are placed by unpack).
    targets = {name: r.targets[name] or r.place.default for name in specs if name in r.targets}
    total = sum(math.prod(s.shape) * jnp.dtype(s.dtype).itemsize for s in specs.values())
    with _progress.progress(total, f"restoring {step_dir}", progress) as bar:
        start = _progress.bytes_read() if bar.enabled else 0  # no /proc read for a silent bar
        with _progress.polled(bar, lambda: _progress.bytes_read() - start):
            arrays = _orbax.read_arrays(reader, step_dir, meta, specs, targets) if specs else {}
    check_arrays(specs, arrays, step_dir=step_dir)  # before anything is sliced
    if verify:
        verify_checksums(
            specs, arrays, step_dir=step_dir, reread=lambda wanted: _orbax.read_regions(step_dir, wanted)
        )
    leaves = _layout.unpack(meta, arrays, r.keys, r.place, step_dir=step_dir)
    spec = meta["spec"]
    if r.only is not None:
        kept = [(k, c) for k, c in zip(spec["k"], spec["c"], strict=True) if k in r.only]
        spec = {**spec, "k": [k for k, _ in kept], "c": [c for _, c in kept]}
    # The template's containers where given, the stored ones elsewhere (a field saved from a type
    # jaxnets cannot rebuild by name, e.g. an nnx.State, rebuilds only from the template).
    rest = [(k, c) for k, c in zip(spec["k"], spec["c"], strict=True) if k not in r.fields_like]
    spec = {**spec, "k": [k for k, _ in rest], "c": [c for _, c in rest]}
    fields: dict[str, Any] = {} if r.partial else dict(tree_from_spec(spec, leaves))
    if r.fields_like:
        fields.update(map_with_keys(lambda k, _: leaves[k], r.fields_like))
    return {
        "step": r.step,
        **fields,
        "model": None if meta.get("model") is None else from_config(meta["model"], file=step_dir, path="model"),
        "optimizer": None
        if meta.get("optimizer") is None
        else from_config(meta["optimizer"], file=step_dir, path="optimizer"),
        "metrics": meta.get("metrics"),
        "extra": meta.get("extra"),
    }

