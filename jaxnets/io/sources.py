"""Every weights file jaxnets reads, as one lazy mapping: ``open_source(path)``.

``jaxnets.load_state_dict(model, path)``, ``check_state_dict`` and the ``jaxnets`` command all go
through :func:`open_source`. Formats, chosen by the path:

* a jaxnets file (anything without another suffix), through :func:`jaxnets.open`;
* ``.safetensors`` (every safetensors dtype but the 6-bit floats; :mod:`.safetensors_format`);
* a Hugging Face model folder: ``model.safetensors``, or the shards listed in
  ``model.safetensors.index.json`` (each shard's header is read only when one of its keys is
  asked for), or ``pytorch_model.bin`` (``.bin.index.json`` shards likewise); the index file's
  path works too;
* PyTorch ``.pt``/``.pth``/``.bin`` files, read with ``torch.load(weights_only=True)``
  (memory-mapped where the file allows): torch's restricted unpickler, never code from the file.

Every source is a ``Mapping`` from state_dict keys to arrays with ``infos()`` (shapes and dtypes
from headers only), ``config``/``metadata`` where the format has them, and ``close()``. Arrays
it returns are new memory the caller owns (a copy out of the file or of torch's mapping), so a
later write to the file never changes loaded weights. A checkpoint directory is not a source
here (checkpoints sit above io); the CLI adds it.
"""

from __future__ import annotations

import io
import json
import os
import pickle
import warnings
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from jaxnets.core.arrays import TORCH_ADVICE, to_numpy, torch_problem
from jaxnets.core.structure import LeafInfo, leaf_info
from jaxnets.core.tree import spec_keys
from jaxnets.errors import FileFormatError, JaxnetsError
from jaxnets.io import safetensors_format as st
from jaxnets.io.reader import open_file

__all__ = ["Source", "open_source", "kind_of", "model_folder_file", "TORCH_SUFFIXES"]

TORCH_SUFFIXES = (".pt", ".pth", ".bin")
# What a Hugging Face model folder may hold, in the order transformers prefers them.
_FOLDER_FILES = ("model.safetensors.index.json", "model.safetensors", "pytorch_model.bin.index.json", "pytorch_model.bin")


def kind_of(path: str | os.PathLike[str]) -> str:
    """``"safetensors"``, ``"torch"`` or ``"jaxnets"``: the format a file's name says."""
    name = Path(path).name.lower()
    if name.endswith((".safetensors", ".safetensors.index.json")):
        return "safetensors"
    if name.endswith(TORCH_SUFFIXES) or name.endswith(".bin.index.json"):
        return "torch"
    return "jaxnets"


class Source(Mapping[str, Any]):
    """A lazily read collection of named arrays: the interface every format shares.

    Subclasses define :meth:`infos` and :meth:`__getitem__`; the rest follows from them.
    """

    kind = "?"

    def __init__(self, path: str | os.PathLike[str]):
        self.path = os.fspath(path)

    def infos(self) -> dict[str, LeafInfo]:
        """Shape and dtype of every entry, from headers only."""
        raise NotImplementedError

    def __getitem__(self, key: str) -> Any:
        """One entry as a new numpy array (typed PRNG keys as jax key arrays)."""
        raise NotImplementedError

    def __iter__(self) -> Iterator[str]:
        return iter(self.infos())

    def __len__(self) -> int:
        return len(self.infos())

    def __contains__(self, key: object) -> bool:
        return key in self.infos()

    @property
    def config(self) -> Any:
        """The architecture config, or None when the format stores none."""
        return None

    @property
    def metadata(self) -> dict[str, Any]:
        return {}

    def close(self) -> None:
        pass

    def __enter__(self) -> Source:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.path!r} ({self.kind})>"


class SafetensorsSource(Source):
    """A ``.safetensors`` file: the header is read on opening, each tensor when asked for."""

    kind = "safetensors"

    def __init__(self, path: str | os.PathLike[str]):
        super().__init__(path)
        self._header = st.read_header(self.path)
        self._file: io.BufferedReader | None = None  # opened at the first read, kept until close()

    def infos(self) -> dict[str, LeafInfo]:
        entries = self._header.entries
        return {k: entries[k].info for k in self._header.keys()}

    def __contains__(self, key: object) -> bool:
        return key in self._header.entries

    def __getitem__(self, key: str) -> np.ndarray:
        if key not in self._header.entries:
            raise KeyError(f"{self.path}: no entry {key!r}")
        if self._file is None:
            self._file = open(self.path, "rb")  # noqa: SIM115  (closed by close())
        return st.read_tensor(self._header, key, self._file)

    @property
    def metadata(self) -> dict[str, Any]:
        return {k: v for k, v in self._header.metadata.items() if k != st.ORDER_KEY}

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


