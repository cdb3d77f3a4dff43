"""Training checkpoints on orbax: save everything needed to resume, restore it anywhere.

``CheckpointManager`` wraps :class:`orbax.checkpoint.CheckpointManager`, so a checkpoint
directory is a real orbax checkpoint (one step directory per saved step, written to a temporary
directory and renamed when complete). What jaxnets adds:

* the exact training state comes back with no template: tree structure from
  :func:`jaxnets.core.tree.tree_spec` (NamedTuples, tuples, int keys), typed PRNG keys, Python
  scalars, the model and optimizer rebuilt from their registered configs;
* with a template (``like=``), every difference is reported at once by
  :func:`jaxnets.core.structure.compare`; nothing is ever filled in from the template;
* every stored array and the metadata carry XXH3 checksums, verified on restore
  (:mod:`jaxnets.checkpoint.meta`);
* placement on restore is chosen at restore time (:mod:`jaxnets.core.placement`), never taken
  from the saving machine;
* small leaves are packed into one buffer per dtype (orbax's per-leaf cost dominates otherwise)
  (:mod:`jaxnets.checkpoint._layout`);
* a background save blocks only while the arrays are taken out of the caller's reach, and its
  failure is raised at the next call (:mod:`jaxnets.checkpoint._background`): orbax's
  CheckpointManager only logs it.

See docs/checkpoints.md for the guide and the on-disk layout.
"""

from __future__ import annotations

import dataclasses
import math
import operator
import os
import sys
from collections.abc import Mapping
from typing import Any, Literal

import jax
import numpy as np

from jaxnets.checkpoint import _layout
from jaxnets.checkpoint._background import Saves
from jaxnets.checkpoint._export import write_model_file
from jaxnets.checkpoint.meta import (
    ARRAYS,
    FIELDS,
    GROUP_PREFIX,
    META,
    array_specs,
    check_arrays,
    read_meta,
    stored_infos,
    verify_checksums,
)
from jaxnets.core.placement import Device, Placer, ShardingSpec, placer
from jaxnets.core.registry import from_config, to_config
from jaxnets.core.structure import StructureReport, compare
from jaxnets.core.tree import flatten, map_with_keys, tree_from_spec
from jaxnets.errors import CheckpointError, JaxnetsError, StateDictError

__all__ = ["Checkpoint", "CheckpointManager"]

_DEFAULT_GROUP_BELOW = 1 << 20  # 1 MiB: above it, orbax's per-leaf cost is noise


@dataclasses.dataclass(frozen=True)
class Checkpoint:
    """One restored training state (what :meth:`CheckpointManager.restore` returns).

    Attributes:
      step: the step it was saved at.
      params, state, opt_state, rng: the trees as saved (or shaped like ``like=``); ``None`` when
        not saved. ``rng`` is a typed key if a typed key was saved.
      model: the model spec rebuilt from its config (``None`` if not saved).
      optimizer: the optimizer rebuilt from its config (``None`` if not saved).
      metrics: ``{name: float}`` given at save time, or ``None``.
      extra: the JSON data given as ``extra=`` (e.g. the data loader position), or ``None``.
    """

    step: int
    params: Any = None
    state: Any = None
    opt_state: Any = None
    rng: Any = None
    model: Any = None
    optimizer: Any = None
    metrics: dict[str, float] | None = None
    extra: Any = None


