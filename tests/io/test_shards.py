"""Blocks of tensors as byte runs (jaxnets/io/_shards.py) and range reads of them (_tensors)."""

from __future__ import annotations

import os
import random
from pathlib import Path

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
import pytest

import jaxnets
from jaxnets import FileFormatError
from jaxnets.io import _layout, _shards
from jaxnets.io import format as fmt


def _random_block(rng: random.Random, shape: tuple[int, ...]) -> tuple[slice, ...]:
    index = []
    for n in shape:
        a = rng.randint(0, n)
        b = rng.randint(a, n)
        index.append(rng.choice([slice(a, b), slice(None)]))
    return _shards.normalize(index, shape)


def test_runs_are_the_c_order_bytes_of_every_block() -> None:
    rng = random.Random(0)
    for _ in range(2000):
        shape = tuple(rng.randint(0, 5) for _ in range(rng.randint(0, 4)))
        index = _random_block(rng, shape)
        tensor = np.arange(int(np.prod(shape)), dtype=np.int32).reshape(shape)
        block = np.ascontiguousarray(tensor[index]).reshape(-1).view(np.uint8)
        run_len, starts = _shards.runs(shape, index, 4)
        assert run_len * len(starts) == block.size, (shape, index)
        raw = tensor.reshape(-1).view(np.uint8)
        for k, start in enumerate(starts):
            assert (raw[start : start + run_len] == block[k * run_len : (k + 1) * run_len]).all()


def test_a_block_along_axis_0_is_one_run_and_along_the_last_axis_one_per_row() -> None:
    assert _shards.runs((8, 6), _shards.normalize((slice(2, 4), slice(None)), (8, 6)), 4) == (48, [48])
    run_len, starts = _shards.runs((8, 6), _shards.normalize((slice(None), slice(3, 6)), (8, 6)), 4)
    assert run_len == 12 and starts.tolist() == [12 + 24 * r for r in range(8)]


def test_normalize_refuses_strided_blocks() -> None:
    with pytest.raises(ValueError, match="step"):
        _shards.normalize((slice(0, 4, 2),), (4,))


@pytest.fixture
def segmented(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, dict[str, np.ndarray]]:
    # Tensors over MAX_SEGMENT bytes are stored in several segments: a run may cross from one to
    # the next. 128 bytes stand for 4 GiB.
    monkeypatch.setattr(_layout, "MAX_SEGMENT", 128)
    arrays = {
        "small": np.arange(6, dtype=np.float32).reshape(2, 3),
        "big": np.arange(30 * 7, dtype=np.int16).reshape(30, 7),
        "bf": np.linspace(-3, 3, 12 * 20).astype(ml_dtypes.bfloat16).reshape(12, 20),
        "cube": np.arange(4 * 5 * 6, dtype=np.float64).reshape(4, 5, 6),
        "scalar": np.array(2.5, np.float32),
        "empty": np.zeros((0, 3), np.float32),
    }
    path = tmp_path / "s.jnet"
    jaxnets.save_state_dict(path, arrays, fsync=False)
    return path, arrays


def test_read_block_reads_any_block_of_any_tensor_across_segments(segmented) -> None:
    path, arrays = segmented
    header = fmt.read_header(path)
    rng = random.Random(1)
    fd = os.open(path, os.O_RDONLY)
    try:
        for key, want in arrays.items():
            i = header.positions["model"][key]
            for _ in range(50):
                index = _random_block(rng, want.shape)
                got = fmt.read_block(fd, header, i, index)
                assert got.dtype == want.dtype and got.shape == want[index].shape
                assert got.tobytes() == np.ascontiguousarray(want[index]).tobytes(), (key, index)
            fmt.verify_streaming(fd, header, i)
    finally:
        os.close(fd)


def test_verify_streaming_names_the_tensor_whose_bytes_or_padding_changed(segmented) -> None:
    path, _ = segmented
    header = fmt.read_header(path)
    i = header.positions["model"]["big"]
    (_, data, _), (gap2, _, _) = header.segments(i)[:2]
    for at, what in ((header.data_start + data + 3, "checksum mismatch"),
                     (header.data_start + gap2 + 1, "corrupted padding")):  # fmt: skip
        raw = bytearray(path.read_bytes())
        raw[at] ^= 0x10
        bad = path.with_name("bad.jnet")
        bad.write_bytes(bytes(raw))
        fd = os.open(bad, os.O_RDONLY)
        try:
            with pytest.raises(FileFormatError, match=f"'big'.*{what}|{what}"):
                fmt.verify_streaming(fd, fmt.read_header(bad), i)
        finally:
            os.close(fd)


def test_read_block_of_a_truncated_file_is_an_error_not_garbage(segmented) -> None:
    path, arrays = segmented
    header = fmt.read_header(path)
    i = header.positions["model"]["cube"]
    cut = path.with_name("cut.jnet")
    cut.write_bytes(path.read_bytes()[: header.data_start + header.columns.offsets[i] + 40])
    fd = os.open(cut, os.O_RDONLY)
    try:
        with pytest.raises(FileFormatError, match="'cube'.*truncated"):
            fmt.read_block(fd, header, i, _shards.normalize((slice(None),) * 3, (4, 5, 6)))
    finally:
        os.close(fd)


def test_host_and_assemble_give_a_device_arrays_value() -> None:
    # That jax keeps no host copy on the arrays (np.asarray would, for sharded ones) is checked
    # with 8 devices in tests/multihost/test_files.py (nothing kept after a save).
    x = jax.device_put(jnp.arange(12.0).reshape(3, 4))
    np.testing.assert_array_equal(_shards.assemble(x), np.arange(12.0).reshape(3, 4))
    np.testing.assert_array_equal(_shards.host(x), np.arange(12.0).reshape(3, 4))
    ((index, block),) = _shards.local_blocks(x)
    assert index == (slice(0, 3), slice(0, 4)) and block is not None
