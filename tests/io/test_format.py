"""The byte layout (jaxnets/io/format.py): valid msgpack, bit-exact dtypes, corruption and hostile files."""

from __future__ import annotations

import contextlib
import os
import pickle
import random
import struct
import subprocess
import sys
import zlib
from collections.abc import Iterator
from pathlib import Path

import jax
import jax.numpy as jnp
import ml_dtypes
import msgpack
import numpy as np
import pytest
import xxhash

import jaxnets
from jaxnets import FileFormatError, JaxnetsError, nn
from jaxnets.io import _layout
from jaxnets.io import format as fmt

# --- helpers ----------------------------------------------------------------------------------------


@contextlib.contextmanager
def _x64() -> Iterator[None]:
    """jax's 64-bit mode for one block. ``jax.enable_x64`` is newer than the floor (jax 0.7.1)."""
    old = bool(jax.config.read("jax_enable_x64"))
    jax.config.update("jax_enable_x64", True)
    try:
        yield
    finally:
        jax.config.update("jax_enable_x64", old)


def _arrays() -> dict[str, object]:
    """One array per stored dtype, with arbitrary bit patterns where every pattern is valid."""
    rng = np.random.default_rng(0)
    out: dict[str, object] = {}
    for name, dt in fmt._dtypes().items():
        if dt.itemsize >= 1 and name not in ("bool",) and not name.startswith(("int", "uint", "float4", "float6")) or name in (
            "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64",
        ):  # fmt: skip
            raw = rng.integers(0, 256, size=3 * 5 * dt.itemsize, dtype=np.uint8)
            out[name] = raw.view(dt).reshape(3, 5)
        else:  # sub-byte types and bool: only their valid values
            out[name] = np.asarray(rng.integers(0, 2, size=(4, 2))).astype(dt)
    out["scalar_f32"] = np.array(3.5, np.float32)
    out["scalar_bf16"] = np.array(-1.25, ml_dtypes.bfloat16)
    out["empty_f32"] = np.zeros((0, 7), np.float32)
    out["empty_int4"] = np.zeros((3, 0), ml_dtypes.int4)
    out["key_threefry"] = jax.random.split(jax.random.key(7), 3)
    out["key_rbg"] = jax.random.key(1, impl="rbg")
    out["key_scalar_empty"] = jax.random.split(jax.random.key(2), 0)
    return out


def _bits(x: object) -> tuple[str, tuple[int, ...], bytes]:
    if isinstance(x, jax.Array) and jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
        return str(x.dtype), x.shape, np.asarray(jax.random.key_data(x)).tobytes()
    a = np.asarray(x)
    return a.dtype.name, a.shape, a.tobytes()


def _small_model_file(path: Path) -> Path:
    model = nn.Sequential(nn.Linear(3, 4), nn.Linear(4, 2))
    params, state = model.init(jax.random.key(0))
    jaxnets.save(path, model, params, state, metadata={"note": "x"}, fsync=False)
    return path


