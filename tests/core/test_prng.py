"""jaxnets/core/prng.py: every PRNG impl name any jax in range wrote maps to one jax accepts."""

from __future__ import annotations

import jax
import numpy as np
import pytest

from jaxnets import JaxnetsError
from jaxnets.core.prng import IMPLS, canonical_impl


@pytest.mark.parametrize("impl", IMPLS)
def test_the_names_jax_writes_today_are_kept(impl):
    written = str(jax.random.key_impl(jax.random.key(0, impl=impl)))
    assert canonical_impl(written) == impl


@pytest.mark.parametrize("impl", IMPLS)
def test_the_dtype_tag_older_jax_wrote_rebuilds_the_same_key(impl):
    key = jax.random.key(3, impl=impl)
    tag = str(key.dtype)[len("key<") : -1]  # 'fry' for threefry2x32: what jax 0.4.30 stored
    back = jax.random.wrap_key_data(jax.random.key_data(key), impl=canonical_impl(tag))
    assert back.dtype == key.dtype
    np.testing.assert_array_equal(jax.random.key_data(back), jax.random.key_data(key))
    np.testing.assert_array_equal(jax.random.normal(back, (4,)), jax.random.normal(key, (4,)))


def test_fry_is_threefry():
    assert canonical_impl("fry") == "threefry2x32"
    assert canonical_impl("urbg") == "unsafe_rbg"


@pytest.mark.parametrize("name", ["philox", "", "FRY", None, 3])
def test_an_unknown_name_is_an_error_listing_the_known_ones(name):
    with pytest.raises(JaxnetsError, match=r"unknown PRNG implementation .*known: threefry2x32, rbg, unsafe_rbg"):
        canonical_impl(name)
