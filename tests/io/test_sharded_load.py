"""``jaxnets.load(..., sharding=...)`` and ``Reader.get_tensor(..., sharding=...)``: each array
built from range reads of its shards, with every check of the whole-file path; progress bars.

Several devices and processes: tests/multihost/test_files.py.
"""

from __future__ import annotations

from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxnets
from jaxnets import FileFormatError, JaxnetsError, nn
from jaxnets.io import _tensors
from jaxnets.io import format as fmt

ONE = jax.sharding.SingleDeviceSharding(jax.devices()[0])


@pytest.fixture
def weights(tmp_path: Path) -> tuple[Path, dict[str, jax.Array]]:
    tree = {
        "big": jnp.arange(300_000, dtype=jnp.float32).reshape(600, 500),  # over READ_AHEAD: blocks
        "small": jnp.arange(6, dtype=jnp.float32).reshape(2, 3),  # read whole, sliced
        "key": jax.random.split(jax.random.key(3), 2),
        "n": jnp.int32(7),
    }
    path = tmp_path / "w.jnet"
    jaxnets.save_state_dict(path, tree, fsync=False)
    return path, tree


def test_a_sharded_load_gives_back_what_was_saved_where_asked(weights) -> None:
    path, tree = weights
    for verify in (True, False):
        got = jaxnets.load(path, sharding=ONE, verify=verify).params
        assert list(got) == list(tree)  # the file's order
        for k in ("big", "small", "n"):
            assert got[k].sharding == ONE and got[k].dtype == tree[k].dtype
            np.testing.assert_array_equal(np.asarray(got[k]), np.asarray(tree[k]))
        assert (jax.random.key_data(got["key"]) == jax.random.key_data(tree["key"])).all()


def test_a_sharding_function_places_some_leaves_and_leaves_others_to_the_default(weights) -> None:
    path, _ = weights
    asked = {}

    def fn(key, info):
        asked[key] = info
        return ONE if key == "big" else None

    got = jaxnets.load(path, sharding=fn).params
    assert asked["big"] == jaxnets.LeafInfo((600, 500), "float32")
    assert got["big"].sharding == ONE and got["small"].shape == (2, 3)


def test_sharding_takes_one_sharding_or_a_function(weights) -> None:
    path, _ = weights
    with pytest.raises(TypeError, match="got a mapping"):
        jaxnets.load(path, sharding={"big": ONE})
    with pytest.raises(ValueError, match="not both"):
        jaxnets.load(path, sharding=ONE, device="cpu")


