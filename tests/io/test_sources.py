"""io/sources.py and io/safetensors_format.py: every weights file jaxnets reads, and the API on it.

References: files written by safetensors' own torch writer, huggingface_hub's sharded writer,
torch.save; values compared with torch's own conversions (``Tensor.float()``, torch.testing's
float4 packing), never with this package's.
"""

from __future__ import annotations

import json
import struct
import warnings
from pathlib import Path

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
import pytest

import jaxnets
from jaxnets import nn
from jaxnets.io import safetensors_format as stf
from jaxnets.io.sources import open_source

torch = pytest.importorskip("torch")
stt = pytest.importorskip("safetensors.torch")

TORCH_DTYPES = [
    "float64", "float32", "float16", "bfloat16", "int64", "int32", "int16", "int8",
    "uint8", "uint16", "uint32", "uint64", "bool", "complex64",
    "float8_e4m3fn", "float8_e5m2", "float8_e4m3fnuz", "float8_e5m2fnuz", "float8_e8m0fnu",
]  # fmt: skip


def _tensor(name: str) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    base = torch.randn(3, 5, generator=g) * 4
    if name == "bool":
        return base > 0
    if name.startswith(("int", "uint")):
        return base.abs().round().to(getattr(torch, name))
    if name == "complex64":
        return torch.complex(base, -base)
    if name == "float8_e8m0fnu":
        return base.abs().clamp(min=2**-10).to(torch.float8_e8m0fnu)
    return base.to(getattr(torch, name))


def _bits(x: torch.Tensor | np.ndarray) -> bytes:
    if isinstance(x, torch.Tensor):
        return x.contiguous().view(-1).view(torch.uint8).numpy().tobytes()
    return np.ascontiguousarray(x).view(np.uint8).tobytes()


_FLOAT4_BYTES = [[0x21, 0x43], [0xF7, 0x5A]]


def _float4() -> torch.Tensor:
    """A packed torch float4 tensor, shape (2, 2) of pairs: (2, 4) values."""
    return torch.tensor(_FLOAT4_BYTES, dtype=torch.uint8).view(torch.float4_e2m1fn_x2)


def _float4_values(t: torch.Tensor) -> np.ndarray:
    """The values of a packed torch float4 tensor, unpacked by torch's own ONNX exporter."""
    from torch.onnx._internal.exporter._type_casting import unpack_float4x2_as_uint8

    return unpack_float4x2_as_uint8(t).view(ml_dtypes.float4_e2m1fn).astype(np.float32)


# --- safetensors: every dtype -------------------------------------------------------------------
@pytest.mark.parametrize("name", TORCH_DTYPES)
def test_every_safetensors_dtype_reads_bit_for_bit(tmp_path: Path, name: str) -> None:
    t = _tensor(name)
    stt.save_file({"w": t}, tmp_path / "a.safetensors")
    with open_source(tmp_path / "a.safetensors") as src:
        assert src.infos() == {"w": jaxnets.LeafInfo((3, 5), name)}
        got = src["w"]
    assert got.shape == (3, 5) and got.dtype.name == name
    assert _bits(got) == _bits(t)
    if name.startswith(("float", "bfloat")):  # the values, by torch's own conversion
        np.testing.assert_array_equal(got.astype(np.float32), t.float().numpy())


def test_float4_reads_in_torchs_packing(tmp_path: Path) -> None:
    t = _float4()
    stt.save_file({"w": t}, tmp_path / "f4.safetensors")
    with open_source(tmp_path / "f4.safetensors") as src:
        assert src.infos()["w"] == jaxnets.LeafInfo((2, 4), "float4_e2m1fn")
        got = src["w"]
    np.testing.assert_array_equal(got.astype(np.float32), _float4_values(t))
    assert sorted(set(_float4_values(t).ravel())) != [0.0]  # a real test: distinct values


@pytest.mark.parametrize("name", [*TORCH_DTYPES, "float4"])
def test_every_dtype_writes_and_safetensors_reads_it_back(tmp_path: Path, name: str) -> None:
    t = _float4() if name == "float4" else _tensor(name)
    stt.save_file({"w": t, "b": torch.zeros(2)}, tmp_path / "in.safetensors")
    with open_source(tmp_path / "in.safetensors") as src:
        stf.write(tmp_path / "out.safetensors", {k: src[k] for k in src})
    back = stt.load_file(tmp_path / "out.safetensors")
    assert back["w"].dtype == t.dtype and back["w"].shape == t.shape
    assert _bits(back["w"]) == _bits(t)


