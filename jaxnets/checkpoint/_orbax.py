"""How jaxnets uses orbax: the manager it opens, and the arrays it reads back.

orbax writes synchronously here, in jaxnets' own background thread (:mod:`._background`), so that
its failures are raised, not logged, and the part of a save that blocks is jaxnets' to keep small.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import jax
import numpy as np

from jaxnets.checkpoint.meta import ARRAYS, GROUP_PREFIX, META, ArraySpec, stored_infos
from jaxnets.core.placement import Placer
from jaxnets.errors import CheckpointError

__all__ = ["open_manager", "read_arrays", "write_step"]


def open_manager(
    directory: str,
    *,
    max_to_keep: int | None,
    keep_best: int | None,
    best_metric: str | None,
    best_mode: str,
) -> Any:
    """An orbax ``CheckpointManager`` for a jaxnets checkpoint directory (created if missing).

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
    options = ocp.CheckpointManagerOptions(
        save_interval_steps=1,  # save_every is applied by jaxnets, before anything is copied
        enable_async_checkpointing=False,  # see the module docstring
        cleanup_tmp_directories=True,  # half-written steps of a killed process
        preservation_policy=pp.AnyPreservationPolicy(policies=policies),
        create=True,
    )
    try:
        return ocp.CheckpointManager(
            directory,
            options=options,
            item_handlers={ARRAYS: _arrays_handler(ocp), META: ocp.JsonCheckpointHandler()},
        )
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


def read_arrays(
    mgr: Any,
    step: int,
    step_dir: str,
    meta: Mapping[str, Any],
    specs: Mapping[str, ArraySpec],
    place: Placer,
) -> dict[str, Any]:
    """Reads the orbax ``arrays`` entries ``specs`` names: jax leaves stored alone straight onto
    their placement, packed groups and numpy leaves as numpy.

    Raises:
      CheckpointError: orbax cannot read them (a damaged step), naming the step.
    """
    import orbax.checkpoint as ocp

    infos = stored_infos(meta)
    restore_args: dict[str, Any] = {}
    for name in specs:
        e = None if name.startswith(GROUP_PREFIX) else meta["leaves"][name]
        if e is not None and e["kind"] in ("jax", "key"):
            sharding = place.sharding_or_default(name, infos[name])
            restore_args[name] = ocp.ArrayRestoreArgs(sharding=sharding)
        else:
            restore_args[name] = ocp.RestoreArgs(restore_type=np.ndarray)
    stored = {GROUP_PREFIX + g for g in meta["groups"]}
    stored.update(k for k, e in meta["leaves"].items() if e["kind"] != "py" and "group" not in e)
    try:
        out = mgr.restore(
            step,
            args=ocp.args.Composite(
                **{
                    ARRAYS: ocp.args.PyTreeRestore(
                        item={k: 0 for k in specs},
                        restore_args=restore_args,
                        partial_restore=len(specs) < len(stored),
                    )
                }
            ),
        )
        return dict(out[ARRAYS])
    except Exception as e:  # orbax/tensorstore raise assorted errors on damaged files
        raise CheckpointError(
            f"{step_dir} (step {step}): cannot read the arrays ({type(e).__name__}: {e}). The "
            "step is damaged; restore another step.",
            file=step_dir,
        ) from e