class ShardedSource(Source):
    """The shards an index file lists (``model.safetensors.index.json``), opened on demand.

    The index maps each key to its shard; a shard is opened (its header read) only when one
    of its keys, or every shape (:meth:`infos`), is asked for.
    """

    def __init__(self, index: str | os.PathLike[str], open_shard: Callable[[Path], Source]):
        super().__init__(index)
        self._open_shard = open_shard
        self._folder = Path(self.path).parent
        try:
            doc = json.loads(Path(self.path).read_text(encoding="utf-8"))
        except (ValueError, UnicodeDecodeError) as e:
            raise FileFormatError(f"{self.path}: not a JSON shard index ({e}).", file=self.path) from None
        weight_map = doc.get("weight_map") if isinstance(doc, dict) else None
        if not isinstance(weight_map, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in weight_map.items()
        ):
            raise FileFormatError(f"{self.path}: no 'weight_map' of key -> shard file in the index.", file=self.path)
        for name in set(weight_map.values()):
            if Path(name).name != name or name in ("", ".", ".."):
                raise FileFormatError(f"{self.path}: shard {name!r} is not a file name in the index's folder.",
                                      file=self.path)
        missing = sorted(n for n in set(weight_map.values()) if not (self._folder / n).is_file())
        if missing:
            raise FileFormatError(f"{self.path}: shards listed in the index are missing: {missing}.", file=self.path)
        self._map: dict[str, str] = weight_map
        self._meta = doc.get("metadata") if isinstance(doc.get("metadata"), dict) else {}
        self._shards: dict[str, Source] = {}
        n = len(set(weight_map.values()))
        self.kind = f"{kind_of(self.path)}, {n} shard{'s' if n != 1 else ''}"

    def _shard(self, name: str) -> Source:
        src = self._shards.get(name)
        if src is None:
            src = self._open_shard(self._folder / name)
            listed = {k for k, v in self._map.items() if v == name}
            held = set(src.infos())
            if listed != held:
                src.close()
                extra, absent = sorted(held - listed), sorted(listed - held)
                raise FileFormatError(
                    f"{self.path}: shard {name} does not hold what the index says"
                    + (f"; missing from the shard: {absent[:5]}" if absent else "")
                    + (f"; not in the index: {extra[:5]}" if extra else "")
                    + ".",
                    file=self.path,
                    path=(absent or extra)[0],
                )
            self._shards[name] = src
        return src

    def infos(self) -> dict[str, LeafInfo]:
        by_shard: dict[str, dict[str, LeafInfo]] = {}
        for name in dict.fromkeys(self._map.values()):
            by_shard[name] = self._shard(name).infos()
        return {k: by_shard[v][k] for k, v in self._map.items()}

    def __iter__(self) -> Iterator[str]:
        return iter(self._map)

    def __len__(self) -> int:
        return len(self._map)

    def __contains__(self, key: object) -> bool:
        return key in self._map

    def __getitem__(self, key: str) -> Any:
        if key not in self._map:
            raise KeyError(f"{self.path}: no entry {key!r}")
        return self._shard(self._map[key])[key]

    @property
    def metadata(self) -> dict[str, Any]:
        return dict(self._meta)

    def close(self) -> None:
        for src in self._shards.values():
            src.close()
        self._shards.clear()


