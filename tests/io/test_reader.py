"""The lazy reader (jaxnets/io/reader.py): headers only until a tensor is asked for."""

from __future__ import annotations

import gc
import os
from pathlib import Path

import jax
import numpy as np
import optax
import pytest

import jaxnets
from jaxnets import FileFormatError, nn
from jaxnets.io import _tensors
from jaxnets.io import format as fmt


@pytest.fixture
def model_file(tmp_path: Path) -> Path:
    model = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.Linear(8, 2))
    params, state = model.init(jax.random.key(0))
    opt = jaxnets.optim.adam(1e-3)
    jaxnets.save(tmp_path / "m.jnet", model, params, state, opt_state=opt.init(params), optimizer=opt,
                 metadata={"epoch": 7})  # fmt: skip
    return tmp_path / "m.jnet"


def test_header_exposes_everything_inspect_needs(model_file: Path) -> None:
    with jaxnets.open(model_file) as r:
        assert r.format_version == fmt.FORMAT_VERSION and r.kind == "model"
        assert r.model_config["__class__"] == "nn.Sequential"
        assert r.optimizer_config["__class__"] == "optim.adam"
        assert r.metadata == {"epoch": 7}
        assert r.provenance["jax"] == jax.__version__ and r.jaxnets_version == jaxnets.__version__
        assert r.infos()["0.weight"] == jaxnets.LeafInfo((8, 4), "float32")
        assert r.tensor_nbytes("0.weight") == 8 * 4 * 4
        assert r.infos("opt_state")["0.count"] == jaxnets.LeafInfo((), "int32")
        assert r.nbytes == model_file.stat().st_size
        assert "1.running_mean" in r and len(r) == len(list(r.keys()))
        assert "'model': 9" in repr(r)


def test_reading_one_key_reads_only_around_its_bytes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Small tensors: one read from the key's padding on, of at most 256 KiB, that serves the next
    # small keys too. Large ones: one read of exactly their padding and bytes, into the new array.
    sd = {"a": np.arange(10, dtype=np.float32), "big": np.arange(1 << 16, dtype=np.float32),
          "b": np.ones(3, np.float32), "c": np.zeros(5, np.float32)}  # fmt: skip
    path = tmp_path / "a.jnet"
    jaxnets.save_state_dict(path, sd, fsync=False)
    h = fmt.read_header(path)
    reads: list[tuple[int, int]] = []
    real_pread, real_preadv = os.pread, _tensors._preadv

    def pread(fd: int, n: int, offset: int) -> bytes:
        out = real_pread(fd, n, offset)
        reads.append((offset, offset + len(out)))
        return out

    def preadv(fd: int, views: list, offset: int) -> int:
        n = real_preadv(fd, views, offset)
        reads.append((offset, offset + n))
        return n

    monkeypatch.setattr(os, "pread", pread)
    monkeypatch.setattr(_tensors, "_preadv", preadv)
    segs = {e.key: h.segments(h.position(e))[0] for e in h.entries}
    span = {k: (h.data_start + gap, h.data_start + data + n) for k, (gap, data, n) in segs.items()}
    with jaxnets.open(path) as r:
        np.testing.assert_array_equal(r["b"], sd["b"])
        assert (
            len(reads) == 1
            and reads[0][0] == span["b"][0]
            and span["b"][1] <= reads[0][1] <= span["b"][0] + fmt.READ_AHEAD
        )
        np.testing.assert_array_equal(r["c"], sd["c"])
        assert len(reads) == 1  # served from the same read
        np.testing.assert_array_equal(r["big"], sd["big"])
        assert reads[1:] == [span["big"]]
        np.testing.assert_array_equal(r["a"], sd["a"])
        assert len(reads) == 3 and reads[2][0] == span["a"][0]


def test_mapping_matches_load(model_file: Path) -> None:
    loaded = jaxnets.load(model_file)
    with jaxnets.open(model_file) as r:
        sd = {k: r[k] for k in r}
        opt = {k: r.get_tensor(k, "opt_state") for k in r.keys("opt_state")}
    assert sd.keys() == jaxnets.state_dict(loaded.params, loaded.state).keys()
    for k, v in jaxnets.state_dict(loaded.params, loaded.state).items():
        np.testing.assert_array_equal(sd[k], v)
    flat_opt = jaxnets.flatten(loaded.opt_state)
    assert opt.keys() == flat_opt.keys()
    assert isinstance(loaded.opt_state[0], optax.ScaleByAdamState)


