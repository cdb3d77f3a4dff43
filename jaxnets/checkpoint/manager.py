"""Training checkpoints on orbax: save everything needed to resume, restore it anywhere.

``CheckpointManager`` wraps :class:`orbax.checkpoint.CheckpointManager`, so a checkpoint
directory is a real orbax checkpoint (one step directory per saved step, written to a temporary
directory and renamed when complete). What jaxnets adds:

* the exact training state comes back with no template: tree structure from
  :func:`jaxnets.core.tree.tree_spec` (NamedTuples, tuples, int keys), typed PRNG keys, Python
  scalars, the model and optimizer rebuilt from their registered configs;
* with a template (``like=``), every difference is reported at once by
  :func:`jaxnets.core.structure.compare`; nothing is ever filled in from the template;
* placement on restore is chosen at restore time (``device=`` or ``sharding=``), never taken
  from the saving machine;
* small leaves are packed into one buffer per dtype (orbax's per-leaf cost dominates otherwise);
* an error in a background save is raised at the next call, ``wait()`` or ``close()``, and
  reported at interpreter exit: orbax's CheckpointManager only logs it.

See docs/checkpoints.md for the guide and the on-disk layout.
"""

from __future__ import annotations

import atexit
import dataclasses
import logging
import os
import sys
import threading
import weakref
from collections.abc import Mapping
from typing import Any, Literal

import jax

from jaxnets.checkpoint import _layout
from jaxnets.checkpoint._placement import ShardingSpec, placer
from jaxnets.core.registry import from_config, to_config
from jaxnets.core.structure import StructureReport, compare
from jaxnets.core.tree import flatten, map_with_keys, spec_keys, tree_from_spec
from jaxnets.errors import CheckpointError, JaxnetsError, StateDictError

__all__ = ["Checkpoint", "CheckpointManager"]

_ARRAYS, _META = "arrays", "meta"
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