class TorchSource(Source):
    """A ``torch.save``-d state_dict (or a dict nesting one), through torch's weights-only loader.

    PyTorch's keys are already dotted paths: they are kept verbatim, and nested dicts or lists
    (``{"model": state_dict, "epoch": 3}``) are joined with ``.`` as torch's own prefixes are;
    values that are not tensors (an epoch number) are not entries. Tensors that are not dense
    arrays (sparse, nested, quantized, meta) or of a dtype numpy cannot hold are refused on
    opening, by key.
    """

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
        self._flat: dict[str, Any] = {}

        def walk(node: Any, prefix: str) -> None:
            items = node.items() if isinstance(node, dict) else enumerate(node)
            for k, v in items:
                if isinstance(v, torch.Tensor):
                    self._flat[prefix + str(k)] = v
                elif isinstance(v, (dict, list, tuple)):
                    walk(v, f"{prefix}{k}.")

        walk(obj, "")
        bad = [(k, p) for k, v in self._flat.items() if (p := torch_problem(v)) is not None]
        if bad:
            raise FileFormatError(
                f"{self.path}: {bad[0][0]!r} is {bad[0][1]}"
                + (f" (and {len(bad) - 1} more: " + ", ".join(f"{k!r} is {p}" for k, p in bad[1:4])
                   + (", ..." if len(bad) > 4 else "") + ")" if len(bad) > 1 else "")
                + f"; {TORCH_ADVICE}.",
                file=self.path,
                path=bad[0][0],
            )

    def _load(self, torch: Any) -> Any:
        err: Exception | None = None
        with open(self.path, "rb"):  # a file that cannot be opened is the OS's error, as is
            pass
        # torch warns about its own internals (TypedStorage, pickle protocols): not the user's
        # business, and never its advice to load with weights_only=False.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            for mmap in (True, False):  # files in torch's legacy format cannot be mapped
                try:
                    return torch.load(self.path, map_location="cpu", weights_only=True, mmap=mmap)
                except pickle.UnpicklingError as e:  # the weights-only unpickler refused something
                    err = e
                    break
                except Exception as e:  # RuntimeError, EOFError, OSError from its zip reader, ...
                    err = e
        assert err is not None
        if isinstance(err, pickle.UnpicklingError):
            # torch's text: advice (never shown), then "WeightsUnpickler error: <reason>".
            text = str(err)
            reason = text.split("WeightsUnpickler error:", 1)[-1] if "WeightsUnpickler error:" in text else ""
            reason = " ".join(reason.split("Check the documentation", 1)[0].split())
            if "Unsupported global" in reason:
                name = reason.split("GLOBAL", 1)[-1].split()[0] if "GLOBAL" in reason else ""
                raise FileFormatError(
                    f"{self.path}: this PyTorch file holds pickled Python objects"
                    + (f" ({name})" if name else "")
                    + ": loading it needs code execution, which jaxnets never does. Where you trust "
                    "the file, re-save only its tensors (torch.save(model.state_dict(), path), or "
                    "as .safetensors).",
                    file=self.path,
                ) from None
            reason = reason.split(". Please", 1)[0] or "unreadable pickle"
            raise FileFormatError(
                f"{self.path}: not a PyTorch state_dict file that torch's weights-only loader can "
                f"read ({reason[:200]}).",
                file=self.path,
            ) from None
        first = next((ln.strip() for ln in str(err).splitlines() if ln.strip()), type(err).__name__)
        if "weights_only" in first:
            first = type(err).__name__
        raise FileFormatError(
            f"{self.path}: not a PyTorch state_dict file ({type(err).__name__}: {first[:200]}).",
            file=self.path,
        ) from None

    def infos(self) -> dict[str, LeafInfo]:
        return {k: leaf_info(v) for k, v in self._flat.items()}

    def __getitem__(self, key: str) -> np.ndarray:
        # A copy: the tensor may be a view of torch's private mapping of the file.
        return np.array(to_numpy(self._flat[key]), copy=True)

    def __contains__(self, key: object) -> bool:
        return key in self._flat

    def close(self) -> None:
        self._flat = {}


class JaxnetsFileSource(Source):
    """A jaxnets model or state_dict file, through the lazy reader :func:`jaxnets.open`.

    Its entries are the model's (params and buffers, by state_dict key); :meth:`groups` splits
    them into params and state by the stored tree structures and adds the optimizer state.
    """

    kind = "jaxnets"

    def __init__(self, path: str | os.PathLike[str]):
        super().__init__(path)
        self._r = open_file(self.path)
        self.kind = f"jaxnets {self._r.kind} file, format v{self._r.format_version}"

    def infos(self) -> dict[str, LeafInfo]:
        return dict(self._r.infos())

    def __contains__(self, key: object) -> bool:
        return key in self._r

    def __getitem__(self, key: str) -> Any:
        return self._r[key]

    def groups(self) -> dict[str, dict[str, LeafInfo]]:
        """``{"params": ..., "state (buffers)": ..., "opt_state": ...}`` from the header alone."""
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


def model_folder_file(folder: str | os.PathLike[str]) -> Path | None:
    """The weights file of a Hugging Face model folder (an index first), or None when it has none."""
    for name in _FOLDER_FILES:
        p = Path(folder) / name
        if p.is_file():
            return p
    return None


def open_source(path: str | os.PathLike[str]) -> Source:
    """The :class:`Source` for ``path``, chosen by its name (see the module docstring).

    Raises:
      FileNotFoundError: nothing at a ``.safetensors`` or PyTorch path (a missing jaxnets file is
        the :class:`FileFormatError` of :func:`jaxnets.open`).
      FileFormatError: the file is not of the format its name says, or a folder that is not a
        Hugging Face model folder.
      JaxnetsError: a PyTorch file without torch installed.
    """
    p = Path(path)
    if p.is_dir():
        found = model_folder_file(p)
        if found is None:
            raise FileFormatError(
                f"{p}: a folder without model weights (looked for {', '.join(_FOLDER_FILES)}).",
                file=str(p),
            )
        p = found
    name = p.name.lower()
    if name.endswith(".safetensors.index.json"):
        return ShardedSource(p, SafetensorsSource)
    if name.endswith(".bin.index.json"):
        return ShardedSource(p, TorchSource)
    kind = kind_of(p)
    if kind == "safetensors":
        return SafetensorsSource(p)
    if kind == "torch":
        return TorchSource(p)
    return JaxnetsFileSource(p)