def test_written_files_keep_the_given_key_order(tmp_path: Path) -> None:
    arrays = {k: np.full(2, i, np.float32) for i, k in enumerate(["z.weight", "a.bias", "m.weight"])}
    stf.write(tmp_path / "o.safetensors", arrays)
    with open_source(tmp_path / "o.safetensors") as src:
        assert list(src) == ["z.weight", "a.bias", "m.weight"]
        assert src.metadata == {}
    assert set(stt.load_file(tmp_path / "o.safetensors")) == set(arrays)


@pytest.mark.parametrize(
    "value, name",
    [
        (np.zeros(4, ml_dtypes.int4), "int4"),
        (np.zeros(2, np.complex128), "complex128"),
        (np.zeros(4, ml_dtypes.float6_e2m3fn), "float6_e2m3fn"),
        (jax.random.key(0), "PRNG key"),
    ],
)
def test_what_safetensors_cannot_hold_is_named_and_nothing_is_written(tmp_path: Path, value, name: str) -> None:
    dst = tmp_path / "o.safetensors"
    dst.write_bytes(b"keep me")
    with pytest.raises(jaxnets.JaxnetsError, match=rf"safetensors cannot hold 'bad' \(.*{name}") as info:
        stf.write(dst, {"ok": np.zeros(2, np.float32), "bad": value})
    assert info.value.path == "bad" and "\n" not in str(info.value)
    assert dst.read_bytes() == b"keep me" and sorted(p.name for p in tmp_path.iterdir()) == ["o.safetensors"]


def _raw_file(path: Path, header: dict, data: bytes) -> Path:
    head = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(head)) + head + data)
    return path


def test_six_bit_floats_are_described_but_refused_by_key(tmp_path: Path) -> None:
    p = _raw_file(tmp_path / "f6.safetensors", {"w": {"dtype": "F6_E2M3", "shape": [4], "data_offsets": [0, 3]}}, b"\0" * 3)
    with open_source(p) as src:
        assert src.infos() == {"w": jaxnets.LeafInfo((4,), "float6_e2m3fn")}
        with pytest.raises(jaxnets.FileFormatError, match=r"'w' is F6_E2M3.*no bit order"):
            src["w"]


_F32 = {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}


@pytest.mark.parametrize(
    "raw, match",
    [
        (b"\x05\x00", "shorter than the 8-byte header length"),
        (struct.pack("<Q", 2**62) + b"{}", "header length"),
        (struct.pack("<Q", 4) + b"[1,2", "not JSON"),
        (struct.pack("<Q", 2) + b"[]", "not a JSON object"),
        (b'{"w": %s, "w": %s}' % (json.dumps(_F32).encode(), json.dumps(_F32).encode()), "appears twice"),
        ({"w": dict(_F32, dtype="F12")}, "dtype 'F12'"),
        ({"w": dict(_F32, shape=[-2])}, "shape"),
        ({"w": dict(_F32, shape=[True, 2])}, "shape"),
        ({"w": dict(_F32, shape=[3])}, "data_offsets"),
        ({"w": dict(_F32, data_offsets=[0, 8]), "v": dict(_F32, data_offsets=[4, 12])}, "hole or an overlap"),
        ({"w": dict(_F32, data_offsets=[8, 16])}, "hole or an overlap"),
        ({"w": _F32, "__metadata__": {"a": 1}}, "__metadata__"),
        ({"w": dict(_F32, extra=1)}, "not {dtype, shape, data_offsets}"),
    ],
)
def test_hostile_headers_are_file_format_errors(tmp_path: Path, raw, match: str) -> None:
    p = tmp_path / "h.safetensors"
    if isinstance(raw, dict):
        _raw_file(p, raw, b"\0" * 16)
    elif raw.startswith(b"{"):
        p.write_bytes(struct.pack("<Q", len(raw)) + raw + b"\0" * 8)
    else:
        p.write_bytes(raw)
    with pytest.raises(jaxnets.FileFormatError, match=match) as info:
        open_source(p)
    assert info.value.file == str(p)


def test_trailing_bytes_after_the_last_tensor_are_refused(tmp_path: Path) -> None:
    p = _raw_file(tmp_path / "t.safetensors", {"w": _F32}, b"\0" * 12)
    with pytest.raises(jaxnets.FileFormatError, match="4 bytes after the last tensor"):
        open_source(p)


# --- Hugging Face folders -------------------------------------------------------------------------
def _torch_mlp() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.ReLU(), torch.nn.Linear(32, 32), torch.nn.ReLU(),
                               torch.nn.Linear(32, 3))