def test_missing_key_and_closed_reader(model_file: Path) -> None:
    r = jaxnets.open(model_file)
    with pytest.raises(KeyError, match="no entry 'nope'"):
        r["nope"]
    with pytest.raises(ValueError, match="group must be one of"):
        r.keys("params")
    r.close()
    with pytest.raises(ValueError, match="closed"):
        r["0.weight"]


def test_verify_reads_everything(model_file: Path) -> None:
    jaxnets.open(model_file).verify()
    data = bytearray(model_file.read_bytes())
    data[-1] ^= 1
    model_file.write_bytes(bytes(data))
    r = jaxnets.open(model_file)  # the header is intact
    with pytest.raises(FileFormatError, match="checksum mismatch"):
        r.verify()


def test_prng_keys_read_back_as_typed_keys(tmp_path: Path) -> None:
    keys = jax.random.split(jax.random.key(3), 4)
    jaxnets.save_state_dict(tmp_path / "k.jnet", {"rng": keys})
    with jaxnets.open(tmp_path / "k.jnet") as r:
        assert r.infos()["rng"] == jaxnets.LeafInfo((4,), "key<fry>")
        got = r["rng"]
        with pytest.raises(FileFormatError, match="PRNG key"):
            r.mmap("rng")
    np.testing.assert_array_equal(jax.random.key_data(got), jax.random.key_data(keys))


# --- many keys: O(1) access, one descriptor, range reads -------------------------------------------


@pytest.fixture(scope="module")
def many_keys(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, np.ndarray]]:
    rng = np.random.default_rng(0)
    sd = {
        f"layers.{i}.weight": rng.standard_normal(3 + i % 5).astype(np.float32)
        for i in range(20_000)
    }
    path = tmp_path_factory.mktemp("many") / "many.jnet"
    jaxnets.save_state_dict(path, sd, fsync=False)
    return path, sd


def test_20000_keys_read_back_equal_by_key_whole_and_mapped(many_keys: tuple[Path, dict]) -> None:
    path, sd = many_keys
    with jaxnets.open(path) as r:
        assert list(r.keys()) == list(sd) and len(r) == 20_000
        by_key = {k: r[k] for k in r.keys()}
        whole = r.read_all()["model"]
        mapped = {k: r.mmap(k) for k in r.keys()}
        infos = r.infos()
    for k, v in sd.items():
        assert by_key[k].dtype == whole[k].dtype == mapped[k].dtype == v.dtype
        assert infos[k] == jaxnets.LeafInfo(v.shape, "float32")
        np.testing.assert_array_equal(by_key[k], v)
        np.testing.assert_array_equal(whole[k], v)
        np.testing.assert_array_equal(mapped[k], v)  # views stay valid after close
    assert not mapped["layers.0.weight"].flags.writeable


def test_reading_one_key_never_touches_another_tensors_bytes(tmp_path: Path) -> None:
    sd = {f"t{i}": np.full(100, i, np.float32) for i in range(5)}
    path = tmp_path / "a.jnet"
    jaxnets.save_state_dict(path, sd, fsync=False)
    h = fmt.read_header(path)
    data = bytearray(path.read_bytes())
    for e in h.entries:
        if e.key != "t2":  # wreck every other tensor's bytes and the padding after t2
            data[h.data_start + e.offset : h.data_start + e.offset + e.length] = b"\xff" * e.length
    gap, _, _ = h.segments(3)[0]
    data[h.data_start + gap] ^= 1
    path.write_bytes(bytes(data))
    with jaxnets.open(path) as r:
        np.testing.assert_array_equal(r["t2"], sd["t2"])
        np.testing.assert_array_equal(r.mmap("t2"), sd["t2"])
        with pytest.raises(FileFormatError, match="'t1': checksum mismatch") as info:
            r["t1"]
        assert info.value.path == "t1" and info.value.file == str(path)
        with pytest.raises(FileFormatError, match="'t3': corrupted padding"):
            r["t3"]
        with pytest.raises(FileFormatError, match="'t3': corrupted padding"):
            r.mmap("t3")
        with pytest.raises(FileFormatError, match="'t0': checksum mismatch"):
            r.verify()