class CheckpointManager:
    """Saves and restores training states in an orbax checkpoint directory.

    Example::

        with jaxnets.CheckpointManager("ckpt", max_to_keep=3, best_metric="loss") as mgr:
            for step in range(n):
                ...
                mgr.save(step, params=params, state=state, opt_state=opt_state, rng=key,
                         model=model, optimizer=opt, metrics={"loss": loss}, extra={"epoch": e})
        ckpt = jaxnets.CheckpointManager("ckpt").restore()   # latest; no template needed

    Args:
      directory: the checkpoint directory (created if missing).
      max_to_keep: keep the latest N steps (``None``: keep all).
      keep_best: also keep the best N steps by ``best_metric`` (default 1 when ``best_metric`` is
        set). A step is deleted only when neither rule keeps it.
      best_metric: name of the metric (in ``save(metrics=...)``) that ranks steps.
      best_mode: ``"min"`` (e.g. a loss) or ``"max"`` (e.g. an accuracy).
      save_every: ``save`` writes only steps that are multiples of this (returns False otherwise).
      async_save: write in a background thread; ``save`` returns once the arrays are out of the
        caller's reach (docs/checkpoints.md, "Background saves").
      group_below: arrays smaller than this many bytes are packed into one buffer per dtype
        (0 disables packing).

    Raises:
      TypeError, ValueError: an option of the wrong type or value (the message says what is
        accepted).
      CheckpointError: the directory cannot be used.
    """

    def __init__(
        self,
        directory: str | os.PathLike[str],
        *,
        max_to_keep: int | None = None,
        keep_best: int | None = None,
        best_metric: str | None = None,
        best_mode: Literal["min", "max"] = "min",
        save_every: int = 1,
        async_save: bool = True,
        group_below: int = _DEFAULT_GROUP_BELOW,
    ) -> None:
        import orbax.checkpoint as ocp
        from orbax.checkpoint.checkpoint_managers import preservation_policy as pp

        if not isinstance(directory, (str, os.PathLike)):
            raise TypeError(
                f"directory must be a str or os.PathLike, got {type(directory).__name__}."
            )
        max_to_keep = _int_option("max_to_keep", max_to_keep, 1, none=True)
        keep_best = _int_option("keep_best", keep_best, 1, none=True)
        save_every = _int_option("save_every", save_every, 1)
        group_below = _int_option("group_below", group_below, 0)
        if best_metric is not None and not isinstance(best_metric, str):
            raise TypeError(f"best_metric must be a metric name (str) or None, got {best_metric!r}.")
        if best_mode not in ("min", "max"):
            raise ValueError(f"best_mode must be 'min' or 'max', got {best_mode!r}.")
        if keep_best is not None and best_metric is None:
            raise ValueError("keep_best needs best_metric= (the metric that ranks steps).")
        _bool_option("async_save", async_save)
        self.directory = os.path.abspath(os.fspath(directory))
        if os.path.exists(self.directory) and not os.path.isdir(self.directory):
            raise CheckpointError(
                f"{self.directory} is a file, not a checkpoint directory.", file=self.directory
            )
        self.best_metric, self.best_mode = best_metric, best_mode
        self.group_below = group_below
        self._ocp = ocp
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
            save_interval_steps=1,  # save_every is applied here, before anything is copied
            # orbax writes synchronously, in jaxnets' own background thread (_background.py):
            # its failures are then raised, not logged, and the blocking part is jaxnets'.
            enable_async_checkpointing=False,
            cleanup_tmp_directories=True,  # half-written steps of a killed process
            preservation_policy=pp.AnyPreservationPolicy(policies=policies),
            create=True,
        )
        try:
            self._mgr = ocp.CheckpointManager(
                self.directory,
                options=options,
                item_handlers={ARRAYS: _arrays_handler(ocp), META: ocp.JsonCheckpointHandler()},
            )
        except Exception as e:  # orbax/etils raise assorted errors on an unusable directory
            raise CheckpointError(
                f"{self.directory}: cannot open a checkpoint directory here: {e}",
                file=self.directory,
            ) from e
        self._async = async_save
        self._saves = Saves(self._failed)
        self._metrics: dict[int, dict[str, float] | None] = {}
        self._save_every = save_every
        self._plan: _layout.Plan | None = None  # the last save's layout, reused while it fits
        self._closed = False

    # --- saving -------------------------------------------------------------------------------
    def save(
        self,
        step: int,
        *,
        params: Any,
        state: Any = None,
        opt_state: Any = None,
        rng: Any = None,
        model: Any = None,
        optimizer: Any = None,
        metrics: Mapping[str, Any] | None = None,
        extra: Any = None,
        force: bool = False,
    ) -> bool:
        """Saves one training state as ``step`` (in the background when ``async_save``).

        Returns once every array is out of the caller's reach: changing, deleting or donating
        the arrays afterwards does not change what is saved.

        Args:
          step: the training step (int >= 0); steps must be new.
          params, state, opt_state: pytrees of arrays (any containers; optax states as they are).
          rng: a PRNG key (typed ``jax.random.key`` or legacy uint32), or a tree of them.
          model: the model spec (a registered ``jaxnets.nn.Module``), stored as its config.
          optimizer: a ``jaxnets.optim`` optimizer (or any registered config), stored as config.
          metrics: ``{name: finite number}``; ranks steps for ``best_metric``.
          extra: JSON-able data to resume with (data loader position, epoch, ...).
          force: save even if ``step`` is not a multiple of ``save_every``.

        Returns:
          True if the step is being saved, False if ``save_every`` skipped it.

        Raises:
          CheckpointError: the previous background save failed, the step exists, or (without
            ``async_save``) the write failed.
          TypeError, ValueError: a bad argument: a leaf that cannot be stored, metrics that are
            not finite numbers or lack ``best_metric``, ``extra`` that is not JSON-able.
          RegistryError: ``model`` or ``optimizer`` is not a registered config.
        """
        self._check_open()
        # One save at a time: the previous one is finished (and its failure raised) first.
        self._saves.collect(wait=True)
        step = _step_arg(step, "save")
        _bool_option("force", force)
        if not force and step % self._save_every:
            return False
        if step in self.all_steps():
            raise CheckpointError(
                f"{self.directory}: step {step} is already saved; steps are "
                "write-once (delete the directory or use a new step).",
                file=self._step_dir(step),
            )
        mets = self._metrics_arg(step, metrics)
        fields = {
            "step": step,
            "model": None if model is None else to_config(model, path=".model"),
            "optimizer": None if optimizer is None else to_config(optimizer, path=".optimizer"),
            "metrics": mets,
            "extra": None if extra is None else _layout.check_json(extra, "extra"),
        }
        record = {"params": params, "state": state, "opt_state": opt_state, "rng": rng}
        snap, self._plan = _layout.snapshot(record, group_below=self.group_below, plan=self._plan)
        ocp = self._ocp

        def write() -> None:  # in the background with async_save
            arrays, meta = _layout.finish(snap, fields)
            saved = self._mgr.save(
                step,
                args=ocp.args.Composite(
                    **{ARRAYS: ocp.args.PyTreeSave(arrays), META: ocp.args.JsonSave(meta)}
                ),
                metrics=mets,
                force=True,
            )
            # The step directory is the ground truth of a complete save.
            if not saved or not os.path.isdir(os.path.join(self._step_dir(step), META)):
                raise RuntimeError("orbax did not finalize the step")

        self._metrics[step] = mets
        self._saves.run(step, write, background=self._async)
        return True

    def _metrics_arg(self, step: int, metrics: Mapping[str, Any] | None) -> dict[str, float] | None:
        if metrics is None:
            return None
        if not isinstance(metrics, Mapping):
            raise TypeError(
                f"save(metrics=...) takes a mapping {{name: number}}, got {type(metrics).__name__}."
            )
        out: dict[str, float] = {}
        for k, v in metrics.items():
            try:
                out[str(k)] = float(v)
            except (TypeError, ValueError) as e:
                raise TypeError(f"save(metrics=...): {k!r} is {v!r}, not a number.") from e
            if not math.isfinite(out[str(k)]):
                raise ValueError(
                    f"save(metrics=...): {k!r} is {v!r}; metrics must be finite (they rank steps). "
                    "Put non-finite values in extra= as strings."
                )
        if self.best_metric is not None and self.best_metric not in out:
            raise ValueError(
                f"save(step={step}): metrics has no {self.best_metric!r} (best_metric); got "
                f"{sorted(out)}."
            )
        return out

    def _failed(self, step: int, error: BaseException) -> CheckpointError:
        """The error for a failed save of ``step`` (after forgetting it)."""
        self._metrics.pop(step, None)
        try:
            self._mgr.reload()
            latest = self._mgr.latest_step()
        except Exception:  # the disk that failed the save may fail this too; the error says so
            latest = "unknown"
        return CheckpointError(
            f"{self.directory}: saving step {step} failed ({type(error).__name__}: {error}). "
            f"The step is not in the checkpoint; latest complete step: {latest}. Check the disk "
            "(space, permissions) and save again.",
            file=self._step_dir(step),
        )

    # --- steps --------------------------------------------------------------------------------
    def _step_dir(self, step: int) -> str:
        return os.path.join(self.directory, str(step))

    def all_steps(self) -> list[int]:
        """Every step in the directory (complete ones; a save in progress is included)."""
        self._check_open()
        self._saves.collect(wait=False)
        running = self._saves.running  # first: a save that ends now is then in orbax's list
        steps = set(self._mgr.all_steps())
        if running is not None:
            steps.add(running)
        return sorted(steps)

    def latest_step(self) -> int | None:
        """The newest step, or None."""
        steps = self.all_steps()
        return steps[-1] if steps else None

    def best_step(self) -> int | None:
        """The step with the best ``best_metric`` (ties: the latest), or None.

        Without ``best_metric`` this is the latest step.
        """
        steps = self.all_steps()
        if self.best_metric is None:
            return steps[-1] if steps else None
        self._saves.collect(wait=True)  # the metrics of a step still being written are not final
        scored = []
        for s in self.all_steps():
            m = self._step_metrics(s)
            if m is not None and self.best_metric in m:
                v = float(m[self.best_metric])
                scored.append((v if self.best_mode == "max" else -v, s))
        return max(scored)[1] if scored else None

    def _step_metrics(self, step: int) -> dict[str, float] | None:
        if step not in self._metrics:
            self._metrics[step] = self.metadata(step).get("metrics")
        return self._metrics[step]

    def metadata(self, step: int | None = None) -> dict[str, Any]:
        """The stored JSON description of ``step``: leaves (kind, shape, dtype), configs, metrics.

        Raises:
          CheckpointError: no such step, or its metadata is corrupted or not jaxnets'.
          TypeError, ValueError: ``step`` is not an int >= 0 or None.
        """
        self._check_open()
        step = self._resolve(step, "metadata")
        return read_meta(self._step_dir(step))

    def _resolve(self, step: int | None, what: str) -> int:
        """The step ``step`` names (None: the latest), waiting for it if it is being written."""
        if step is not None:
            step = _step_arg(step, what)
        if step is None or step == self._saves.running:
            self._saves.collect(wait=True)
        steps = self.all_steps()
        if step is None:
            if not steps:
                raise CheckpointError(
                    f"{self.directory}: no checkpoint has been saved here.", file=self.directory
                )
            return steps[-1]
        if step not in steps:
            raise CheckpointError(
                f"{self.directory}: no step {step}; saved steps: {steps}.",
                file=self._step_dir(step),
            )
        return step

    # --- restoring ----------------------------------------------------------------------------
    def restore(
        self,
        step: int | None = None,
        *,
        like: Checkpoint | Mapping[str, Any] | None = None,
        partial: bool = False,
        device: Device | None = None,
        sharding: ShardingSpec | None = None,
        verify: bool = True,
    ) -> Checkpoint:
        """Restores a step (the latest by default).

        Args:
          step: which step; None for the latest.
          like: optional template ``{"params": ..., "state": ..., "opt_state": ..., "rng": ...}``
            (any subset) or a :class:`Checkpoint`. Its entries must match the stored ones exactly
            (keys, shapes, dtypes) and come back in its containers and on its leaves' shardings.
            Fields not in ``like`` come back as stored.
          partial: with ``like``, restore only the leaves ``like`` has (stored leaves it lacks are
            skipped, and fields not in ``like`` are not read). A leaf ``like`` has that is not
            stored is an error even then: nothing is ever taken from the template.
          device: put every array on this device (``"cpu"``, ``"gpu"`` or a ``jax.Device``).
          sharding: a ``Sharding`` for every array, a tree of them shaped like the checkpoint
            (``{"params": {...}}``; leaves not in it go to the default device), or
            ``fn(key, LeafInfo) -> Sharding | None`` called with each stored key
            (``"params.fc1.weight"``) and its shape/dtype.
            Without ``device``/``sharding``/``like``, arrays go to the default device.
          verify: check every checksum of the step (its metadata and every array read). The
            metadata's structure is checked even with ``verify=False``.

        Returns:
          A :class:`Checkpoint`.

        Raises:
          CheckpointError: no such step, not a jaxnets checkpoint, or the step is corrupted (a
            checksum or a metadata field does not match: names the step and the key).
          StateDictError: ``like`` does not fit the checkpoint (lists every differing key).
          RegistryError: the stored model/optimizer class is not registered in this process.
          TypeError, ValueError: a bad argument (the message says what is accepted).
        """
        self._check_open()
        like_fields = _like_fields(like)
        _bool_option("partial", partial)
        _bool_option("verify", verify)
        if partial and like is None:
            raise ValueError("restore(partial=True) needs like= (the leaves to restore).")
        self._saves.collect(wait=True)  # read a directory no save is writing to
        step = self._resolve(step, "restore")
        step_dir = self._step_dir(step)
        meta = read_meta(step_dir, verify=verify)
        stored = stored_infos(meta)
        like_flat = flatten(like_fields) if like_fields else {}
        if like_fields:
            in_fields = {k: v for k, v in stored.items() if _field(k) in like_fields}
            report = compare(like_flat, in_fields)
            if partial:  # stored leaves the template lacks are skipped, nothing else
                report = StructureReport(
                    report.missing, (), report.shape_mismatch, report.dtype_mismatch
                )
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
        place = placer(device=device, sharding=sharding, like=like_flat, keys=stored)
        arrays = self._read_arrays(step, meta, keys, place, verify=verify)
        leaves = _layout.unpack(meta, arrays, keys, place)
        # The template's containers where given, the stored ones elsewhere.
        fields: dict[str, Any] = {} if partial else dict(tree_from_spec(meta["spec"], leaves))
        if like_fields:
            fields.update(map_with_keys(lambda k, _: leaves[k], like_fields))
        return Checkpoint(
            step=step,
            **fields,
            model=None if meta.get("model") is None else from_config(meta["model"], file=step_dir),
            optimizer=None
            if meta.get("optimizer") is None
            else from_config(meta["optimizer"], file=step_dir),
            metrics=meta.get("metrics"),
            extra=meta.get("extra"),
        )

    def _read_arrays(
        self, step: int, meta: Mapping[str, Any], keys: list[str], place: Placer, *, verify: bool
    ) -> dict[str, Any]:
        """Reads the orbax entries holding ``keys``, checked against ``meta``."""
        ocp = self._ocp
        step_dir = self._step_dir(step)
        specs = array_specs(meta, keys)
        if not specs:
            return {}
        infos = stored_infos(meta)
        restore_args: dict[str, Any] = {}
        for name in specs:
            e = None if name.startswith(GROUP_PREFIX) else meta["leaves"][name]
            if e is not None and e["kind"] in ("jax", "key"):
                sharding = place.sharding_or_default(name, infos[name])
                restore_args[name] = ocp.ArrayRestoreArgs(sharding=sharding)
            else:
                restore_args[name] = ocp.RestoreArgs(restore_type=np.ndarray)
        every = array_specs(meta, list(meta["leaves"]))
        try:
            out = self._mgr.restore(
                step,
                args=ocp.args.Composite(
                    **{
                        ARRAYS: ocp.args.PyTreeRestore(
                            item={k: 0 for k in specs},
                            restore_args=restore_args,
                            partial_restore=len(specs) < len(every),
                        )
                    }
                ),
            )
            arrays = dict(out[ARRAYS])
        except Exception as e:  # orbax/tensorstore raise assorted errors on damaged files
            raise CheckpointError(
                f"{step_dir} (step {step}): cannot read the arrays ({type(e).__name__}: {e}). The "
                "step is damaged; restore another step.",
                file=step_dir,
            ) from e
        check_arrays(specs, arrays, step_dir=step_dir)
        if verify:
            verify_checksums(specs, arrays, step_dir=step_dir)
        return arrays

    # --- export ---------------------------------------------------------------------------------
    def export(
        self, step: int | Literal["best", "latest"] | None, path: str | os.PathLike[str]
    ) -> None:
        """Writes one step as a complete jaxnets model file (``jaxnets.save``).

        Args:
          step: a step number, ``"best"`` (by ``best_metric``), or ``"latest"``/None.
          path: the model file to write.

        Raises:
          CheckpointError: no such step, a damaged step, or the step has no model spec (save it
            with ``model=``).
          TypeError, ValueError: ``step`` or ``path`` is not one of the above.
        """
        if not isinstance(path, (str, os.PathLike)):
            raise TypeError(f"export(path=...) takes a str or os.PathLike, got {type(path).__name__}.")
        if step == "best":
            step = self.best_step()
            if step is None:
                raise CheckpointError(
                    f"{self.directory}: no step has the metric {self.best_metric!r}.",
                    file=self.directory,
                )
        elif step == "latest":
            step = None
        elif isinstance(step, str):
            raise ValueError(f"export(step={step!r}): use a step number, 'best' or 'latest'.")
        ckpt = self.restore(step, device="cpu")
        write_model_file(ckpt, path, step_dir=self._step_dir(ckpt.step))

    # --- lifetime -------------------------------------------------------------------------------
    def wait(self) -> None:
        """Blocks until the background save is done. Raises CheckpointError if it failed."""
        self._check_open()
        self._saves.collect(wait=True)

    def close(self) -> None:
        """Waits for the background save, then releases orbax's resources. Raises if it failed."""
        if self._closed:
            return
        try:
            self._saves.collect(wait=True)
        finally:
            self._closed = True
            self._mgr.close()

    def _check_open(self) -> None:
        if self._closed:
            raise CheckpointError(
                f"{self.directory}: this CheckpointManager is closed.", file=self.directory
            )

    def __enter__(self) -> CheckpointManager:
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if exc_type is None:
            self.close()
            return
        try:  # an error is already propagating: do not hide it behind a save failure
            self.close()
        except JaxnetsError as e:
            print(f"jaxnets: {e}", file=sys.stderr)

    def __repr__(self) -> str:
        steps = "<closed>" if self._closed else sorted(self._mgr.all_steps())
        return f"CheckpointManager({self.directory!r}, steps={steps})"


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