class _ErrorCatcher(logging.Handler):
    """Keeps the exceptions orbax logs (and swallows) while finalizing a background save."""

    def __init__(self) -> None:
        super().__init__(level=logging.ERROR)
        self.errors: list[BaseException] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.exc_info and record.exc_info[1] is not None:
            self.errors.append(record.exc_info[1])


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
      async_save: write in a background thread; ``save`` returns once arrays are copied to host.
      group_below: arrays smaller than this many bytes are packed into one buffer per dtype
        (0 disables packing).

    Raises:
      CheckpointError: bad options, or the directory cannot be used.
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

        if best_mode not in ("min", "max"):
            raise CheckpointError(f"best_mode must be 'min' or 'max', got {best_mode!r}.")
        for name, v in (("max_to_keep", max_to_keep), ("keep_best", keep_best)):
            if v is not None and v < 1:
                raise CheckpointError(f"{name} must be >= 1 or None, got {v}.")
        if keep_best is not None and best_metric is None:
            raise CheckpointError("keep_best needs best_metric= (the metric that ranks steps).")
        if save_every < 1:
            raise CheckpointError(f"save_every must be >= 1, got {save_every}.")
        self.directory = os.path.abspath(os.fspath(directory))
        if os.path.exists(self.directory) and not os.path.isdir(self.directory):
            raise CheckpointError(
                f"{self.directory} is a file, not a checkpoint directory.", file=self.directory
            )
        self.best_metric, self.best_mode = best_metric, best_mode
        self.group_below = int(group_below)
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
            save_interval_steps=save_every,
            enable_async_checkpointing=async_save,
            cleanup_tmp_directories=True,  # half-written steps of a killed process
            preservation_policy=pp.AnyPreservationPolicy(policies=policies),
            create=True,
        )
        self._catcher = _ErrorCatcher()
        logging.getLogger("absl").addHandler(self._catcher)
        try:
            self._mgr = ocp.CheckpointManager(
                self.directory,
                options=options,
                item_handlers={_ARRAYS: _arrays_handler(ocp), _META: ocp.JsonCheckpointHandler()},
            )
        except Exception as e:
            logging.getLogger("absl").removeHandler(self._catcher)
            raise CheckpointError(
                f"{self.directory}: cannot open a checkpoint directory here: {e}",
                file=self.directory,
            ) from e
        self._lock = threading.Lock()
        self._pending: int | None = None  # step of the save that may still be running
        self._metrics: dict[int, dict[str, float] | None] = {}
        self._save_every = save_every
        self._plan: _layout.Plan | None = None  # the last save's layout, reused while it fits
        self._closed = False
        _watch_at_exit(self)

    # --- errors of background saves -----------------------------------------------------------
    def _step_dir(self, step: int) -> str:
        return os.path.join(self.directory, str(step))

    def _check(self, *, wait: bool) -> None:
        """Raises a CheckpointError if the last background save failed (waiting for it if asked)."""
        with self._lock:
            step = self._pending
            if step is None:
                return
            if not wait and self._mgr.is_saving_in_progress():
                return
            self._pending = None
            errors: list[BaseException] = []
            try:
                self._mgr.wait_until_finished()
                self._mgr.check_for_errors()
            except Exception as e:  # orbax raises its own and the OS's errors here
                errors.append(e)
            # orbax logs (and swallows) the write's own error and skips the final rename, so the
            # step directory is the ground truth; the logged errors only explain a failure (the
            # absl logger is shared, so they may also come from elsewhere).
            logged, self._catcher.errors = self._catcher.errors, []
            finalized = os.path.isdir(os.path.join(self._step_dir(step), _META))
            if not finalized:
                errors += logged
            if errors or not finalized:
                self._mgr.reload()
                why = "; ".join(dict.fromkeys(f"{type(e).__name__}: {e}" for e in errors))
                why = why or "it was not finalized"
                _FAILED.append(f"step {step} in {self.directory}")
                raise CheckpointError(
                    f"{self.directory}: saving step {step} failed in the background ({why}). "
                    f"The step is not in the checkpoint; latest complete step: "
                    f"{self._mgr.latest_step()}. Check the disk (space, permissions) and save again.",
                    file=self._step_dir(step),
                ) from (errors[0] if errors else None)

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

        Args:
          step: the training step (int >= 0); steps must be new.
          params, state, opt_state: pytrees of arrays (any containers; optax states as they are).
          rng: a PRNG key (typed ``jax.random.key`` or legacy uint32), or a tree of them.
          model: the model spec (a registered ``jaxnets.nn.Module``), stored as its config.
          optimizer: a ``jaxnets.optim`` optimizer (or any registered config), stored as config.
          metrics: ``{name: number}``; ranks steps for ``best_metric``.
          extra: JSON-able data to resume with (data loader position, epoch, ...).
          force: save even if ``step`` is not a multiple of ``save_every``.

        Returns:
          True if the step is being saved, False if ``save_every`` skipped it.

        Raises:
          CheckpointError: the previous background save failed, the step exists, a leaf cannot
            be stored, metrics/extra are not JSON-able, or orbax refused the save.
          RegistryError: ``model`` or ``optimizer`` is not a registered config.
        """
        self._check_open()
        # orbax waits for the previous save here anyway; checking it first keeps its error.
        self._check(wait=True)
        step = int(step)
        if step < 0:
            raise CheckpointError(f"save(step={step}): steps are integers >= 0.")
        if not force and step % self._save_every:
            return False
        if step in self.all_steps():
            raise CheckpointError(
                f"{self.directory}: step {step} is already saved; steps are "
                "write-once (delete the directory or use a new step).",
                file=self._step_dir(step),
            )
        mets = None
        if metrics is not None:
            mets = _layout.check_json(
                {str(k): float(v) for k, v in dict(metrics).items()}, "metrics"
            )
            if self.best_metric is not None and self.best_metric not in mets:
                raise CheckpointError(
                    f"save(step={step}): metrics has no {self.best_metric!r} (best_metric); got "
                    f"{sorted(mets)}."
                )
        record = {"params": params, "state": state, "opt_state": opt_state, "rng": rng}
        arrays, meta, self._plan = _layout.pack(
            record, group_below=self.group_below, plan=self._plan
        )
        meta.update(
            step=step,
            model=None if model is None else to_config(model, path=".model"),
            optimizer=None if optimizer is None else to_config(optimizer, path=".optimizer"),
            metrics=mets,
            extra=None if extra is None else _layout.check_json(extra, "extra"),
        )
        if self._plan.py:  # the rest of meta was checked when the plan was made
            _layout.check_json(meta["leaves"], "Python scalar leaves")
        ocp = self._ocp
        with self._lock:
            try:
                saved = self._mgr.save(
                    step,
                    args=ocp.args.Composite(
                        **{_ARRAYS: ocp.args.PyTreeSave(arrays), _META: ocp.args.JsonSave(meta)}
                    ),
                    metrics=mets,
                    force=True,
                )
            except Exception as e:
                raise CheckpointError(
                    f"{self.directory}: saving step {step} failed: {type(e).__name__}: {e}",
                    file=self._step_dir(step),
                ) from e
            if saved:
                self._pending = step
                self._metrics[step] = mets
        return bool(saved)

    # --- steps --------------------------------------------------------------------------------
    def all_steps(self) -> list[int]:
        """Every step in the directory (complete ones; a save in progress is included)."""
        self._check_open()
        return sorted(self._mgr.all_steps())

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
        scored = []
        for s in steps:
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
        """The stored JSON description of ``step``: leaves (kind, shape, dtype), configs, metrics."""
        self._check_open()
        self._check(wait=False)
        step = self._resolve(step)
        ocp = self._ocp
        try:
            out = self._mgr.restore(
                step, args=ocp.args.Composite(**{_META: ocp.args.JsonRestore()})
            )
        except Exception as e:
            raise CheckpointError(
                f"{self._step_dir(step)}: cannot read the checkpoint metadata: {e}",
                file=self._step_dir(step),
            ) from e
        meta = out[_META]
        if not isinstance(meta, dict) or meta.get("format") != _layout.FORMAT:
            raise CheckpointError(
                f"{self._step_dir(step)}: not a jaxnets checkpoint (no jaxnets metadata).",
                file=self._step_dir(step),
            )
        if int(meta.get("version", 0)) > _layout.VERSION:
            raise CheckpointError(
                f"{self._step_dir(step)}: written by a newer jaxnets (checkpoint "
                f"format {meta.get('version')}); upgrade jaxnets.",
                file=self._step_dir(step),
            )
        return meta

    def _resolve(self, step: int | None) -> int:
        if step is None:
            self._check(wait=True)
            latest = self.latest_step()
            if latest is None:
                raise CheckpointError(
                    f"{self.directory}: no checkpoint has been saved here.", file=self.directory
                )
            return latest
        step = int(step)
        if step not in self.all_steps():
            raise CheckpointError(
                f"{self.directory}: no step {step}; saved steps: {self.all_steps()}.",
                file=self._step_dir(step),
            )
        self._check(wait=step == self._pending)
        return step

    # --- restoring ----------------------------------------------------------------------------
    def restore(
        self,
        step: int | None = None,
        *,
        like: Checkpoint | Mapping[str, Any] | None = None,
        partial: bool = False,
        device: str | jax.Device | None = None,
        sharding: ShardingSpec | None = None,
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

        Returns:
          A :class:`Checkpoint`.

        Raises:
          CheckpointError: no such step, the directory is not a jaxnets checkpoint, or orbax
            cannot read it.
          StateDictError: ``like`` does not fit the checkpoint (lists every differing key).
          RegistryError: the stored model/optimizer class is not registered in this process.
        """
        self._check_open()
        step = self._resolve(step)
        meta = self.metadata(step)
        spec = meta["spec"]
        stored = _layout.stored_infos(meta)
        if partial and like is None:
            raise CheckpointError("restore(partial=True) needs like= (the leaves to restore).")
        like_fields = _like_fields(like)
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
                    file=self._step_dir(step),
                )
        if partial:
            keys = list(like_flat)
        else:
            keys = spec_keys(spec)
        place = placer(
            device=device, sharding=sharding, like_flat=like_flat, stored_keys=list(stored)
        )
        arrays = self._read_arrays(step, meta, keys, place)
        leaves = _layout.unpack(meta, arrays, keys, place)
        # The template's containers where given, the stored ones elsewhere.
        fields: dict[str, Any] = {} if partial else dict(tree_from_spec(spec, leaves))
        if like_fields:
            fields.update(map_with_keys(lambda k, _: leaves[k], like_fields))
        return Checkpoint(
            step=step,
            **fields,
            model=None
            if meta.get("model") is None
            else from_config(meta["model"], file=self._step_dir(step)),
            optimizer=None
            if meta.get("optimizer") is None
            else from_config(meta["optimizer"], file=self._step_dir(step)),
            metrics=meta.get("metrics"),
            extra=meta.get("extra"),
        )

    def _read_arrays(
        self, step: int, meta: Mapping[str, Any], keys: list[str], place: Any
    ) -> dict[str, Any]:
        import numpy as np

        ocp = self._ocp
        wanted = _layout.needed_arrays(meta, keys)
        if not wanted:
            return {}
        restore_args: dict[str, Any] = {}
        for name in wanted:
            if name.startswith(_layout.GROUP_PREFIX):
                restore_args[name] = ocp.RestoreArgs(restore_type=np.ndarray)
                continue
            e = meta["leaves"][name]
            if e["kind"] in ("jax", "key"):
                info = _layout.stored_infos({"leaves": {name: e}})[name]
                restore_args[name] = ocp.ArrayRestoreArgs(sharding=place(name, info))
            else:
                restore_args[name] = ocp.RestoreArgs(restore_type=np.ndarray)
        all_names = set(_layout.needed_arrays(meta, list(meta["leaves"])))
        try:
            out = self._mgr.restore(
                step,
                args=ocp.args.Composite(
                    **{
                        _ARRAYS: ocp.args.PyTreeRestore(
                            item={k: 0 for k in wanted},
                            restore_args=restore_args,
                            partial_restore=len(wanted) < len(all_names),
                        )
                    }
                ),
            )
        except Exception as e:
            raise CheckpointError(
                f"{self._step_dir(step)}: cannot read the arrays: {type(e).__name__}: {e}",
                file=self._step_dir(step),
            ) from e
        return dict(out[_ARRAYS])

    # --- export ---------------------------------------------------------------------------------
    def export(
        self, step: int | Literal["best", "latest"] | None, path: str | os.PathLike[str]
    ) -> None:
        """Writes one step as a complete jaxnets model file (``jaxnets.save``).

        Args:
          step: a step number, ``"best"`` (by ``best_metric``), or ``"latest"``/None.
          path: the model file to write.

        Raises:
          CheckpointError: no such step, or the step has no model spec (save it with ``model=``).
        """
        if step == "best":
            step = self.best_step()
            if step is None:
                raise CheckpointError(
                    f"{self.directory}: no step has the metric {self.best_metric!r}."
                )
        elif step == "latest":
            step = None
        ckpt = self.restore(step, device="cpu")
        if ckpt.model is None:
            raise CheckpointError(
                f"{self._step_dir(ckpt.step)}: step {ckpt.step} was saved without model=, "
                "so it cannot become a model file.",
                file=self._step_dir(ckpt.step),
            )
        from jaxnets.io import save

        save(
            os.fspath(path),
            ckpt.model,
            ckpt.params,
            ckpt.state,
            opt_state=ckpt.opt_state,
            optimizer=ckpt.optimizer,
            metadata={"checkpoint_step": ckpt.step, "metrics": ckpt.metrics, "extra": ckpt.extra},
        )

    # --- lifetime -------------------------------------------------------------------------------
    def wait(self) -> None:
        """Blocks until the background save is done. Raises CheckpointError if it failed."""
        self._check_open()
        self._check(wait=True)

    def close(self) -> None:
        """Waits for the background save, then releases orbax's resources. Raises if it failed."""
        if self._closed:
            return
        try:
            self._check(wait=True)
        finally:
            self._closed = True
            _OPEN.discard(self)
            self._mgr.close()
            logging.getLogger("absl").removeHandler(self._catcher)

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
        return f"CheckpointManager({self.directory!r}, steps={self.all_steps() if not self._closed else '<closed>'})"