def _craft(
    path: Path,
    header: bytes | object,
    data: bytes = b"",
    *,
    version: int = 1,
    magic: bytes = b"JAXNETS",
) -> Path:
    """A file with a valid preamble and header checksum around an arbitrary (hostile) header."""
    raw = header if isinstance(header, bytes) else msgpack.packb(header, use_bin_type=True)
    start = -(-(fmt.PREAMBLE_LEN + len(raw)) // 64) * 64
    body = raw + b"\xc0" * (start - fmt.PREAMBLE_LEN - len(raw)) + data
    pre = (
        b"\x95\xa7" + magic
        + struct.pack(">BH", 0xCD, version)
        + struct.pack(">BQ", 0xCF, len(raw))
        + struct.pack(">BI", 0xCE, zlib.crc32(raw))
        + struct.pack(">BQ", 0xCF, fmt.PREAMBLE_LEN + len(body))
    )  # fmt: skip
    path.write_bytes(pre + body)
    return path


def _entry(**kw: object) -> dict[str, object]:
    e = {"key": "w", "group": "model", "dtype": "float32", "shape": [2], "offset": 64, "length": 8,
         "xxh3": struct.pack(">Q", xxhash.xxh3_64_intdigest(b"\0" * 8))}  # fmt: skip
    e.update(kw)
    return e


_ONE_TENSOR_DATA = b"\xc0" * 59 + b"\xc6" + struct.pack(">I", 8) + b"\0" * 8


# --- layout and dtypes --------------------------------------------------------------------------------


def test_every_dtype_round_trips_bit_exactly(tmp_path: Path) -> None:
    arrays = _arrays()
    jaxnets.save_state_dict(tmp_path / "a.jnet", arrays, fsync=False)
    with _x64():  # float64, int64, complex128 need jax's 64-bit mode
        loaded = jaxnets.load(tmp_path / "a.jnet", device="cpu").params
    with jaxnets.open(tmp_path / "a.jnet") as reader:
        lazy = {k: reader[k] for k in reader}
        infos = reader.infos()
    assert list(loaded) == list(arrays)
    for k, x in arrays.items():
        assert _bits(loaded[k]) == _bits(x), k
        assert _bits(lazy[k]) == _bits(x), k
        assert infos[k] == jaxnets.LeafInfo(*_bits(x)[1::-1]), k


def test_64_bit_entries_load_exactly_or_not_at_all_without_x64(x64, tmp_path: Path) -> None:
    path = tmp_path / "a.jnet"
    with x64(True):  # jax arrays (numpy ones come back as numpy, 64-bit and all)
        tree = {"count": jnp.array(7, jnp.int64), "x": jnp.array([0.1], jnp.float64)}
    jaxnets.save_state_dict(path, tree, fsync=False)
    with pytest.raises(JaxnetsError, match=r"x: float64 values .*jax_enable_x64"):
        jaxnets.load(path)
    loaded = jaxnets.load(path, dtype={"x": "float32"}).params
    assert loaded["count"].dtype == np.int32 and int(loaded["count"]) == 7
    assert loaded["x"].dtype == np.float32 and loaded["x"][0] == np.float32(0.1)


def test_file_is_a_sequence_of_msgpack_objects(tmp_path: Path) -> None:
    arrays = {"a": np.arange(10, dtype=np.float32), "b": np.ones((2, 3), np.int8), "c": np.zeros(0)}
    jaxnets.save_state_dict(tmp_path / "a.jnet", arrays, fsync=False)
    objs = list(msgpack.Unpacker(open(tmp_path / "a.jnet", "rb"), raw=False, max_bin_len=1 << 20))
    assert objs[0][:2] == ["JAXNETS", fmt.FORMAT_VERSION]
    assert [t["key"] for t in objs[1]["tensors"]] == ["a", "b", "c"]
    payloads = [o for o in objs[2:] if o is not None]
    assert payloads == [a.tobytes() for a in arrays.values()]


def test_tensor_data_is_64_byte_aligned(tmp_path: Path) -> None:
    arrays = {f"t{i}": np.arange(i, dtype=np.uint8) for i in range(1, 9)}
    jaxnets.save_state_dict(tmp_path / "a.jnet", arrays, fsync=False)
    header = fmt.read_header(tmp_path / "a.jnet")
    assert header.data_start % 64 == 0
    assert all((header.data_start + e.offset) % 64 == 0 for e in header.entries)


def test_tensor_over_segment_size_is_split_and_round_trips(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_layout, "MAX_SEGMENT", 128)  # a 4 GiB tensor's layout, in 1000 bytes
    big = np.arange(1000, dtype=np.uint8)
    path = tmp_path / "a.jnet"
    jaxnets.save_state_dict(path, {"big": big, "after": np.ones(3, np.float32)}, fsync=False)
    objs = list(msgpack.Unpacker(open(path, "rb"), raw=False))
    assert [len(o) for o in objs[2:] if o is not None] == [128] * 7 + [104, 12]
    with jaxnets.open(path) as reader:
        np.testing.assert_array_equal(reader["big"], big)
        np.testing.assert_array_equal(reader["after"], np.ones(3, np.float32))
        with pytest.raises(FileFormatError, match="segments"):
            reader.mmap("big")
    data = bytearray(path.read_bytes())
    data[fmt.read_header(path).data_start + 200] ^= 0x04  # inside a gap between segments
    path.write_bytes(bytes(data))
    with pytest.raises(FileFormatError, match="big"):
        jaxnets.load(path)


def test_unsupported_dtype_is_refused_on_save(tmp_path: Path) -> None:
    with pytest.raises(JaxnetsError, match="obj: dtype object"):
        jaxnets.save_state_dict(tmp_path / "a.jnet", {"obj": np.array([None, 1], dtype=object)})


# --- corruption ---------------------------------------------------------------------------------------


def test_truncation_anywhere_is_detected(tmp_path: Path) -> None:
    good = _small_model_file(tmp_path / "m.jnet").read_bytes()
    bad = tmp_path / "t.jnet"
    cuts = sorted(set(range(0, len(good), 7)) | {1, 34, 35, 36, len(good) - 1})
    for cut in cuts:
        bad.write_bytes(good[:cut])
        with pytest.raises(FileFormatError, match="t.jnet"):
            jaxnets.load(bad)


def test_every_single_bit_flip_is_detected(tmp_path: Path) -> None:
    good = _small_model_file(tmp_path / "m.jnet").read_bytes()
    bad = tmp_path / "f.jnet"
    rng = random.Random(0)
    bits = list(range(8 * 64)) + rng.sample(
        range(8 * len(good)), 400
    )  # the whole preamble, and more
    for bit in bits:
        data = bytearray(good)
        data[bit // 8] ^= 1 << (bit % 8)
        bad.write_bytes(bytes(data))
        with pytest.raises(FileFormatError, match="f.jnet"):
            jaxnets.load(bad)


def test_flip_in_data_is_detected_by_the_lazy_reader_for_that_key_only(tmp_path: Path) -> None:
    path = tmp_path / "a.jnet"
    jaxnets.save_state_dict(
        path, {"a": np.ones(16, np.float32), "b": np.zeros(16, np.float32)}, fsync=False
    )
    h = fmt.read_header(path)
    data = bytearray(path.read_bytes())
    data[h.data_start + h.entries[1].offset + 3] ^= 0x80
    path.write_bytes(bytes(data))
    with jaxnets.open(path) as reader:
        np.testing.assert_array_equal(reader["a"], np.ones(16, np.float32))
        with pytest.raises(FileFormatError, match="'b'.*checksum"):
            reader["b"]


# --- hostile files --------------------------------------------------------------------------------------


def test_wrong_magic(tmp_path: Path) -> None:
    with pytest.raises(FileFormatError, match="wrong magic"):
        jaxnets.load(_craft(tmp_path / "a.jnet", {"tensors": []}, magic=b"JAXNOTS"))


def test_unknown_version_says_to_upgrade(tmp_path: Path) -> None:
    with pytest.raises(FileFormatError, match="format version 2.*upgrade jaxnets"):
        jaxnets.load(_craft(tmp_path / "a.jnet", {"tensors": []}, version=2))


def test_pickle_payload_is_rejected_and_never_executed(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):  # type: ignore[no-untyped-def]
            return (Path.touch, (marker,))

    payload = pickle.dumps(Evil())
    (tmp_path / "p.jnet").write_bytes(payload)
    with pytest.raises(FileFormatError, match="wrong magic"):
        jaxnets.load(tmp_path / "p.jnet")
    # The same payload inside a well-formed file: as a header string and as tensor bytes.
    evil = _craft(tmp_path / "e.jnet", {"tensors": [], "metadata": payload}, b"")
    with pytest.raises(FileFormatError):
        jaxnets.load(evil)
    jaxnets.save_state_dict(
        tmp_path / "d.jnet", {"x": np.frombuffer(payload, np.uint8)}, fsync=False
    )
    assert jaxnets.load(tmp_path / "d.jnet").params["x"].tobytes() == payload
    assert not marker.exists()


def test_a_torch_checkpoint_is_rejected_without_unpickling(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    torch.save({"w": torch.ones(2)}, tmp_path / "t.pt")
    with pytest.raises(FileFormatError, match="not a jaxnets file"):
        jaxnets.open(tmp_path / "t.pt")


@pytest.mark.parametrize(
    "header, match",
    [
        (b"\xdb\xff\xff\xff\xf0abc", "malformed header"),  # str of 4 GiB declared
        (b"\xdd\xff\xff\xff\xf0\xc0", "malformed header"),  # array of 4 G items declared
        (b"\xdf\xff\xff\xff\xf0\xc0", "malformed header"),  # map of 4 G pairs declared
        (b"\x91" * 200_000 + b"\xc0", "malformed header"),  # nested 200k levels deep
        (b"\xc7\x03\x01abc", "malformed header"),  # an ext object
        (b"\x81\xa1a\xc0\xc0", "malformed header"),  # trailing bytes after the map
        (msgpack.packb([1, 2]), "not a map"),
        (msgpack.packb({"x": 1}), "no tensor index"),
        (msgpack.packb({1: 1}), "malformed header"),  # non-str map key
    ],
)
def test_hostile_header_bytes(tmp_path: Path, header: bytes, match: str) -> None:
    with pytest.raises(FileFormatError, match=match):
        jaxnets.load(_craft(tmp_path / "a.jnet", header))


@pytest.mark.parametrize(
    "entries, match",
    [
        ([_entry(offset=0)], "out of place"),
        ([_entry(offset=1 << 40)], "out of place"),
        ([_entry(), _entry(key="v", offset=64)], "out of place.*no overlaps"),  # overlaps the first
        ([_entry(length=1 << 40, shape=[1 << 38])], "claimed"),
        ([_entry(shape=[3])], "does not match shape"),
        ([_entry(shape=[1 << 30, 1 << 30], length=1 << 62)], "claimed"),
        ([_entry(shape=[-1])], "malformed shape"),
        ([_entry(shape=[1] * 65)], "malformed shape"),
        ([_entry(shape=[1 << 62])], "malformed shape"),
        ([_entry(dtype="object")], "unknown dtype 'object'"),
        ([_entry(dtype="O")], "unknown dtype"),
        ([_entry(), _entry()], "duplicate"),
        ([_entry(group="evil")], "key/group"),
        ([_entry(xxh3=5)], "checksum"),
        ([_entry(xxh3=b"\0" * 8)], "'w': checksum mismatch"),
        ([_entry(prng_impl="evil")], "PRNG"),
        (["x"], "not a map"),
        ("x", "no tensor index"),
    ],
)
def test_hostile_tensor_index(tmp_path: Path, entries: object, match: str) -> None:
    with pytest.raises(FileFormatError, match=match):
        jaxnets.load(_craft(tmp_path / "a.jnet", {"tensors": entries}, _ONE_TENSOR_DATA))


def test_crafted_file_with_valid_index_loads(tmp_path: Path) -> None:
    # The hostile cases above fail for the stated reason, not because _craft is wrong.
    path = _craft(tmp_path / "a.jnet", {"tensors": [_entry()], "trees": {}}, _ONE_TENSOR_DATA)
    np.testing.assert_array_equal(jaxnets.load(path).params["w"], np.zeros(2, np.float32))


@pytest.mark.parametrize(
    "fields, error, match",
    [
        (
            {"kind": "model", "model": {"__class__": "os.system", "config": {}}},
            jaxnets.RegistryError,
            "'os.system' is not registered",
        ),
        ({"kind": "model", "model": {"__tuple__": 5}}, FileFormatError, "malformed config"),
        (
            {"metadata": {"__array__": [1], "dtype": "object", "shape": [1]}},
            FileFormatError,
            "a.jnet.*object",
        ),
        (
            {"trees": {"params": {"t": "dict", "k": ["w"], "c": [{"t": "leaf"}]}}},
            FileFormatError,
            "a.jnet.*lacks",
        ),
        (
            {"trees": {"params": {"t": "dict", "k": ["a", "b"], "c": [{"t": "leaf"}]}}},
            FileFormatError,
            "a.jnet.*malformed",
        ),
        ({"trees": {"params": {"t": "eval"}}}, FileFormatError, "a.jnet.*unknown tree node"),
    ],
)
def test_hostile_configs(tmp_path: Path, fields: dict, error: type, match: str) -> None:
    with pytest.raises(error, match=match):
        jaxnets.load(_craft(tmp_path / "a.jnet", {"tensors": [], **fields}))


def _nested_spec(depth: int) -> bytes:
    # {"trees": {"params": {"t": "list", "c": [ ... {"t": "leaf"} ... ]}}, "tensors": []}
    return (
        b"\x82\xa7tensors\x90\xa5trees\x81\xa6params"
        + b"\x82\xa1t\xa4list\xa1c\x91" * depth
        + b"\x81\xa1t\xa4leaf"
    )


@pytest.mark.parametrize("depth, match", [(300, "deeper than 256"), (100_000, "malformed header")])
def test_absurdly_nested_structures(tmp_path: Path, depth: int, match: str) -> None:
    with pytest.raises(FileFormatError, match=match):
        jaxnets.load(_craft(tmp_path / "a.jnet", _nested_spec(depth)))


# --- atomic writes ------------------------------------------------------------------------------------


class _Boom:
    """A leaf that fails only when its bytes are asked for, i.e. half-way through streaming."""

    shape = (4,)
    dtype = np.dtype("float32")

    def __array__(self, dtype=None, copy=None):  # type: ignore[no-untyped-def]
        raise RuntimeError("device lost")


def test_failed_save_leaves_previous_file_and_no_temp_file(tmp_path: Path) -> None:
    path = tmp_path / "w.jnet"
    jaxnets.save_state_dict(path, {"a": np.ones(3)})
    before = path.read_bytes()
    with pytest.raises(RuntimeError, match="device lost"):
        jaxnets.save_state_dict(path, {"a": np.zeros(1 << 20), "b": _Boom()})
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["w.jnet"]


def test_interrupted_save_process_leaves_previous_file(tmp_path: Path) -> None:
    # A process killed while streaming: the final name still holds the old, valid file.
    path = tmp_path / "w.jnet"
    jaxnets.save_state_dict(path, {"a": np.ones(3)}, fsync=False)
    code = (
        "import os, numpy as np, jaxnets\n"
        "class Die:\n"
        "    shape = (2,); dtype = np.dtype('float32')\n"
        "    def __array__(self, dtype=None, copy=None): os._exit(3)\n"
        f"jaxnets.save_state_dict({str(path)!r}, {{'a': np.zeros(1 << 20), 'b': Die()}})\n"
    )
    assert subprocess.run([sys.executable, "-c", code]).returncode == 3
    np.testing.assert_array_equal(jaxnets.load(path).params["a"], np.ones(3))


# --- big arrays -----------------------------------------------------------------------------------------


@pytest.mark.slow
def test_array_over_2gib_round_trips_and_one_small_key_reads_cheaply(tmp_path: Path) -> None:
    n = (2 << 30) + (1 << 28) + 3  # 2.25 GiB + 3 bytes, uint8
    big = np.empty(n, np.uint8)
    chunk = 1 << 26
    pattern = (np.arange(chunk, dtype=np.uint32) * 2654435761 >> 13).astype(np.uint8)
    for i in range(0, n, chunk):
        big[i : i + chunk] = pattern[: min(chunk, n - i)]
    path = tmp_path / "big.jnet"
    jaxnets.save_state_dict(
        path, {"small": np.arange(5, dtype=np.float32), "big": big}, fsync=False
    )
    del big
    with jaxnets.open(path) as reader:
        assert reader.infos()["big"] == jaxnets.LeafInfo((n,), "uint8")
        view = reader.mmap("big")
        h = xxhash.xxh3_64()
        for i in range(0, n, chunk):
            part = view[i : i + chunk]
            np.testing.assert_array_equal(part, pattern[: len(part)])
            h.update(part)
        assert (
            h.intdigest()
            == reader.entries()["big"].checksum
            == int.from_bytes(reader.entries()["big"].xxh3, "big")
        )
        del view
    script = Path(__file__).parent / "scripts" / "read_one_key.py"
    out = subprocess.run(
        [sys.executable, str(script), str(path), "small"],
        capture_output=True,
        text=True,
        check=True,
    )
    peak, value = out.stdout.split("\n")[:2]
    assert value == "[0.0, 1.0, 2.0, 3.0, 4.0]"
    assert int(peak) < path.stat().st_size // 4, f"peak RSS {int(peak) >> 20} MiB"


def test_data_beyond_the_index_is_refused(tmp_path: Path) -> None:
    path = _craft(tmp_path / "a.jnet", {"tensors": [_entry()]}, _ONE_TENSOR_DATA + b"\xc0" * 64)
    with pytest.raises(FileFormatError, match="covers 72 data bytes, the file holds 136"):
        jaxnets.load(path)


# --- header lies: every number bounded, every product checked, naming file and key -----------------


@pytest.mark.parametrize(
    "entry, match",
    [
        # numpy would raise "array is too big" (the product of the non-zero dims overflows int64)
        (_entry(shape=[0, 1 << 61, 1 << 61], length=0), r"tensor 'w': shape .* too large"),
        (_entry(shape=[0, (1 << 62) - 1], length=0), r"tensor 'w': shape .* too large"),
        # jax would raise "TypeError: invalid PRNG key data" when wrapping the key
        (
            _entry(prng_impl="threefry2x32", dtype="uint32", shape=[2, 3], length=24),
            r"'w': malformed PRNG key",
        ),
        (_entry(prng_impl="rbg", dtype="uint32", shape=[2], length=8), r"'w': malformed PRNG key"),
        (
            _entry(prng_impl="threefry2x32", dtype="float32", shape=[2], length=8),
            r"'w': malformed PRNG key",
        ),
        (
            _entry(prng_impl=["threefry2x32"], dtype="uint32", shape=[2], length=8),
            r"'w': malformed PRNG key",
        ),
        (_entry(offset=-64), r"'w': offset -64 out of place"),
        (_entry(offset=1.0 * 64), r"'w': malformed offset"),
        (_entry(length=True), r"'w': malformed offset"),
        (_entry(shape=[2.0]), r"'w': malformed shape"),
        (_entry(shape=[True, 2]), r"'w': malformed shape"),
        (_entry(shape="ab"), r"'w': malformed shape"),
        (_entry(dtype=["float32"]), r"'w': unknown dtype"),
        (_entry(group=["model"]), r"key/group"),
        (_entry(key=5), r"tensor index entry 0: missing, duplicate or malformed key/group"),
    ],
)
def test_header_lies_are_file_format_errors_naming_file_and_key(
    tmp_path: Path, entry: dict, match: str
) -> None:
    path = _craft(tmp_path / "a.jnet", {"tensors": [entry]}, _ONE_TENSOR_DATA)
    with pytest.raises(FileFormatError, match=match) as info:
        jaxnets.open(path)
    assert info.value.file == str(path) and str(path) in str(info.value)
    assert info.value.path == (entry["key"] if isinstance(entry["key"], str) else None)


def test_a_missing_field_names_the_entry(tmp_path: Path) -> None:
    entry = _entry()
    del entry["length"]
    with pytest.raises(FileFormatError, match=r"tensor 'w': malformed offset/length/checksum"):
        jaxnets.open(_craft(tmp_path / "a.jnet", {"tensors": [entry]}, _ONE_TENSOR_DATA))


def test_the_first_offending_entry_is_named_among_many(tmp_path: Path) -> None:
    path = tmp_path / "a.jnet"
    jaxnets.save_state_dict(
        path, {f"t{i}": np.full(3, i, np.float32) for i in range(50)}, fsync=False
    )
    objs = list(msgpack.Unpacker(open(path, "rb"), raw=False))
    header = objs[1]
    header["tensors"][37]["shape"] = [4]  # the length no longer matches
    data = path.read_bytes()[fmt.read_header(path).data_start :]
    with pytest.raises(
        FileFormatError, match=r"tensor 't37': length 12 does not match shape \(4,\)"
    ):
        jaxnets.open(_craft(tmp_path / "b.jnet", header, data))


def test_prng_key_shapes_are_jax_s() -> None:
    # core/prng.py knows the floor's impls without importing jax; they must be what jax says.
    from jaxnets.core.prng import _KNOWN

    for impl, (name, key_shape) in _KNOWN.items():
        k = jax.random.key(0, impl=impl)
        assert (str(k.dtype), jax.random.key_data(k).shape) == (name, key_shape), impl
        assert fmt.prng_key_info(impl) == (name, len(key_shape))


def test_a_key_of_an_impl_newer_than_the_table_round_trips(tmp_path: Path) -> None:
    for impl in ("threefry2x32", "rbg", "philox2x32", "philox4x32", "threefry4x32"):
        try:  # newer impls (philox4x32 on jax >= 0.9) are looked up in the running jax
            keys = jax.random.split(jax.random.key(5, impl=impl), 3)
        except ValueError:
            continue  # this jax has no such impl
        jaxnets.save_state_dict(tmp_path / f"{impl}.jnet", {"k": keys}, fsync=False)
        with jaxnets.open(tmp_path / f"{impl}.jnet") as r:
            back = r["k"]
        assert back.dtype == keys.dtype
        np.testing.assert_array_equal(jax.random.key_data(back), jax.random.key_data(keys))


def test_empty_tensor_with_large_dims_round_trips(tmp_path: Path) -> None:
    # Big but bounded dims of an empty tensor are legal: only the product is bounded.
    x = np.zeros((0, 1 << 20, 1 << 20), np.float32)
    jaxnets.save_state_dict(tmp_path / "a.jnet", {"x": x}, fsync=False)
    with jaxnets.open(tmp_path / "a.jnet") as r:
        assert r["x"].shape == x.shape and r.read_all()["model"]["x"].shape == x.shape


def test_entry_items_in_any_order_read_the_same(tmp_path: Path) -> None:
    # The writer puts "xxh3" last (write_file patches it in place); readers must not rely on it.
    entry = dict(reversed(list(_entry(prng_impl="threefry2x32", dtype="uint32").items())))
    path = _craft(tmp_path / "a.jnet", {"tensors": [entry]}, _ONE_TENSOR_DATA)
    with jaxnets.open(path) as r:
        assert r.infos()["w"] == jaxnets.LeafInfo((), "key<fry>")
        np.testing.assert_array_equal(jax.random.key_data(r["w"]), np.zeros(2, np.uint32))


@pytest.mark.parametrize(
    "sources, match",
    [
        ([fmt.TensorSource("a", "params", "float32", (1,), np.ones)], "groups one of"),
        ([fmt.TensorSource(1, "model", "float32", (1,), np.ones)], "keys are str"),  # type: ignore[arg-type]
        (
            [fmt.TensorSource("a", "model", "object", (1,), np.ones)],
            "'object' is not one jaxnets stores",
        ),
        (
            [fmt.TensorSource("a", "model", "float32", (1,), np.ones)] * 2,
            "a: stored twice in group 'model'",
        ),
    ],
)
def test_what_a_reader_would_refuse_is_not_written(
    tmp_path: Path, sources: list, match: str
) -> None:
    with pytest.raises(ValueError, match=match):
        fmt.write_file(tmp_path / "a.jnet", sources, {})
    assert os.listdir(tmp_path) == []
