"""chain, clipping and scaling configs compute exactly optax's, and mix with optax's own wrappers."""

from __future__ import annotations

import optax
import pytest

from jaxnets import optim

CASES = [
    (
        "clip-global-norm-adam",
        optim.chain(optim.clip_by_global_norm(1.0), optim.adam(1e-2)),
        optax.chain(optax.clip_by_global_norm(1.0), optax.adam(1e-2)),
    ),
    (
        "clip-decay-adam-schedule",
        optim.chain(
            optim.clip(0.5),
            optim.add_decayed_weights(1e-2),
            optim.scale_by_adam(b2=0.99),
            optim.scale_by_learning_rate(optim.cosine_decay_schedule(1e-2, 4)),
        ),
        optax.chain(
            optax.clip(0.5),
            optax.add_decayed_weights(1e-2),
            optax.scale_by_adam(b2=0.99),
            optax.scale_by_learning_rate(optax.cosine_decay_schedule(1e-2, 4)),
        ),
    ),
    (
        "nested-chain-trace-scale",
        optim.chain(
            optim.chain(optim.identity(), optim.trace(0.9, nesterov=True)), optim.scale(-0.1)
        ),
        optax.chain(
            optax.chain(optax.identity(), optax.trace(0.9, nesterov=True)), optax.scale(-0.1)
        ),
    ),
]


@pytest.mark.parametrize(("ours", "theirs"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_updates_and_states_equal_optax_bit_for_bit(ours, theirs, helpers):
    helpers.assert_same_run(ours, theirs)


def test_clipping_is_active_in_the_comparison(helpers):
    # Guards the tests above: the test gradients exceed the clip norm, so clipping is exercised.
    grads = helpers.grads_at(helpers.make_params(), 0)
    assert float(optax.tree.norm(grads)) > 1.0


def test_jitted_chain_equals_optax(helpers):
    _, ours, theirs = CASES[1]
    helpers.assert_same_run(ours, theirs, steps=3, jit=True)


def test_configs_work_inside_optax_combinators(helpers):
    ours = optax.chain(
        optim.clip_by_global_norm(1.0),
        optax.MultiSteps(optim.adam(1e-2), 2).gradient_transformation(),
    )
    theirs = optax.chain(
        optax.clip_by_global_norm(1.0),
        optax.MultiSteps(optax.adam(1e-2), 2).gradient_transformation(),
    )
    helpers.assert_same_run(ours, theirs, steps=3)


def test_apply_if_finite_wraps_a_config(helpers):
    helpers.assert_same_run(
        optax.apply_if_finite(optim.sgd(0.1), 3), optax.apply_if_finite(optax.sgd(0.1), 3), steps=3
    )


def test_chain_rejects_an_optax_transformation():
    with pytest.raises(
        TypeError,
        match=r"chain: argument 1 is .*not a jaxnets.optim transformation.*optax.chain",
    ):
        optim.chain(optim.clip(1.0), optax.adam(1e-3))


def test_add_decayed_weights_refuses_a_mask():
    with pytest.raises(
        TypeError, match=r"add_decayed_weights\(mask=\.\.\.\).*use optax directly"
    ):
        optim.add_decayed_weights(1e-4, mask=lambda p: p)


def test_chain_state_is_a_tuple_of_optax_states(helpers):
    state = optim.chain(optim.clip_by_global_norm(1.0), optim.adam(1e-3)).init(
        helpers.make_params()
    )
    assert type(state) is tuple and isinstance(state[0], optax.EmptyState)
    assert isinstance(state[1][0], optax.ScaleByAdamState)