def _arrays_handler(ocp: Any) -> Any:
    """orbax's PyTree handler, minus the copy of numpy leaves before a background write.

    Every numpy array jaxnets hands orbax is a fresh copy it owns (packed buffers, copied numpy
    leaves), so orbax's own defensive copy would only double the time save() blocks.
    """
    import numpy as np

    registry = ocp.type_handlers.create_type_handler_registry(
        (np.ndarray, ocp.type_handlers.NumpyHandler(deepcopy_host_arrays=False)),
        (jax.Array, ocp.type_handlers.get_type_handler(jax.Array)),
    )
    return ocp.PyTreeCheckpointHandler(type_handler_registry=registry)


_OPEN: weakref.WeakSet[CheckpointManager] = weakref.WeakSet()
_FAILED: list[str] = []  # background save failures seen in this process
_AT_EXIT_REGISTERED = False


def _watch_at_exit(mgr: CheckpointManager) -> None:
    """Makes sure a background save that fails after the last call is still reported."""
    global _AT_EXIT_REGISTERED
    _OPEN.add(mgr)
    if not _AT_EXIT_REGISTERED:
        # threading's exit hooks run before non-daemon threads are joined; a plain atexit hook
        # would run after, and orbax's threads of a failed save block that join for minutes.
        hook = getattr(threading, "_register_atexit", atexit.register)
        hook(_report_at_exit)
        _AT_EXIT_REGISTERED = True


def _report_at_exit() -> None:
    """At exit: finish every open manager; if any background save failed, exit with status 1."""
    for mgr in list(_OPEN):
        try:
            mgr.close()
        except JaxnetsError as e:
            print(f"jaxnets: {e}", file=sys.stderr)
    if _FAILED:
        # A run whose checkpoint was lost must not look successful, and orbax's threads of the
        # failed save would hold the process for minutes: report, then leave now.
        print(
            f"jaxnets: {len(_FAILED)} checkpoint save(s) failed in this process "
            f"({'; '.join(_FAILED)}); exiting with status 1.",
            file=sys.stderr,
        )
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(1)


def _like_fields(like: Checkpoint | Mapping[str, Any] | None) -> dict[str, Any]:
    if like is None:
        return {}
    if isinstance(like, Checkpoint):
        return {f: getattr(like, f) for f in _layout.FIELDS if getattr(like, f) is not None}
    unknown = sorted(set(like) - set(_layout.FIELDS))
    if unknown:
        raise CheckpointError(
            f"restore(like=...): unknown entries {unknown}; use {list(_layout.FIELDS)}."
        )
    return {k: v for k, v in like.items() if v is not None}


def _field(key: str) -> str:
    return key.split(".", 1)[0]
