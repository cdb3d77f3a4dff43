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
import os
import sys
from collections.abc import Mapping
from typing import Any, Literal

from jaxnets.checkpoint import _layout, _orbax
from jaxnets.checkpoint._args import bool_option, int_option, like_fields, metrics_arg, step_arg
from jaxnets.checkpoint._background import Saves
from jaxnets.checkpoint._export import write_model_file
from jaxnets.checkpoint._integrity import check_arrays, verify_checksums
from jaxnets.checkpoint.meta import array_specs, read_meta, stored_infos
from jaxnets.core.placement import Device, ShardingSpec, placer
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
        self.directory = os.path.abspath(os.fspath(directory))
        if os.path.exists(self.directory) and not os.path.isdir(self.directory):
            raise CheckpointError(
                f"{self.directory} is a file, not a checkpoint directory.", file=self.directory
            )
        self.best_metric, self.best_mode = best_metric, best_mode
        self.group_below = group_below
        self._mgr = _orbax.open_manager(
            self.directory,
            max_to_keep=max_to_keep,
            keep_best=keep_best,
            best_metric=best_metric,
            best_mode=best_mode,
        )
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
        step = step_arg(step, "save")
        bool_option("force", force)
        if not force and step % self._save_every:
            return False
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
        snap, self._plan = _layout.snapshot(record, group_below=self.group_below, plan=self._plan)

        def write() -> None:  # in the background with async_save
            arrays, meta = _layout.finish(snap, fields)
            _orbax.write_step(self._mgr, step, self._step_dir(step), arrays, meta, mets)

        self._metrics[step] = mets
        self._saves.run(step, write, background=self._async)
        return True

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
        fields_like = like_fields(like, Checkpoint)
        bool_option("partial", partial)
        bool_option("verify", verify)
        if partial and like is None:
            raise ValueError("restore(partial=True) needs like= (the leaves to restore).")
        self._saves.collect(wait=True)  # read a directory no save is writing to
        step = self._resolve(step, "restore")
        step_dir = self._step_dir(step)
        meta = read_meta(step_dir, verify=verify)
        stored = stored_infos(meta)
        like_flat = flatten(fields_like) if fields_like else {}
        if fields_like:
            in_fields = {k: v for k, v in stored.items() if k.split(".", 1)[0] in fields_like}
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
        specs = array_specs(meta, keys)
        arrays = _orbax.read_arrays(self._mgr, step, step_dir, meta, specs, place) if specs else {}
        check_arrays(specs, arrays, step_dir=step_dir)  # before anything is sliced
        if verify:
            verify_checksums(specs, arrays, step_dir=step_dir)
        leaves = _layout.unpack(meta, arrays, keys, place)
        # The template's containers where given, the stored ones elsewhere (a field saved from a
        # type jaxnets cannot rebuild by name, e.g. an nnx.State, rebuilds only from the template).
        fields: dict[str, Any] = {}
        if not partial:
            spec = meta["spec"]
            rest = [(k, c) for k, c in zip(spec["k"], spec["c"]) if k not in fields_like]
            fields = dict(
                tree_from_spec(
                    {"t": "dict", "k": [k for k, _ in rest], "c": [c for _, c in rest]}, leaves
                )
            )
        if fields_like:
            fields.update(map_with_keys(lambda k, _: leaves[k], fields_like))
        return Checkpoint(
            step=step,
            **fields,
            model=None
            if meta.get("model") is None
            else from_config(meta["model"], file=step_dir, path="model"),
            optimizer=None
            if meta.get("optimizer") is None
            else from_config(meta["optimizer"], file=step_dir, path="optimizer"),
            metrics=meta.get("metrics"),
            extra=meta.get("extra"),
        )

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
            raise TypeError(
                f"export(path=...) takes a str or os.PathLike, got {type(path).__name__}."
            )
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