def _open_fds(path: Path) -> set[int]:
    """This process's descriptors open on ``path`` (others come and go with other threads:
    orbax's, the test runner's)."""
    if not os.path.isdir("/proc/self/fd"):
        pytest.skip("needs /proc/self/fd")
    target = os.path.realpath(path)
    out = set()
    for fd in os.listdir("/proc/self/fd"):
        try:
            if os.readlink(f"/proc/self/fd/{fd}") == target:
                out.add(int(fd))
        except OSError:  # closed meanwhile (the listing's own descriptor among them)
            pass
    return out


def test_one_descriptor_per_reader_opened_lazily_and_closed_by_close(model_file: Path) -> None:
    before = _open_fds(model_file)
    r = jaxnets.open(model_file)
    assert _open_fds(model_file) == before  # the header is read and the file closed
    for k in r.keys():
        r[k]
    for k in r.keys("opt_state"):
        r.get_tensor(k, "opt_state")
    assert len(_open_fds(model_file) - before) == 1
    view = r.mmap("0.weight")
    r.close()
    r.close()  # twice is fine
    np.testing.assert_array_equal(view, jaxnets.open(model_file)["0.weight"])
    del view  # the mapping lives as long as its views (before Python 3.13 it holds a descriptor)
    gc.collect()
    assert _open_fds(model_file) == before
    for call in (lambda: r["0.weight"], lambda: r.mmap("0.weight"), lambda: r.read_all(), r.verify):
        with pytest.raises(ValueError, match="the reader is closed"):
            call()


def test_an_unclosed_reader_releases_its_descriptor_when_dropped(model_file: Path) -> None:
    before = _open_fds(model_file)
    r = jaxnets.open(model_file)
    r["0.weight"]
    assert len(_open_fds(model_file) - before) == 1
    del r
    gc.collect()
    assert _open_fds(model_file) == before


def test_threads_share_a_reader_and_close_never_breaks_a_read_in_progress(
    many_keys: tuple[Path, dict],
) -> None:
    import threading

    path, sd = many_keys
    keys = list(sd)
    r = jaxnets.open(path)
    errors: list[BaseException] = []
    reads = [0] * 4
    started = threading.Barrier(5)

    def work(t: int) -> None:
        started.wait()
        for k in keys[t::4]:
            try:
                got = r[k]
            except ValueError as e:  # closed: the only acceptable failure
                assert "closed" in str(e)
                return
            except BaseException as e:  # pragma: no cover - reported below
                errors.append(e)
                return
            if not np.array_equal(got, sd[k]):
                errors.append(AssertionError(k))
            reads[t] += 1

    threads = [threading.Thread(target=work, args=(t,)) for t in range(4)]
    for th in threads:
        th.start()
    started.wait()
    while sum(reads) < 2000:
        threading.Event().wait(0.001)
    r.close()
    for th in threads:
        th.join(timeout=60)
    assert not errors and sum(reads) >= 2000 and r._fd is None


def test_a_file_replaced_after_opening_is_refused_not_mixed(tmp_path: Path) -> None:
    path = tmp_path / "a.jnet"
    jaxnets.save_state_dict(
        path, {"a": np.zeros(4, np.float32), "b": np.ones(4, np.float32)}, fsync=False
    )
    r = jaxnets.open(path)
    jaxnets.save_state_dict(
        path, {"a": np.full(4, 7, np.float32), "b": np.ones(4, np.float32)}, fsync=False
    )
    with pytest.raises(FileFormatError, match="replaced or modified since its header was read"):
        r["a"]
    with pytest.raises(FileFormatError, match="replaced or modified"):
        r.read_all()
    with pytest.raises(FileFormatError, match="replaced or modified"):
        r.mmap("a")
    np.testing.assert_array_equal(jaxnets.open(path)["a"], np.full(4, 7, np.float32))


def test_entries_are_indexed_by_key_and_position(model_file: Path) -> None:
    h = fmt.read_header(model_file)
    for i, e in enumerate(h.entries):
        assert h.position(e) == i and h.entry(i) == e and h.group(e.group)[e.key] == e
        assert (h.data_start + e.offset) % fmt.ALIGN == 0 and e.checksum == int.from_bytes(
            e.xxh3, "big"
        )
    with pytest.raises(ValueError, match="not an entry of this file"):
        h.position(h.entries[0]._replace(length=1))
    with pytest.raises(TypeError):
        h.group("model")["x"] = h.entries[0]  # type: ignore[index]
