"""Read-only views of the files the CLI understands, one tensor at a time.

Every source answers the same questions: its keys, each entry's :class:`~jaxnets.LeafInfo` (read
from headers only), one entry's array on request, and its architecture config and metadata where
the format has them. Formats: jaxnets model files (through :func:`jaxnets.open`), safetensors
(``.safetensors``), PyTorch state_dict files (``.pt``/``.pth``, read with
``torch.load(weights_only=True)``, never plain pickle) and jaxnets checkpoint directories.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from jaxnets.core.state_dict import to_numpy
from jaxnets.core.structure import LeafInfo, leaf_info
from jaxnets.errors import FileFormatError, JaxnetsError

__all__ = ["Source", "open_source", "kind_of"]

TORCH_SUFFIXES = (".pt", ".pth", ".bin")
SAFETENSORS_SUFFIXES = (".safetensors",)
# safetensors sorts its keys; `jaxnets convert` records the original (PyTorch's) order here.
ORDER_KEY = "jaxnets.key_order"


def kind_of(path: str | os.PathLike[str]) -> str:
    """``"checkpoint"``, ``"safetensors"``, ``"torch"`` or ``"jaxnets"``, from the path alone."""
    p = Path(path)
    if p.is_dir():
        return "checkpoint"
    suffix = p.suffix.lower()
    if suffix in SAFETENSORS_SUFFIXES:
        return "safetensors"
    if suffix in TORCH_SUFFIXES:
        return "torch"
    return "jaxnets"


class Source:
    """A lazily read collection of named arrays (the interface shared by every format)."""

    kind = "?"

    def __init__(self, path: str | os.PathLike[str]):
        self.path = os.fspath(path)

    def keys(self) -> list[str]:
        return list(self.infos())

    def infos(self) -> dict[str, LeafInfo]:
        """Shape and dtype of every entry, from headers only."""
        raise NotImplementedError

    def __getitem__(self, key: str) -> np.ndarray:
        """One entry as a numpy array (bfloat16 as ``ml_dtypes.bfloat16``)."""
        raise NotImplementedError

    def items(self) -> Iterator[tuple[str, np.ndarray]]:
        for k in self.keys():
            yield k, self[k]

    def value(self, key: str) -> Any:
        """One entry as stored: like ``self[key]``, but typed PRNG key arrays stay jax key arrays."""
        return self[key]

    @property
    def config(self) -> Any:
        """The architecture config, or None when the format stores none."""
        return None

    @property
    def metadata(self) -> dict[str, Any]:
        return {}

    def close(self) -> None:
        pass


class SafetensorsSource(Source):
    kind = "safetensors"

    def __init__(self, path: str | os.PathLike[str]):
        super().__init__(path)
        from safetensors import safe_open

        try:
            self._f = safe_open(self.path, framework="numpy")
        except OSError:
            raise
        except Exception as e:  # safetensors raises its own SafetensorError on a bad header
            raise FileFormatError(f"{self.path}: not a valid safetensors file ({e}).", file=self.path) from e

    def keys(self) -> list[str]:
        stored = list(self._f.keys())
        order = (self._f.metadata() or {}).get(ORDER_KEY)
        try:
            listed = json.loads(order) if order else []
        except ValueError:
            listed = []
        if isinstance(listed, list) and sorted(map(str, listed)) == sorted(stored):
            return [str(k) for k in listed]
        return stored

    def infos(self) -> dict[str, LeafInfo]:
        out = {}
        for k in self.keys():
            s = self._f.get_slice(k)
            out[k] = LeafInfo(tuple(int(d) for d in s.get_shape()), _SAFETENSORS_DTYPES.get(s.get_dtype(), s.get_dtype()))
        return out

    def __getitem__(self, key: str) -> np.ndarray:
        return self._f.get_tensor(key)

    @property
    def metadata(self) -> dict[str, Any]:
        return {k: v for k, v in (self._f.metadata() or {}).items() if k != ORDER_KEY}


_SAFETENSORS_DTYPES = {
    "F64": "float64", "F32": "float32", "F16": "float16", "BF16": "bfloat16",
    "I64": "int64", "I32": "int32", "I16": "int16", "I8": "int8",
    "U64": "uint64", "U32": "uint32", "U16": "uint16", "U8": "uint8", "BOOL": "bool",
    "C64": "complex64", "F8_E4M3": "float8_e4m3fn", "F8_E5M2": "float8_e5m2",
}


class TorchSource(Source):
    """A ``torch.save``-d state_dict (or a dict nesting one); tensors memory-mapped where possible."""

    kind = "torch"

    def __init__(self, path: str | os.PathLike[str]):
        super().__init__(path)
        try:
            import torch
        except ImportError as e:
            raise JaxnetsError(
                f"{self.path}: reading PyTorch files needs torch; pip install torch "
                "(or convert the file to .safetensors where torch is installed).",
                file=self.path,
            ) from e
        obj = self._load(torch)
        if isinstance(obj, torch.Tensor):
            obj = {"": obj}
        if not isinstance(obj, dict):
            raise FileFormatError(
                f"{self.path}: holds a {type(obj).__name__}, not a state_dict (a dict of tensors).",
                file=self.path,
            )
        # PyTorch's keys are already dotted paths: keep them verbatim (no escaping), and join
        # nested dicts ({"model": state_dict, ...}) with "." as torch's own prefixes are.
        self._flat: dict[str, Any] = {}

        def walk(d: dict[Any, Any], prefix: str) -> None:
            for k, v in d.items():
                if isinstance(v, torch.Tensor):
                    self._flat[prefix + str(k)] = v
                elif isinstance(v, dict):
                    walk(v, f"{prefix}{k}.")

        walk(obj, "")

    def _load(self, torch: Any) -> Any:
        # weights_only=True: torch's restricted unpickler, which refuses code (no plain pickle).
        # mmap keeps big files on disk; files in torch's legacy format cannot be mapped.
        err: Exception | None = None
        for mmap in (True, False):
            try:
                return torch.load(self.path, map_location="cpu", weights_only=True, mmap=mmap)
            except OSError:
                raise
            except Exception as e:  # UnpicklingError, RuntimeError, ... on bad files
                err = e
        text = str(err).strip()
        first = text.splitlines()[0] if text else type(err).__name__
        raise FileFormatError(
            f"{self.path}: not a PyTorch state_dict file that loads with weights_only=True "
            f"({type(err).__name__}: {first}).",
            file=self.path,
        ) from err

    def infos(self) -> dict[str, LeafInfo]:
        return {k: leaf_info(v) for k, v in self._flat.items()}

    def __getitem__(self, key: str) -> np.ndarray:
        return np.asarray(to_numpy(self._flat[key]))


class JaxnetsFileSource(Source):
    """A jaxnets model or state_dict file, through the lazy reader :func:`jaxnets.open`.

    Its entries are the model's (params and buffers, by state_dict key); :meth:`groups` splits
    them into params and state by the stored tree structures and adds the optimizer state.
    """

    kind = "jaxnets"

    def __init__(self, path: str | os.PathLike[str]):
        super().__init__(path)
        from jaxnets.io import open as open_file

        self._r = open_file(self.path)
        self.kind = f"jaxnets {self._r.kind} file, format v{self._r.format_version}"

    def keys(self) -> list[str]:
        return list(self._r.keys())

    def infos(self) -> dict[str, LeafInfo]:
        return dict(self._r.infos())

    def value(self, key: str) -> Any:
        return to_numpy(self._r[key])

    def __getitem__(self, key: str) -> np.ndarray:
        value = to_numpy(self._r[key])
        if not isinstance(value, np.ndarray):  # a typed PRNG key array: compare its raw bits
            import jax

            return np.asarray(jax.random.key_data(value))
        return value

    def groups(self) -> dict[str, dict[str, LeafInfo]]:
        """``{"params": ..., "state (buffers)": ..., "opt_state": ...}`` from the header alone."""
        from jaxnets.core.tree import spec_keys

        infos = self.infos()
        trees = self._r.header.get("trees") or {}
        out: dict[str, dict[str, LeafInfo]] = {}
        if isinstance(trees, dict) and isinstance(trees.get("params"), dict) and isinstance(trees.get("state"), dict):
            state_keys = set(spec_keys(trees["state"]))
            out["params"] = {k: v for k, v in infos.items() if k not in state_keys}
            out["state (buffers)"] = {k: v for k, v in infos.items() if k in state_keys}
        else:
            out["entries"] = infos
        out["opt_state"] = dict(self._r.infos("opt_state"))
        return out

    @property
    def config(self) -> Any:
        return self._r.model_config

    @property
    def metadata(self) -> dict[str, Any]:
        # Shown as stored (a config), so inspecting never needs the classes it names.
        out: dict[str, Any] = {}
        if self._r.optimizer_config is not None:
            out["optimizer"] = self._r.optimizer_config
        if self._r.metadata_config is not None:
            out["metadata"] = self._r.metadata_config
        prov = dict(self._r.provenance)
        if prov:
            created = prov.pop("created", None)
            out["written by"] = ", ".join(f"{k} {v}" for k, v in prov.items()) + (f" on {created}" if created else "")
        return out

    def close(self) -> None:
        self._r.close()


def open_source(path: str | os.PathLike[str]) -> Source:
    """The :class:`Source` for ``path``, chosen by its suffix (a directory is a checkpoint).

    Raises:
      FileNotFoundError: nothing at ``path``.
      FileFormatError: the file is not of the format its name says.
    """
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"{p}: no such file or directory")
    kind = kind_of(p)
    if kind == "checkpoint":
        from jaxnets.cli.checkpoints import CheckpointSource

        return CheckpointSource(p)
    if kind == "safetensors":
        return SafetensorsSource(p)
    if kind == "torch":
        return TorchSource(p)
    return JaxnetsFileSource(p)