def _mlp() -> nn.Module:
    return nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 32), nn.ReLU(), nn.Linear(32, 3))


def _same_outputs(model: nn.Module, params, state, tm: torch.nn.Module) -> None:
    x = np.random.default_rng(0).normal(size=(4, 16)).astype(np.float32)
    y, _ = model.apply(params, state, jnp.asarray(x))
    np.testing.assert_allclose(y, tm(torch.from_numpy(x)).detach().numpy(), rtol=1e-5, atol=1e-6)


@pytest.fixture
def sharded(tmp_path: Path) -> tuple[Path, torch.nn.Module]:
    hub = pytest.importorskip("huggingface_hub")
    tm = _torch_mlp()
    hub.save_torch_state_dict(tm.state_dict(), tmp_path, max_shard_size=3000)
    assert (tmp_path / "model.safetensors.index.json").is_file()
    assert len(list(tmp_path.glob("model-*.safetensors"))) >= 2
    return tmp_path, tm


def test_a_sharded_hugging_face_folder_reads_every_tensor(sharded) -> None:
    folder, tm = sharded
    with open_source(folder) as src:
        assert set(src) == set(tm.state_dict())
        assert "shards" in src.kind
        for k, t in tm.state_dict().items():
            assert src.infos()[k] == jaxnets.LeafInfo(tuple(t.shape), "float32")
            np.testing.assert_array_equal(src[k], t.numpy())


def test_shards_are_opened_only_when_one_of_their_keys_is_read(sharded) -> None:
    folder, _ = sharded
    index = json.loads((folder / "model.safetensors.index.json").read_text())["weight_map"]
    first, other = index["0.weight"], next(v for v in index.values() if v != index["0.weight"])
    with open_source(folder) as src:
        (folder / other).write_bytes(b"\xff" * 16)  # broken after opening: never read so far
        assert src["0.weight"].shape == (32, 16)
        with pytest.raises(jaxnets.FileFormatError, match=other):
            src.infos()  # every shape needs every shard's header
    assert first != other


def test_an_index_that_lies_is_a_file_format_error(sharded) -> None:
    folder, _ = sharded
    index_path = folder / "model.safetensors.index.json"
    doc = json.loads(index_path.read_text())
    doc["weight_map"]["extra.weight"] = doc["weight_map"]["0.weight"]
    index_path.write_text(json.dumps(doc))
    with open_source(folder) as src, pytest.raises(jaxnets.FileFormatError, match=r"missing from the shard: \['extra\.weight'\]"):
        src["0.weight"]
    doc["weight_map"]["extra.weight"] = "../elsewhere.safetensors"
    index_path.write_text(json.dumps(doc))
    with pytest.raises(jaxnets.FileFormatError, match="not a file name in the index's folder"):
        open_source(folder)


def test_sharded_pytorch_bin_folders_read_too(tmp_path: Path) -> None:
    hub = pytest.importorskip("huggingface_hub")
    tm = _torch_mlp()
    hub.save_torch_state_dict(tm.state_dict(), tmp_path, max_shard_size=3000, safe_serialization=False)
    params, state = jaxnets.load_state_dict(_mlp(), tmp_path)
    _same_outputs(_mlp(), params, state, tm)


