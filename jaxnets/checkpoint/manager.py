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
  CheckpointManager only logs it;
* in a multi-process job, every collective call is agreed on first, with a timeout
  (:mod:`jaxnets.checkpoint._processes`), process-local values are compared or stored per
  process, and small global arrays are packed per process (:mod:`jaxnets.checkpoint._spread`).

See docs/checkpoints.md for the guide and the on-disk layout.
"""

from __future__ import annotations

import dataclasses
import os
import sys
from collections.abc import Mapping
from typing import Any, Literal

from jaxnets.checkpoint import _layout, _orbax, _reading
from jaxnets.checkpoint._args import (
    bool_option,
    int_option,
    like_fields,
    metrics_arg,
    per_process_arg,
    step_arg,
    timeout_option,
)
from jaxnets.checkpoint._background import Saves
from jaxnets.checkpoint._export import write_model_file
from jaxnets.checkpoint._processes import Processes
from jaxnets.checkpoint.meta import json_checksum, read_meta
from jaxnets.core import progress as _progress
from jaxnets.core.placement import Device, ShardingSpec
from jaxnets.core.registry import to_config
from jaxnets.errors import CheckpointError, JaxnetsError

__all__ = ["Checkpoint", "CheckpointManager"]

_DEFAULT_GROUP_BELOW = 1 << 20  # 1 MiB: above it, orbax's per-leaf cost is noise
_DEFAULT_SYNC_TIMEOUT = 300.0  # seconds; orbax's own barrier timeout
_EXPORTED = ("params", "state", "opt_state")  # what a model file holds
_SAVE_HINTS = {
    "values": "These leaves are process-local (numpy arrays, Python scalars, jax arrays on one "
    "process's devices) and differ between processes, but a checkpoint stores them once. Make "
    "them global arrays, or the same on every process, or save them per process: "
    "save(..., per_process=(...)).",
    "metadata": "metrics, extra, model and optimizer are stored once: pass the same on every "
    "process (e.g. a metric averaged over the processes).",
    "layout": "The saved trees differ in structure, shapes, dtypes or shardings between processes.",
    "per_process": "Pass the same per_process= on every process.",
}


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
      sync_timeout: in a multi-process job, how long (seconds) a process waits for the others
        in each agreement before it raises (docs/checkpoints.md, "Checkpoints on several
        hosts"). Opening a manager is itself collective: every process opens the same
        directory with the same options (as many times).

    Raises:
      TypeError, ValueError: an option of the wrong type or value (the message says what is
        accepted).
      CheckpointError: the directory cannot be used; several processes: they open different
        directories or options, one does not within ``sync_timeout``, or one does not see
        the directory process 0 created (it must be shared).
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
        sync_timeout: float = _DEFAULT_SYNC_TIMEOUT,
    ) -> None:
        if not isinstance(directory, (str, os.PathLike)):
            raise TypeError(
                f"directory must be a str or os.PathLike, got {type(directory).__name__}."
            )
        max_to_keep = int_option("max_to_keep", max_to_keep, 1, none=True)
        keep_best = int_option("keep_best", keep_best, 1, none=True)
        save_every = int_option("save_every", save_every, 1)
        group_below = int_option("group_below", group_below, 0)
        if best_metric is not None and not isinstance(best_metric, str):
            raise TypeError(
                f"best_metric must be a metric name (str) or None, got {best_metric!r}."
            )
        if best_mode not in ("min", "max"):
            raise ValueError(f"best_mode must be 'min' or 'max', got {best_mode!r}.")
        if keep_best is not None and best_metric is None:
            raise ValueError("keep_best needs best_metric= (the metric that ranks steps).")
        bool_option("async_save", async_save)
        sync_timeout = timeout_option("sync_timeout", sync_timeout)
        self.directory = os.path.abspath(os.fspath(directory))
        if os.path.exists(self.directory) and not os.path.isdir(self.directory):
            raise CheckpointError(
                f"{self.directory} is a file, not a checkpoint directory.", file=self.directory
            )
        self.best_metric, self.best_mode = best_metric, best_mode
        self.group_below = group_below
        self._procs = Processes(self.directory, timeout=sync_timeout)
        options = {
            "max_to_keep": max_to_keep,
            "keep_best": keep_best,
            "best_metric": best_metric,
            "best_mode": best_mode,
        }
        self._mgr = self._open(options, save_every=save_every, group_below=group_below)
        self._reader = _orbax.array_reader()
        self._async = async_save
        self._saves = Saves(self._failed)
        self._metrics: dict[int, dict[str, float] | None] = {}
        self._save_every = save_every
        self._plan: _layout.Plan | None = None  # the last save's layout, reused while it fits
        self._closed = False

    def _open(self, options: dict[str, Any], **more: int) -> Any:
        """Opens orbax's manager; with several processes, after agreeing on the directory and
        the options (process 0 creates the directory; every process must then see it)."""
        procs = self._procs
        if not procs.multi:
            return _orbax.open_manager(self.directory, **options)
        error: Exception | None = None
        if procs.index == 0:
            try:
                os.makedirs(self.directory, exist_ok=True)
            except OSError as e:
                error = CheckpointError(
                    f"{self.directory}: cannot create the checkpoint directory ({e}).",
                    file=self.directory,
                )
        opts = json_checksum({**options, **more})
        procs.agree("CheckpointManager()", {"directory": self.directory, "options": opts}, error=error)
        mgr = None
        try:
            if not os.path.isdir(self.directory):
                raise CheckpointError(
                    f"{self.directory}: process 0 created this directory, but process "
                    f"{procs.index} does not see it: a multi-process checkpoint needs a "
                    "directory every process shares (a network filesystem, a mounted bucket).",
                    file=self.directory,
                )
            mgr = _orbax.open_manager(self.directory, **options, processes=procs.count)
        except Exception as e:
            error = e
        procs.agree("CheckpointManager() (opening the directory)", {}, error=error)
        return mgr

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
        per_process: str | tuple[str, ...] | list[str] = (),
        force: bool = False,
        progress: bool | None = None,
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
          per_process: in a multi-process job, key prefixes (``"rng"``, ``"state.counter"``)
            of process-local values to store per process: process p's value comes back to
            process p (of a job with as many processes). Other process-local values must be
            equal on every process, and are stored once (docs/checkpoints.md, "Checkpoints on
            several hosts"). In a single process it changes nothing.
          force: save even if ``step`` is not a multiple of ``save_every``.
          progress: a progress bar on standard error, counted in bytes on disk while orbax
            writes (None: for 1 GiB or more on a terminal; True; False). Drawn by process 0,
            from the background with ``async_save``.

        Returns:
          True if the step is being saved, False if ``save_every`` skipped it.

        Raises:
          CheckpointError: the previous background save failed, the step exists, or (without
            ``async_save``) the write failed; several processes: they disagree (another step,
            structure or metrics; a process-local value that differs), or one did not call
            ``save`` within ``sync_timeout`` (raised on every process that called).
          TypeError, ValueError: a bad argument: a leaf that cannot be stored, metrics that are
            not finite numbers or lack ``best_metric``, ``extra`` that is not JSON-able, a
            ``per_process`` prefix that names no leaf.
          RegistryError: ``model`` or ``optimizer`` is not a registered config.
        """
        self._check_open()
        procs = self._procs
        error: Exception | None = None
        try:
            # One save at a time: the previous one is finished (and its failure raised) first.
            self._saves.collect(wait=True)
            step = step_arg(step, "save")
            bool_option("force", force)
            _progress.check_progress(progress)
            if not force and step % self._save_every:
                return False
            per = per_process_arg(per_process)
            if step in self.all_steps():
                raise CheckpointError(
                    f"{self.directory}: step {step} is already saved; steps are "
                    "write-once (delete the directory or use a new step).",
                    file=self._step_dir(step),
                )
            mets = metrics_arg(step, metrics, self.best_metric)
            fields = {
                "step": step,
                "model": None if model is None else to_config(model, path=".model"),
                "optimizer": None if optimizer is None else to_config(optimizer, path=".optimizer"),
                "metrics": mets,
                "extra": None if extra is None else _layout.check_json(extra, "extra"),
            }
            record = {"params": params, "state": state, "opt_state": opt_state, "rng": rng}
            snap, self._plan = _layout.snapshot(
                record, group_below=self.group_below, plan=self._plan, per_process=per
            )
        except Exception as e:
            if not procs.multi:
                raise
            error = e  # the other processes raise it too
        exchange = -1
        if procs.multi:
            self._agree_save(step, snap if error is None else None, fields if error is None else {}, error)
            exchange = procs.reserve()  # the hashes of the background part, sent to process 0

        def write() -> None:  # in the background with async_save
            arrays, meta = _layout.finish(snap, fields, procs=procs, exchange=exchange)
            shown = progress if procs.index == 0 else False
            on_disk = lambda: _progress.files_bytes(self.directory, str(step))  # noqa: E731
            with (
                _progress.progress(snap.plan.nbytes, f"saving {self._step_dir(step)}", shown) as bar,
                _progress.polled(bar, on_disk),
            ):
                _orbax.write_step(self._mgr, step, self._step_dir(step), arrays, meta, mets)

        self._metrics[step] = mets
        self._saves.run(step, write, background=self._async)
        return True

    def _agree_save(
        self, step: Any, snap: _layout.Snapshot | None, fields: Mapping[str, Any], error: Exception | None
    ) -> None:
        """Several processes: checks that every one saves the same step, layout and stored-once
        values (hashes; a second exchange names the keys that differ)."""
        if snap is None:
            self._procs.agree("save", {}, error=error)
            return
        plan = snap.plan
        values = _layout.local_hashes(snap)
        meta = {k: json_checksum(v) for k, v in fields.items() if k != "step"}
        self._procs.agree(
            "save",
            {
                "step": str(step),
                "layout": plan.fingerprint,
                "per_process": json_checksum(list(plan.per_process)),
                "values": json_checksum(values),
                "metadata": json_checksum(meta),
            },
            details={"layout": lambda: _layout.layout_of(plan), "values": lambda: values, "metadata": lambda: meta},
            hints=_SAVE_HINTS,
        )

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
            step = step_arg(step, what)
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
        progress: bool | None = None,
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
          device: put every array on this device (``"cpu"``, ``"gpu"``: this process's first
            device of that platform; or a ``jax.Device``).
          sharding: a ``Sharding`` for every array, a tree of them shaped like the checkpoint
            (``{"params": {...}}``; leaves not in it go to the default device), or
            ``fn(key, LeafInfo) -> Sharding | None`` called with each stored key
            (``"params.fc1.weight"``) and its shape/dtype.
            Without ``device``/``sharding``/``like``, arrays go to the default device (this
            process's). In a multi-process job a sharding over several processes' devices
            gives each process only its shards, read from disk by that process; it must be the
            same on every process.
          verify: check every checksum of the step (its metadata and every array read). The
            metadata's structure is checked even with ``verify=False``.
          progress: a progress bar on standard error, counted in bytes this process reads
            (None: for 1 GiB or more on a terminal; True; False). Each process draws its own.

        Returns:
          A :class:`Checkpoint`.

        Raises:
          CheckpointError: no such step, not a jaxnets checkpoint, or the step is corrupted (a
            checksum or a metadata field does not match: names the step and the key).
          StateDictError: ``like`` does not fit the checkpoint (lists every differing key).
          RegistryError: the stored model/optimizer class is not registered in this process.
          TypeError, ValueError: a bad argument (the message says what is accepted).

        In a multi-process job every process must call ``restore`` with the same step, leaves
        and global shardings; a mismatch, a process that does not call it within
        ``sync_timeout``, or a failure on any process raises a ``CheckpointError`` on every
        process that called (the process that failed raises its own error).
        """
        self._check_open()
        return self._restore(step, like, partial, device, sharding, verify, progress=progress)

    def _restore(
        self,
        step: int | None,
        like: Any,
        partial: bool,
        device: Device | None,
        sharding: ShardingSpec | None,
        verify: bool,
        *,
        only: tuple[str, ...] | None = None,
        agree: bool = True,
        progress: bool | None = False,
    ) -> Checkpoint:
        """:meth:`restore`; ``only``: just these fields; ``agree=False``: this process alone
        (nothing it runs is collective: orbax's handler reads, jaxnets places)."""
        procs = self._procs if agree else None
        multi = procs is not None and procs.multi
        error: Exception | None = None
        r = None
        try:
            fields_like = like_fields(like, Checkpoint)
            bool_option("partial", partial)
            bool_option("verify", verify)
            _progress.check_progress(progress)
            if partial and like is None:
                raise ValueError("restore(partial=True) needs like= (the leaves to restore).")
            self._saves.collect(wait=True)  # read a directory no save is writing to
            step = self._resolve(step, "restore")
            step_dir = self._step_dir(step)
            meta = read_meta(step_dir, verify=verify)
            r = _reading.prepare(
                step, step_dir, meta, fields_like=fields_like, partial=partial, device=device,
                sharding=sharding, only=only,
            )  # fmt: skip
        except Exception as e:
            if not multi:
                raise
            error = e
        if multi:
            assert procs is not None
            fields, details = _reading.fingerprint(r, verify=verify) if r is not None else ({}, {})
            procs.agree("restore", fields, error=error, details=details, hints=_reading.HINTS)
        assert r is not None
        try:
            out = _reading.read(r, self._reader, verify=verify, progress=progress)
        except Exception as e:
            if not multi:
                raise
            error = e
        if multi:
            assert procs is not None
            # Every process returns, or every process raises: none goes on alone.
            procs.agree(f"restore (reading step {r.step})", {}, error=error)
        return Checkpoint(**out)

    # --- export ---------------------------------------------------------------------------------
    def export(
        self, step: int | Literal["best", "latest"] | None, path: str | os.PathLike[str]
    ) -> None:
        """Writes one step as a complete jaxnets model file (``jaxnets.save``).

        The model, params, buffers, optimizer and its state (not ``rng``). In a multi-process
        job every process calls it; process 0 reads the step onto its CPU, whole, and writes the
        file, and every process returns once the file is complete (or every process raises). So
        the model must fit process 0's host memory; for a larger one, save the sharded arrays
        with ``jaxnets.save`` from every process instead (docs/checkpoints.md, "Checkpoints on
        several hosts").

        Args:
          step: a step number, ``"best"`` (by ``best_metric``), or ``"latest"``/None.
          path: the model file to write.

        Raises:
          CheckpointError: no such step, a damaged step, or the step has no model spec (save it
            with ``model=``); several processes: they disagree on the step or path, or one did
            not call ``export`` within ``sync_timeout``.
          TypeError, ValueError: ``step`` or ``path`` is not one of the above.
        """
        self._check_open()
        procs = self._procs
        error: Exception | None = None
        try:
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
            self._saves.collect(wait=True)
            step = self._resolve(step, "export")
            target = os.path.abspath(os.fspath(path))
        except Exception as e:
            if not procs.multi:
                raise
            error = e
        if procs.multi:
            fields = {} if error is not None else {"step": str(step), "path": target}
            procs.agree("export", fields, error=error)
        # Process 0 alone reads the step onto its CPU and writes the file (the others wait for it).
        if procs.index == 0:
            try:
                assert isinstance(step, int)
                ckpt = self._restore(step, None, False, "cpu", None, True, only=_EXPORTED, agree=False)
                write_model_file(ckpt, target, step_dir=self._step_dir(ckpt.step))
            except Exception as e:
                if not procs.multi:
                    raise
                error = e
        if procs.multi:
            procs.agree(f"export (process 0 writing {target})", {}, error=error)

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
            self._reader.close()
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
