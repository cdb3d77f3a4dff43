"""The blocks of arrays spread over processes (jaxnets/checkpoint/_pieces.py): the pure parts.

The sharded cases (owners, shards held by each process) run in a real 2-process job in
tests/multihost/test_checkpoints.py.
"""

from __future__ import annotations

import jax
import numpy as np
import pytest

from jaxnets.checkpoint import _pieces


def test_normalize_fills_open_slices_and_missing_dimensions():
    assert _pieces.normalize((slice(2, 4), slice(None)), (8, 3, 5)) == ((2, 4), (0, 3), (0, 5))
    assert _pieces.normalize((), ()) == ()


@pytest.mark.parametrize(
    ("pieces", "why"),
    [
        ([[[0, 2], [0, 4]], [[2, 4], [0, 4]]], None),
        ([[[0, 2], [0, 2]], [[0, 2], [2, 4]], [[2, 4], [0, 2]], [[2, 4], [2, 4]]], None),
        ([[[0, 4], [0, 4]]], None),
        ([[[0, 2], [0, 4]]], "do not tile dimension 0 (it ends at 2, not 4)"),
        ([[[0, 3], [0, 4]], [[2, 4], [0, 4]]], "a gap or an overlap at 3"),
        ([[[0, 2], [0, 4]], [[0, 2], [0, 4]]], "stored twice"),
        ([[[0, 2], [0, 2]], [[2, 4], [2, 4]]], "do not form a grid"),
        ([[[0, 2], [0, 5]]], "out of bounds"),
        ([[[2, 2], [0, 4]]], "out of bounds"),
        ([[[0, 4]]], "malformed piece"),
        ([[[0, 4.0], [0, 4]]], "out of bounds"),
        ("x", "malformed piece"),
    ],
)
def test_stored_pieces_must_tile_the_array_as_a_grid(pieces, why):
    got = _pieces.grid_problem(list(pieces), (4, 4))
    assert got == why if why is None else why in got


def test_an_empty_array_is_one_empty_piece():
    assert _pieces.grid_problem([[[0, 0], [0, 3]]], (0, 3)) is None
    assert "one piece" in _pieces.grid_problem([[[0, 0], [0, 1]], [[0, 0], [1, 3]]], (0, 3))


def test_assemble_puts_each_piece_in_its_place():
    full = np.arange(16).reshape(4, 4)
    parts = [(((a, a + 2), (b, b + 2)), full[a : a + 2, b : b + 2].copy()) for a in (0, 2) for b in (0, 2)]
    np.testing.assert_array_equal(_pieces.assemble((4, 4), full.dtype, parts), full)


def test_covers_counts_only_what_the_blocks_hold():
    assert _pieces.covers([((0, 2), (0, 4)), ((2, 4), (0, 4))], ((1, 3), (0, 4)))
    assert not _pieces.covers([((0, 2), (0, 4))], ((1, 3), (0, 4)))


def test_a_single_device_array_is_one_piece_owned_by_its_process():
    x = jax.numpy.arange(6.0).reshape(2, 3)
    assert _pieces.pieces(x.sharding, x.shape) == [(0, ((0, 2), (0, 3)))]
    np.testing.assert_array_equal(_pieces.extract(x, ((1, 2), (0, 2))), [[3.0, 4.0]])