def test_a_folder_without_weights_is_named(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(jaxnets.FileFormatError, match="a folder without model weights"):
        jaxnets.load_state_dict(_mlp(), tmp_path)


# --- PyTorch files --------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["float8_e4m3fn", "float8_e5m2", "float8_e8m0fnu", "bfloat16", "uint16"])
def test_torch_files_read_every_numpy_representable_dtype_exactly(tmp_path: Path, name: str) -> None:
    t = _tensor(name)
    torch.save({"w": t}, tmp_path / "a.pt")
    with open_source(tmp_path / "a.pt") as src:
        assert src.infos()["w"] == jaxnets.LeafInfo((3, 5), name)
        assert _bits(src["w"]) == _bits(t)


def test_torch_float4_pairs_read_as_float4_values(tmp_path: Path) -> None:
    torch.save({"w": _float4()}, tmp_path / "f4.pt")
    with open_source(tmp_path / "f4.pt") as src:
        assert src.infos()["w"] == jaxnets.LeafInfo((2, 4), "float4_e2m1fn")
        np.testing.assert_array_equal(src["w"].astype(np.float32), _float4_values(_float4()))


@pytest.mark.parametrize("kind", ["sparse", "quantized", "nested", "complex32"])
def test_torch_tensors_that_are_not_dense_arrays_are_refused_by_key_and_kind(tmp_path: Path, kind: str) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch's notes on its prototype features
        t = {
            "sparse": lambda: torch.eye(3).to_sparse_csr(),
            "quantized": lambda: torch.quantize_per_tensor(torch.zeros(3), 0.1, 0, torch.qint8),
            "nested": lambda: torch.nested.nested_tensor([torch.zeros(2), torch.zeros(3)]),
            "complex32": lambda: torch.zeros(2, dtype=torch.complex32),
        }[kind]()
        torch.save({"fine": torch.zeros(2), "odd": t}, tmp_path / "x.pt")
    with pytest.raises(jaxnets.FileFormatError, match=rf"'odd' is (a|of) .*{kind.rstrip('32') if kind != 'complex32' else 'complex32'}") as info:
        open_source(tmp_path / "x.pt")
    assert info.value.path == "odd"


class _Model:  # pickled by reference: torch's weights-only loader refuses it
    pass


def test_a_pickled_object_is_refused_without_torchs_advice_or_warnings(tmp_path: Path) -> None:
    torch.save({"w": torch.zeros(2), "config": _Model()}, tmp_path / "m.pth")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(jaxnets.FileFormatError, match=r"pickled Python objects \(.*_Model\): loading it needs code execution, which jaxnets never does") as info:
            jaxnets.load_state_dict({"w": jnp.zeros(2)}, tmp_path / "m.pth")
    assert "weights_only" not in str(info.value) and "\n" not in str(info.value)


def test_legacy_format_and_nested_checkpoint_dicts_read(tmp_path: Path) -> None:
    tm = _torch_mlp()
    ckpt = {"model": tm.state_dict(), "epoch": 3, "history": [torch.ones(1)]}
    torch.save(ckpt, tmp_path / "old.pth", _use_new_zipfile_serialization=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with open_source(tmp_path / "old.pth") as src:
            assert set(src) == {f"model.{k}" for k in tm.state_dict()} | {"history.0"}
    params, state = jaxnets.load_state_dict(_mlp(), tmp_path / "old.pth", rename=[(r"^history\.", None)], strip_prefix="model.")
    _same_outputs(_mlp(), params, state, tm)


@pytest.mark.parametrize("suffix", [".pt", ".safetensors"])
def test_arrays_read_from_a_file_do_not_change_when_the_file_does(tmp_path: Path, suffix: str) -> None:
    p = tmp_path / f"w{suffix}"
    w = torch.arange(4096, dtype=torch.float32)
    torch.save({"w": w}, p) if suffix == ".pt" else stt.save_file({"w": w}, p)
    with open_source(p) as src:
        got = src["w"]
        size = p.stat().st_size
        with open(p, "r+b") as f:  # same inode, same size: a mapping of it would see this
            f.write(b"\0" * size)
        np.testing.assert_array_equal(got, w.numpy())


# --- the API --------------------------------------------------------------------------------------
def test_load_state_dict_and_check_state_dict_from_every_file_kind(tmp_path: Path, sharded) -> None:
    folder, tm = sharded
    model = _mlp()
    sd = tm.state_dict()
    stt.save_file(sd, tmp_path / "m.safetensors")
    torch.save(sd, tmp_path / "m.pt")
    jaxnets.save_state_dict(tmp_path / "m.jnet", {k: v.numpy() for k, v in sd.items()})
    for path in (tmp_path / "m.safetensors", tmp_path / "m.pt", tmp_path / "m.jnet", folder,
                 folder / "model.safetensors.index.json", str(tmp_path / "m.safetensors")):
        assert jaxnets.check_state_dict(model, path).clean, path
        params, state = jaxnets.load_state_dict(model, path)
        _same_outputs(model, params, state, tm)
    params, state = model.load_state_dict(tmp_path / "m.pt")
    _same_outputs(model, params, state, tm)


def test_float8_safetensors_load_into_a_float8_template(tmp_path: Path) -> None:
    t = torch.tensor([0.5, -1.75, 448.0, 0.0]).to(torch.float8_e4m3fn)
    stt.save_file({"w": t}, tmp_path / "q.safetensors")
    out = jaxnets.load_state_dict({"w": jnp.zeros(4, jnp.float8_e4m3fn)}, tmp_path / "q.safetensors")
    assert _bits(np.asarray(out["w"])) == _bits(t)


def test_a_missing_path_is_file_not_found(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="(?i)no such file"):
        jaxnets.load_state_dict(_mlp(), tmp_path / "nope.safetensors")
