"""The lazy reader (jaxnets/io/reader.py): headers only until a tensor is asked for."""

from __future__ import annotations

from pathlib import Path

import jax
import numpy as np
import optax
import pytest

import jaxnets
from jaxnets import FileFormatError, nn
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


def test_reading_one_key_reads_only_its_bytes(
    model_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    r = jaxnets.open(model_file)
    h = fmt.read_header(model_file)
    reads: list[tuple[int, int]] = []
    real = fmt._preadv

    def spy(fd: int, views: list, offset: int) -> int:
        n = real(fd, views, offset)
        reads.append((offset, offset + n))
        return n

    monkeypatch.setattr(fmt, "_preadv", spy)
    w = r["2.weight"]
    i = h.position(r.entries()["2.weight"])
    gap, data, length = h.segments(i)[0]
    # One read: the padding and bin32 header before the tensor, then its bytes, nothing else.
    assert reads == [(h.data_start + gap, h.data_start + data + length)]
    assert w.shape == (2, 8) and w.dtype == np.float32
    np.testing.assert_array_equal(r.mmap("2.weight"), w)


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
