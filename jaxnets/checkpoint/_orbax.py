"""How jaxnets uses orbax: the manager it opens, and the arrays it reads back.

orbax writes synchronously here, in jaxnets' own background thread (:mod:`._background`), so that
its failures are raised, not logged, and the part of a save that blocks is jaxnets' to keep small.

Reads go through orbax's PyTree handler, not its manager: the manager's restore ends with a
barrier across processes, and a process that fails before it (a damaged file) would leave the
others waiting there for ever. jaxnets' own agreements (:mod:`._processes`) order the processes
instead, with a timeout. In a multi-process job the manager is opened with every process
``active``, which makes orbax's own barriers (inside a save) jax.distributed barriers with
orbax's timeout, not device collectives that cannot time out.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jax
import numpy as np

from jaxnets.checkpoint.meta import ARRAYS, META, ArraySpec
from jaxnets.errors import CheckpointError

__all__ = ["array_reader", "open_manager", "read_arrays", "read_regions", "write_step"]


def open_manager(
    directory: str,
    *,
    max_to_keep: int | None,
    keep_best: int | None,
    best_metric: str | None,
    best_mode: str,
    processes: int = 1,
) -> Any:
    """An orbax ``CheckpointManager`` for a jaxnets checkpoint directory (created if missing; with
    several ``processes``, process 0 must have created it).

    Raises:
      CheckpointError: orbax cannot use the directory.
    """
    import orbax.checkpoint as ocp
    from orbax.checkpoint.checkpoint_managers import preservation_policy as pp

    policies: list[Any] = [pp.LatestN(n=max_to_keep)]
    if best_metric is not None:
        sign = 1.0 if best_mode == "max" else -1.0
        policies.append(
            pp.BestN(
                get_metric_fn=lambda m: sign * float(m[best_metric]),
                n=keep_best or 1,
                keep_checkpoints_without_metrics=False,
            )
        )
    multi = ocp.options.MultiprocessingOptions(
        active_processes=set(range(processes)) if processes > 1 else None
    )
    options = ocp.CheckpointManagerOptions(
        save_interval_steps=1,  # save_every is applied by jaxnets, before anything is copied
        enable_async_checkpointing=False,  # see the module docstring
        cleanup_tmp_directories=True,  # half-written steps of a killed process
        preservation_policy=pp.AnyPreservationPolicy(policies=policies),
        create=processes == 1,  # orbax refuses create=True with active_processes
        multiprocessing_options=multi,
    )
    try:
        mgr = ocp.CheckpointManager(
            directory,
            options=options,
            item_handlers={ARRAYS: _arrays_handler(ocp), META: ocp.JsonCheckpointHandler()},
        )
        # orbax deletes the half-written steps of a killed save in a background thread, and
        # waits for it only in its own save; reads here bypass that (see the module docstring),
        # so wait now: the directory is clean once it is open (docs/checkpoints.md, "Crashes").
        getattr(mgr, "_maybe_await_cleanup_tmp_directory", lambda: None)()
        return mgr
    except Exception as e:  # orbax/etils raise assorted errors on an unusable directory
        raise CheckpointError(
            f"{directory}: cannot open a checkpoint directory here: {e}", file=directory
        ) from e


def _arrays_handler(ocp: Any) -> Any:
    """orbax's PyTree handler, minus the copy of numpy leaves before a write.

    Every numpy array jaxnets hands orbax is one it owns (packed buffers, copied numpy leaves,
    pinned views), so orbax's own defensive copy would only cost time.
    """
    registry = ocp.type_handlers.create_type_handler_registry(
        (np.ndarray, ocp.type_handlers.NumpyHandler(deepcopy_host_arrays=False)),
        (jax.Array, ocp.type_handlers.get_type_handler(jax.Array)),
    )
    return ocp.PyTreeCheckpointHandler(type_handler_registry=registry)


def write_step(
    mgr: Any,
    step: int,
    step_dir: str,
    arrays: Mapping[str, Any],
    meta: Mapping[str, Any],
    metrics: Mapping[str, float] | None,
) -> None:
    """Writes one step (synchronously) and checks that it is complete on disk.

    Raises:
      whatever orbax or the OS raise; RuntimeError when orbax returns without the step.
    """
    import orbax.checkpoint as ocp

    saved = mgr.save(
        step,
        args=ocp.args.Composite(
            **{ARRAYS: ocp.args.PyTreeSave(dict(arrays)), META: ocp.args.JsonSave(dict(meta))}
        ),
        metrics=metrics,
        force=True,
    )
    # The step directory is the ground truth of a complete save.
    if not saved or not os.path.isdir(os.path.join(step_dir, META)):
        raise RuntimeError("orbax did not finalize the step")


def array_reader() -> Any:
    """orbax's PyTree handler for reading the ``arrays`` item of a step (no barriers)."""
    import orbax.checkpoint as ocp

    return _arrays_handler(ocp)


