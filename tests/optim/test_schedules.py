"""jaxnets.optim schedules give exactly optax's values and round-trip as configs."""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jaxnets
from jaxnets import optim

CASES = [
    ("constant", optim.constant_schedule(0.3), optax.constant_schedule(0.3)),
    (
        "linear",
        optim.linear_schedule(1.0, 0.1, 7, transition_begin=2),
        optax.linear_schedule(1.0, 0.1, 7, 2),
    ),
    (
        "polynomial",
        optim.polynomial_schedule(1.0, 0.0, 2.0, 9),
        optax.polynomial_schedule(1.0, 0.0, 2.0, 9),
    ),
    (
        "cosine",
        optim.cosine_decay_schedule(0.5, 10, alpha=0.1, exponent=2.0),
        optax.cosine_decay_schedule(0.5, 10, 0.1, 2.0),
    ),
    (
        "warmup-cosine",
        optim.warmup_cosine_decay_schedule(0.0, 1.0, 3, 12, end_value=0.05),
        optax.warmup_cosine_decay_schedule(0.0, 1.0, 3, 12, end_value=0.05),
    ),
    ("exponential", optim.exponential_decay(1.0, 3, 0.5), optax.exponential_decay(1.0, 3, 0.5)),
    (
        "exponential-staircase",
        optim.exponential_decay(1.0, 3, 0.5, transition_begin=2, staircase=True, end_value=0.2),
        optax.exponential_decay(1.0, 3, 0.5, transition_begin=2, staircase=True, end_value=0.2),
    ),
    (
        "warmup-exponential",
        optim.warmup_exponential_decay_schedule(0.0, 1.0, 2, 3, 0.7),
        optax.warmup_exponential_decay_schedule(0.0, 1.0, 2, 3, 0.7),
    ),
    (
        "piecewise",
        optim.piecewise_constant_schedule(1.0, {8: 0.5, 3: 0.1}),
        optax.piecewise_constant_schedule(1.0, {3: 0.1, 8: 0.5}),
    ),
    (
        "join",
        optim.join_schedules(
            [optim.linear_schedule(0.0, 1.0, 4), optim.cosine_decay_schedule(1.0, 8)], [4]
        ),
        optax.join_schedules(
            [optax.linear_schedule(0.0, 1.0, 4), optax.cosine_decay_schedule(1.0, 8)], [4]
        ),
    ),
]
IDS = [c[0] for c in CASES]
STEPS = jnp.arange(16)


@pytest.mark.parametrize(("ours", "theirs"), [c[1:] for c in CASES], ids=IDS)
def test_values_equal_optax_bit_for_bit(ours, theirs):
    for step in range(16):
        np.testing.assert_array_equal(np.asarray(ours(step)), np.asarray(theirs(step)))
    # ...and traced, over a batch of int32 steps, as optax calls it inside jit.
    np.testing.assert_array_equal(
        np.asarray(jax.jit(jax.vmap(ours))(STEPS)), np.asarray(jax.jit(jax.vmap(theirs))(STEPS))
    )


@pytest.mark.parametrize("sched", [c[1] for c in CASES], ids=IDS)
def test_config_round_trips_through_json(sched):
    back = jaxnets.from_config(json.loads(json.dumps(jaxnets.to_config(sched))))
    assert back == sched and hash(back) == hash(sched)
    np.testing.assert_array_equal(
        np.asarray(jax.vmap(back)(STEPS)), np.asarray(jax.vmap(sched)(STEPS))
    )


def test_schedules_register_under_optim_names():
    assert (
        jaxnets.to_config(optim.cosine_decay_schedule(1.0, 10))["__class__"]
        == "optim.cosine_decay_schedule"
    )


def test_piecewise_boundaries_are_stored_sorted_as_pairs():
    sched = optim.piecewise_constant_schedule(1.0, {8: 0.5, 3: 0.1})
    assert sched.boundaries_and_scales == ((3, 0.1), (8, 0.5))
    assert sched == optim.piecewise_constant_schedule(1.0, {3: 0.1, 8: 0.5})


def test_piecewise_rejects_non_integer_boundaries():
    with pytest.raises(
        TypeError, match=r"boundaries_and_scales must be \{step: scale\}"
    ):
        optim.piecewise_constant_schedule(1.0, {2.5: 0.1})


def test_join_schedules_rejects_optax_schedules():
    with pytest.raises(
        TypeError, match=r"join_schedules\(schedules=\.\.\.\).*Python callable"
    ):
        optim.join_schedules([optax.constant_schedule(1.0)], [])
