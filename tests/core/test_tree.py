"""The one flattener: keys, escaping, order, specs — including hypothesis properties."""

from __future__ import annotations

import dataclasses
import json
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import jaxnets
from jaxnets.core.tree import (
    flatten,
    join_key,
    map_with_keys,
    spec_keys,
    split_key,
    tree_from_spec,
    tree_spec,
)


class Point(NamedTuple):
    x: object
    y: object


jaxnets.register(Point, name="tests.Point")


@jax.tree_util.register_dataclass
@dataclasses.dataclass
class Pair:
    a: object
    b: object


jaxnets.register(Pair, name="tests.Pair")


def test_keys_are_pytorch_style_paths():
    tree = {"features": [{"weight": 1, "bias": 2}], "head": (3,)}
    assert list(flatten(tree)) == ["features.0.weight", "features.0.bias", "head.0"]


def test_namedtuple_and_dataclass_fields_are_key_components():
    assert flatten(Point(1, Pair(2, 3))) == {"x": 1, "y.a": 2, "y.b": 3}


def test_none_and_empty_containers_have_no_keys():
    assert flatten({"a": None, "b": {}, "c": [], "d": (), "e": 1}) == {"e": 1}


def test_dicts_keep_insertion_order_not_sorted_order():
    assert list(flatten({"fc2": 1, "bn": 2, "fc1": 3})) == ["fc2", "bn", "fc1"]


def test_separator_in_a_key_is_escaped_and_splits_back():
    flat = flatten({"a.b": {"c\\d": 1}})
    (key,) = flat
    assert key == "a\\.b.c\\\\d"
    assert split_key(key) == ["a.b", "c\\d"]


def test_colliding_keys_are_an_error():
    with pytest.raises(jaxnets.JaxnetsError, match=r"same key 'x\.1'"):
        flatten({"x": {1: 0, "1": 1}})


def test_unsupported_key_type_is_an_error():
    with pytest.raises(jaxnets.JaxnetsError, match="cannot be part of a state_dict key"):
        flatten({(1, 2): 0})


def test_optax_state_flattens_by_field_names():
    params = {"w": jnp.ones(3)}
    state = optax.adam(1e-3).init(params)
    assert list(flatten(state)) == ["0.count", "0.mu.w", "0.nu.w"]


def test_map_with_keys_keeps_container_types():
    state = optax.chain(optax.clip_by_global_norm(1.0), optax.adam(1e-3)).init({"w": jnp.ones(2)})
    seen = []
    out = map_with_keys(lambda k, v: seen.append(k) or v, state)
    assert jax.tree.structure(out) == jax.tree.structure(state)
    assert type(out[1][0]) is type(state[1][0])
    assert seen == list(flatten(state))


def test_spec_rebuilds_optax_state_with_its_namedtuple_types():
    state = optax.adamw(1e-3).init({"layers": [{"w": jnp.ones((2, 2))}]})
    spec = json.loads(json.dumps(tree_spec(state)))  # the spec is JSON
    back = tree_from_spec(spec, flatten(state))
    assert jax.tree.structure(back) == jax.tree.structure(state)
    assert type(back[0]).__name__ == "ScaleByAdamState"


def test_spec_of_unregistered_namedtuple_says_how_to_register():
    class Local(NamedTuple):
        v: int

    with pytest.raises(jaxnets.RegistryError, match="@jaxnets.register"):
        tree_spec(Local(1))


def test_malformed_spec_is_a_file_format_error():
    with pytest.raises(jaxnets.FileFormatError, match="unknown tree node type"):
        spec_keys({"t": "dict", "k": ["a"], "c": [{"t": "evil"}]})


def test_deep_spec_is_refused():
    spec: dict = {"t": "leaf"}
    for _ in range(300):
        spec = {"t": "list", "c": [spec]}
    with pytest.raises(jaxnets.FileFormatError, match="deeper than"):
        spec_keys(spec)


# --- properties ----------------------------------------------------------------------------------
_keys = st.one_of(st.text(alphabet="ab.\\0_", max_size=4), st.integers(0, 20))
_leaves = st.integers(-5, 5).map(lambda i: np.full((i % 3,), i, np.int32))


def _containers(children):
    return st.one_of(
        st.lists(children, max_size=3),
        st.lists(children, max_size=3).map(tuple),
        st.dictionaries(st.text(alphabet="ab.\\0_", max_size=4), children, max_size=3),
        st.dictionaries(st.integers(0, 20), children, max_size=3),
        st.tuples(children, children).map(lambda t: Point(*t)),
        st.tuples(children, children).map(lambda t: Pair(*t)),
        st.just(None),
    )


trees = st.recursive(_leaves, _containers, max_leaves=12)


@settings(max_examples=200, deadline=None)
@given(trees)
def test_spec_and_flat_dict_rebuild_the_exact_tree(tree):
    flat = flatten(tree)
    back = tree_from_spec(json.loads(json.dumps(tree_spec(tree))), flat)
    assert jax.tree.structure(back) == jax.tree.structure(tree)
    for a, b in zip(jax.tree.leaves(back), jax.tree.leaves(tree)):
        assert a is b
    assert _key_types(back) == _key_types(tree)  # int keys stay ints, tuples stay tuples


@settings(max_examples=200, deadline=None)
@given(trees)
def test_keys_are_unique_and_split_back_to_their_paths(tree):
    paths = [tuple(p) for p, _ in _paths(tree)]
    flat = flatten(tree)
    if paths == [()]:  # a bare leaf has the key "" (documented in flatten)
        assert list(flat) == [""]
        return
    assert len(flat) == len(paths)
    assert [split_key(k) for k in flat] == [[str(c) for c in p] for p in paths]
    assert [join_key(p) for p in paths] == list(flat)


def _paths(node, prefix=()):
    if isinstance(node, np.ndarray):
        yield prefix, node
    elif node is None:
        return
    elif isinstance(node, dict):
        for k, v in node.items():
            yield from _paths(v, prefix + (k,))
    elif isinstance(node, Point):
        yield from _paths(node.x, prefix + ("x",))
        yield from _paths(node.y, prefix + ("y",))
    elif isinstance(node, Pair):
        yield from _paths(node.a, prefix + ("a",))
        yield from _paths(node.b, prefix + ("b",))
    else:
        for i, v in enumerate(node):
            yield from _paths(v, prefix + (i,))


def _key_types(node):
    if isinstance(node, dict):
        return ("dict", tuple((type(k).__name__, k, _key_types(v)) for k, v in node.items()))
    if isinstance(node, (Point, Pair)):
        return (type(node).__name__, tuple(_key_types(v) for v in jax.tree_util.tree_flatten(node, is_leaf=lambda x: x is not node)[0]))
    if isinstance(node, (list, tuple)):
        return (type(node).__name__, tuple(_key_types(v) for v in node))
    return "leaf" if node is not None else "none"