def _int_option(name: str, v: Any, minimum: int, *, none: bool = False) -> Any:
    if v is None and none:
        return None
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
        allowed = f"an int >= {minimum}" + (" or None" if none else "")
        raise TypeError(f"{name} must be {allowed}, got {type(v).__name__} {v!r}.")
    if v < minimum:
        raise ValueError(f"{name} must be >= {minimum}{' or None' if none else ''}, got {v}.")
    return int(v)


def _bool_option(name: str, v: Any) -> None:
    if not isinstance(v, bool):
        raise TypeError(f"{name} must be True or False, got {type(v).__name__} {v!r}.")


def _step_arg(step: Any, what: str) -> int:
    """``step`` as an int >= 0; TypeError/ValueError saying so otherwise."""
    try:
        if isinstance(step, bool):
            raise TypeError
        n = operator.index(step)
    except TypeError:
        raise TypeError(
            f"{what}(step=...) takes an int >= 0"
            f"{'' if what == 'save' else ' or None (the latest)'}, got {type(step).__name__} "
            f"{step!r}."
        ) from None
    if n < 0:
        raise ValueError(f"{what}(step={n}): steps are integers >= 0.")
    return n


def _like_fields(like: Any) -> dict[str, Any]:
    if like is None:
        return {}
    if isinstance(like, Checkpoint):
        return {f: getattr(like, f) for f in FIELDS if getattr(like, f) is not None}
    if not isinstance(like, Mapping):
        raise TypeError(
            "restore(like=...) takes a Checkpoint or a mapping with any of "
            f"{', '.join(map(repr, FIELDS))} (e.g. {{'params': params}}), got {type(like).__name__}."
        )
    unknown = sorted(map(repr, set(like) - set(FIELDS)))
    if unknown:
        raise ValueError(
            f"restore(like=...): unknown entries {', '.join(unknown)}; use any of "
            f"{', '.join(map(repr, FIELDS))}."
        )
    return {k: v for k, v in like.items() if v is not None}


def _field(key: str) -> str:
    return key.split(".", 1)[0]