def test_a_sharded_load_refuses_a_corrupted_tensor_by_name(weights) -> None:
    path, _ = weights
    header = fmt.read_header(path)
    i = header.positions["model"]["big"]
    raw = bytearray(path.read_bytes())
    raw[header.data_start + header.columns.offsets[i] + 999_999] ^= 0x01
    path.write_bytes(bytes(raw))
    with pytest.raises(FileFormatError, match="'big': checksum mismatch"):
        jaxnets.load(path, sharding=ONE)
    # verify=False reads only the shards: the flipped bit comes back as it is in the file.
    got = jaxnets.load(path, sharding=ONE, verify=False).params["big"]
    assert np.asarray(got).reshape(-1)[999_999 // 4] != 999_999 // 4


def test_a_sharded_load_casts_block_by_block(weights) -> None:
    path, tree = weights
    got = jaxnets.load(path, sharding=ONE, dtype={"big": "bfloat16"}).params
    assert got["big"].dtype == jnp.bfloat16 and got["small"].dtype == jnp.float32
    np.testing.assert_array_equal(np.asarray(got["big"]), np.asarray(tree["big"].astype(jnp.bfloat16)))


def test_a_sharded_load_refuses_64_bit_values_jax_would_change(tmp_path: Path, x64) -> None:
    path = tmp_path / "x.jnet"
    values = np.full(100_000, 0.1, np.float64)  # over READ_AHEAD; 0.1 is not a float32
    with x64(True):  # jax arrays (numpy ones come back as numpy, 64-bit and all)
        jaxnets.save_state_dict(path, {"w": jnp.asarray(values), "c": jnp.asarray(np.int64(3))})
    with pytest.raises(JaxnetsError, match="w: float64 values that jax cannot hold exactly"):
        jaxnets.load(path, sharding=ONE)
    got = jaxnets.load(path, sharding=ONE, dtype={"w": "float32"}).params
    assert got["w"].dtype == jnp.float32 and got["c"].dtype == jnp.int32 and int(got["c"]) == 3


def test_a_model_loads_sharded_with_its_optimizer_state(tmp_path: Path) -> None:
    model = nn.Sequential(nn.Linear(300, 400), nn.ReLU(), nn.Linear(400, 2))
    params, state = model.init(jax.random.key(0))
    opt = jaxnets.optim.adam(1e-3)
    opt_state = opt.init(params)
    jaxnets.save(tmp_path / "m.jnet", model, params, state, opt_state=opt_state, optimizer=opt)
    got = jaxnets.load(tmp_path / "m.jnet", sharding=ONE)
    for a, b in zip(jax.tree.leaves((got.params, got.opt_state)), jax.tree.leaves((params, opt_state))):
        assert a.sharding == ONE and a.dtype == b.dtype
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_reader_get_tensor_with_a_sharding(weights) -> None:
    path, tree = weights
    with jaxnets.open(path) as r:
        got = r.get_tensor("big", sharding=ONE)
        assert isinstance(got, jax.Array) and got.sharding == ONE
        np.testing.assert_array_equal(np.asarray(got), np.asarray(tree["big"]))
        key = r.get_tensor("key", sharding=ONE)
        assert (jax.random.key_data(key) == jax.random.key_data(tree["key"])).all()


def test_streamed_verification_holds_one_chunk_not_the_tensor(weights, monkeypatch) -> None:
    path, _ = weights
    sizes = []
    real = _tensors.stream_digest

    def spy(fd, pieces, file, key):
        sizes.append(sum(n for _, n in pieces))
        return real(fd, pieces, file, key)

    monkeypatch.setattr(_tensors, "STREAM_CHUNK", 4096)  # 1.2 MB hashed 4 KiB at a time
    monkeypatch.setattr(fmt, "verify_streaming", _tensors.verify_streaming)
    monkeypatch.setattr(_tensors, "stream_digest", spy)
    jaxnets.load(path, sharding=ONE)
    assert sizes == [600 * 500 * 4]


# --- progress ---------------------------------------------------------------------------------
def test_save_and_load_show_a_progress_bar_when_asked(weights, tmp_path: Path, capsys) -> None:
    path, tree = weights
    jaxnets.save_state_dict(tmp_path / "p.jnet", tree, progress=True)
    err = capsys.readouterr().err
    assert "saving" in err and "p.jnet" in err and "100%" in err
    jaxnets.load(tmp_path / "p.jnet", progress=True)
    jaxnets.load(tmp_path / "p.jnet", sharding=ONE, progress=True)
    err = capsys.readouterr().err
    assert err.count("loading") >= 2 and "100%" in err


def test_small_files_and_captured_output_show_no_bar(weights, tmp_path: Path, capsys) -> None:
    path, tree = weights
    jaxnets.save_state_dict(tmp_path / "p.jnet", tree)
    jaxnets.load(tmp_path / "p.jnet", sharding=ONE)
    jaxnets.save_state_dict(tmp_path / "q.jnet", tree, progress=False)
    assert capsys.readouterr().err == ""


def test_progress_takes_none_true_or_false(weights, tmp_path: Path) -> None:
    path, tree = weights
    with pytest.raises(TypeError, match="progress= takes None"):
        jaxnets.save_state_dict(tmp_path / "p.jnet", tree, progress="yes")
    with pytest.raises(TypeError, match="progress= takes None"):
        jaxnets.load(path, progress=1)
    assert not (tmp_path / "p.jnet").exists()
