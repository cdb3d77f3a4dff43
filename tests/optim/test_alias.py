"""jaxnets.optim's optimizers compute exactly what optax's do, with optax's signatures."""

from __future__ import annotations

import inspect

import jax.numpy as jnp
import optax
import pytest

from jaxnets import optim

SCHED = optim.warmup_cosine_decay_schedule(0.0, 1e-2, 2, 6)
OPTAX_SCHED = optax.warmup_cosine_decay_schedule(0.0, 1e-2, 2, 6)

# (id, jaxnets.optim optimizer, the optax call it stands for)
CASES = [
    ("sgd", optim.sgd(0.1), optax.sgd(0.1)),
    ("sgd-momentum", optim.sgd(0.1, momentum=0.9), optax.sgd(0.1, momentum=0.9)),
    ("sgd-nesterov", optim.sgd(0.1, 0.9, nesterov=True), optax.sgd(0.1, 0.9, nesterov=True)),
    ("momentum", optim.momentum(0.05), optax.sgd(0.05, momentum=0.9)),
    ("sgd-schedule", optim.sgd(SCHED, 0.5), optax.sgd(OPTAX_SCHED, 0.5)),
    ("adam", optim.adam(1e-2), optax.adam(1e-2)),
    (
        "adam-args",
        optim.adam(3e-3, b1=0.8, b2=0.99, eps=1e-6, eps_root=1e-9, nesterov=True),
        optax.adam(3e-3, b1=0.8, b2=0.99, eps=1e-6, eps_root=1e-9, nesterov=True),
    ),
    (
        "adam-bf16-mu",
        optim.adam(1e-2, mu_dtype=jnp.bfloat16),
        optax.adam(1e-2, mu_dtype=jnp.bfloat16),
    ),
    ("adam-schedule", optim.adam(SCHED), optax.adam(OPTAX_SCHED)),
    ("nadam", optim.nadam(1e-2), optax.nadam(1e-2)),
    ("adamw", optim.adamw(1e-2), optax.adamw(1e-2)),
    (
        "adamw-scheduled-decay",
        optim.adamw(SCHED, weight_decay=optim.linear_schedule(0.1, 0.0, 4)),
        optax.adamw(OPTAX_SCHED, weight_decay=optax.linear_schedule(0.1, 0.0, 4)),
    ),
    ("lion", optim.lion(1e-3), optax.lion(1e-3)),
    (
        "lion-args",
        optim.lion(1e-3, b1=0.95, b2=0.98, weight_decay=0.0),
        optax.lion(1e-3, b1=0.95, b2=0.98, weight_decay=0.0),
    ),
    ("rmsprop", optim.rmsprop(1e-2), optax.rmsprop(1e-2)),
    (
        "rmsprop-centered-momentum",
        optim.rmsprop(
            1e-2, decay=0.95, centered=True, momentum=0.9, nesterov=True, bias_correction=True
        ),
        optax.rmsprop(
            1e-2, decay=0.95, centered=True, momentum=0.9, nesterov=True, bias_correction=True
        ),
    ),
    ("adagrad", optim.adagrad(1e-1), optax.adagrad(1e-1)),
    ("adafactor", optim.adafactor(), optax.adafactor()),
    (
        "adafactor-factored-momentum",
        optim.adafactor(
            1e-2,
            min_dim_size_to_factor=3,
            momentum=0.9,
            dtype_momentum="bfloat16",
            weight_decay_rate=1e-3,
        ),
        optax.adafactor(
            1e-2,
            min_dim_size_to_factor=3,
            momentum=0.9,
            dtype_momentum=jnp.bfloat16,
            weight_decay_rate=1e-3,
        ),
    ),
]


@pytest.mark.parametrize(("ours", "theirs"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_updates_and_states_equal_optax_bit_for_bit(ours, theirs, helpers):
    helpers.assert_same_run(ours, theirs)


@pytest.mark.parametrize(
    "case", ["adamw-scheduled-decay", "adafactor-factored-momentum", "sgd-nesterov"]
)
def test_jitted_updates_equal_optax_bit_for_bit(case, helpers):
    _, ours, theirs = next(c for c in CASES if c[0] == case)
    helpers.assert_same_run(ours, theirs, steps=3, jit=True)


def test_adafactor_case_really_factors_the_matrix(helpers):
    # Guards the test above: with min_dim_size_to_factor=3 the (4, 3) weight has row/col stats.
    state = optim.adafactor(min_dim_size_to_factor=3).init(helpers.make_params())
    stats = {state[0].v_row["fc"]["weight"].shape, state[0].v_col["fc"]["weight"].shape}
    assert stats == {(3,), (4,)}


NAMES = ["sgd", "adam", "nadam", "adamw", "lion", "rmsprop", "adagrad", "adafactor"]


@pytest.mark.parametrize("name", NAMES)
def test_signature_is_optaxs(name):
    ours = inspect.signature(getattr(optim, name)).parameters
    theirs = inspect.signature(getattr(optax, name)).parameters
    assert list(ours) == list(theirs)
    for p, q in zip(ours.values(), theirs.values()):
        assert p.kind == q.kind, p.name
        if q.default is jnp.float32:  # optax's default dtype object is stored by name
            assert p.default == "float32"
        else:
            assert p.default == q.default, p.name


def test_momentum_is_sgd_with_momentum():
    assert optim.momentum(0.1, 0.8, nesterov=True) == optim.sgd(0.1, momentum=0.8, nesterov=True)


def test_build_returns_optax_transformation():
    assert isinstance(optim.adam(1e-3).build(), optax.GradientTransformationExtraArgs)


def test_dtype_arguments_are_stored_by_name():
    assert optim.adam(1e-3, mu_dtype=jnp.bfloat16).mu_dtype == "bfloat16"
    assert optim.adafactor(dtype_momentum=jnp.float32) == optim.adafactor()