def read_arrays(
    reader: Any,
    step_dir: str,
    meta: Mapping[str, Any],
    specs: Mapping[str, ArraySpec],
    targets: Mapping[str, Any],
) -> dict[str, Any]:
    """Reads the orbax ``arrays`` entries ``specs`` names: those in ``targets`` (jax leaves stored
    alone) straight onto their sharding, each process reading only its shards; packed groups and
    numpy leaves whole, as numpy.

    Args:
      reader: from :func:`array_reader`.
      step_dir: the step directory.
      meta: its checked metadata.
      specs: the entries to read (:func:`jaxnets.checkpoint.meta.array_specs`).
      targets: ``{name: jax.sharding.Sharding}``.

    Raises:
      CheckpointError: orbax cannot read them (a damaged step), naming the step.
    """
    import orbax.checkpoint as ocp

    restore_args: dict[str, Any] = {}
    for name in specs:
        if name in targets:
            restore_args[name] = ocp.ArrayRestoreArgs(sharding=targets[name])
        else:
            restore_args[name] = ocp.RestoreArgs(restore_type=np.ndarray)
    stored = len(meta["groups"]) + len(meta.get("pgroups", {}))
    stored += sum(1 for e in meta["leaves"].values() if e["kind"] != "py" and "group" not in e and "pgroup" not in e)
    try:
        out = reader.restore(
            Path(step_dir) / ARRAYS,
            args=ocp.args.PyTreeRestore(
                item={k: 0 for k in specs},
                restore_args=restore_args,
                partial_restore=len(specs) < stored,
            ),
        )
        return dict(out)
    except Exception as e:  # orbax/tensorstore raise assorted errors on damaged files
        step = Path(step_dir).name
        raise CheckpointError(
            f"{step_dir} (step {step}): cannot read the arrays ({type(e).__name__}: {e}). The "
            "step is damaged; restore another step.",
            file=step_dir,
        ) from e


def _region_handler(ocp: Any) -> Any:
    """A handler that reads only given regions of stored arrays (tensorstore slices), through
    orbax's public TypeHandler API: what :func:`read_regions` uses."""
    import asyncio

    import tensorstore as ts

    class Regions(ocp.type_handlers.NumpyHandler):  # type: ignore[misc, name-defined]
        async def deserialize(self, infos: Any, args: Any = None) -> Any:
            out = []
            for info, arg in zip(infos, args, strict=True):
                await info.await_path_creation()
                tspec = ocp.type_handlers.get_json_tspec_read(info, use_ocdbt=info.is_ocdbt_checkpoint)
                t = await ts.open(ts.Spec(tspec), open=True, context=info.ts_context)
                parts = await asyncio.gather(*(t[r].read() for r in arg.regions))
                # One flat array per entry (orbax maps the result over its tree): split by the caller.
                out.append(np.concatenate([np.asarray(p).reshape(-1) for p in parts]) if parts else np.zeros(0))
            return out

    return Regions()


class _Regions:
    """The restore type that selects :func:`_region_handler` (a marker, never instantiated)."""


def read_regions(step_dir: str, regions: Mapping[str, list[tuple[slice, ...]]]) -> dict[str, tuple[np.ndarray, ...]]:
    """Reads only the given regions of stored arrays, as host arrays: the stored pieces of an
    array saved by several processes that no process holds whole after a restore, read again in
    the layout they were saved in, to check their checksums (:mod:`._integrity`).

    Args:
      step_dir: the step directory.
      regions: ``{array name: [index (tuple of slices), ...]}``.

    Returns:
      ``{array name: (the region's data, ...)}`` in the order asked.

    Raises:
      CheckpointError: orbax cannot read them (a damaged step), naming the step.
    """
    import dataclasses

    import orbax.checkpoint as ocp

    @dataclasses.dataclass
    class RegionArgs(ocp.RestoreArgs):  # type: ignore[misc, name-defined]
        regions: list[tuple[slice, ...]] = dataclasses.field(default_factory=list)

    registry = ocp.type_handlers.create_type_handler_registry(
        (_Regions, _region_handler(ocp)), (jax.Array, ocp.type_handlers.get_type_handler(jax.Array))
    )
    handler = ocp.PyTreeCheckpointHandler(type_handler_registry=registry)
    try:
        out = handler.restore(
            Path(step_dir) / ARRAYS,
            args=ocp.args.PyTreeRestore(
                item={k: 0 for k in regions},
                restore_args={k: RegionArgs(restore_type=_Regions, regions=list(r)) for k, r in regions.items()},
                partial_restore=True,
            ),
        )
    except Exception as e:  # orbax/tensorstore raise assorted errors on damaged files
        raise CheckpointError(
            f"{step_dir} (step {Path(step_dir).name}): cannot read the arrays ({type(e).__name__}: "
            f"{e}). The step is damaged; restore another step.",
            file=step_dir,
        ) from e
    finally:
        handler.close()
    got = {}
    for k, rs in regions.items():
        flat, at, parts = np.asarray(out[k]), 0, []
        for r in rs:
            shape = tuple(sl.stop - sl.start for sl in r)
            n = int(np.prod(shape))
            parts.append(flat[at : at + n].reshape(shape))
            at += n
        got[k] = tuple(parts)
    return got
