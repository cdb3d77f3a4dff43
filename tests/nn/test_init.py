"""jaxnets.nn.init: jax.random's values, the same eager and under jit, with few compiled programs."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxnets import nn
from jaxnets.nn import init

SHAPES = [(1,), (7,), (64,), (4096, 3), (65_537,), (3, 300, 1000), (64, 32, 3, 3)]
KEYS = [jax.random.key(7), jax.random.PRNGKey(7)]


def _bits_equal(a: jax.Array, b: jax.Array) -> None:
    a, b = np.asarray(a), np.asarray(b)
    assert a.shape == b.shape and a.dtype == b.dtype
    np.testing.assert_array_equal(a.view(np.uint32), b.view(np.uint32))


def _data(k: jax.Array) -> np.ndarray:
    if jax.dtypes.issubdtype(k.dtype, jax.dtypes.prng_key):
        return np.asarray(jax.random.key_data(k))
    return np.asarray(k)


def _numpy_uniform(key: jax.Array, shape: tuple[int, ...], bound: float) -> np.ndarray:
    """The documented values from jax's threefry bits with numpy's IEEE float32 arithmetic."""
    bits = np.asarray(jax.random.bits(key, shape, jnp.uint32))
    u = ((bits >> np.uint32(9)) | np.float32(1.0).view(np.uint32)).view(np.float32) - np.float32(1)
    return (u * np.float32(2) - np.float32(1)) * np.float32(bound)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("key", KEYS, ids=["typed", "raw"])
def test_uniform_has_the_documented_values_eager_and_under_jit(shape, key):
    want = _numpy_uniform(key, shape, 0.37)
    _bits_equal(init.uniform(key, shape, 0.37), want)
    _bits_equal(jax.jit(lambda k: init.uniform(k, shape, 0.37))(key), want)


def test_uniform_is_jax_random_uniform_on_a_cpu_with_fused_multiply_add():
    # jax computes u * 2b - b; fused, that rounds once, to the value of (2u - 1) * b.
    key = jax.random.key(0)
    want = jax.random.uniform(key, (1000,), jnp.float32, -0.37, 0.37)
    _bits_equal(init.uniform(key, (1000,), 0.37), want)


@pytest.mark.parametrize("shape", SHAPES)
def test_normal_is_jax_random_normal_scaled_the_same_eager_and_under_jit(shape):
    key = jax.random.key(3)
    _bits_equal(init.normal(key, shape), jax.random.normal(key, shape))
    eager = init.normal(key, shape, 0.02)
    _bits_equal(jax.jit(lambda k: init.normal(k, shape, 0.02))(key), eager)
    np.testing.assert_allclose(eager, 0.02 * jax.random.normal(key, shape), rtol=1e-6, atol=0)


@pytest.mark.parametrize("shape", [(5,), (70_000,), (16, 3, 3)])
def test_trunc_normal_is_jax_truncated_normal_and_the_same_under_jit(shape):
    key = jax.random.key(1)
    eager = init.trunc_normal(key, shape, mean=0.5, std=0.02, a=0.47, b=0.53)
    _bits_equal(jax.jit(lambda k: init.trunc_normal(k, shape, 0.5, 0.02, 0.47, 0.53))(key), eager)
    want = 0.5 + 0.02 * jax.random.truncated_normal(key, -1.5, 1.5, shape)
    np.testing.assert_allclose(eager, want, rtol=0, atol=1e-6)
    assert float(eager.min()) >= 0.47 and float(eager.max()) <= 0.53


@pytest.mark.parametrize("num", [1, 2, 5, 64, 300])
@pytest.mark.parametrize("key", KEYS, ids=["typed", "raw"])
def test_split_is_jax_random_split_eager_and_under_jit(num, key):
    want = list(jax.random.split(key, num))
    got = init.split(key, num)
    traced = jax.jit(lambda k: init.split(k, num))(key)
    assert len(got) == len(traced) == num
    for g, t, w in zip(got, traced, want):
        assert g.dtype == w.dtype and t.dtype == w.dtype
        np.testing.assert_array_equal(_data(g), _data(w))
        np.testing.assert_array_equal(_data(t), _data(w))


def test_counters_past_one_word_are_split_into_two_words(monkeypatch):
    # Draws of 2**32 or more values count with two uint32 words; check the arithmetic on a
    # small draw by lowering the threshold (the low words must equal the one-word path's).
    key = jax.random.key(2)
    want = jax.jit(lambda k: init.uniform(k, (200_000,), 1.0))(key)
    real = init._all_words

    def two_words(kd, n):
        if n < 2**32 and n > 1000:
            rows = -(-n // 2**16)
            row = jax.lax.broadcasted_iota(np.uint32, (rows, 2**16), 0)
            col = jax.lax.broadcasted_iota(np.uint32, (rows, 2**16), 1)
            his = jax.lax.shift_right_logical(row, np.uint32(16)).reshape(-1)[:n]
            los = jax.lax.bitwise_or(jax.lax.shift_left(row, np.uint32(16)), col).reshape(-1)[:n]
            return tuple(init.threefry2x32_p.bind(kd[0], kd[1], his, los))
        return real(kd, n)

    monkeypatch.setattr(init, "_all_words", two_words)
    _bits_equal(jax.jit(lambda k: init.uniform(k, (200_000,), 1.0))(key), want)


def test_eval_shape_of_a_huge_draw_computes_nothing():
    out = jax.eval_shape(lambda k: init.uniform(k, (100_000, 100_000), 0.1), jax.random.key(0))
    assert out.shape == (100_000, 100_000) and out.dtype == jnp.float32


def test_other_key_implementations_and_dtypes_use_jax_random():
    rbg = jax.random.key(0, impl="rbg")
    _bits_equal(init.uniform(rbg, (10,), 1.0), jax.random.uniform(rbg, (10,), minval=-1.0, maxval=1.0))
    key = jax.random.key(0)
    got = init.uniform(key, (10,), 1.0, "bfloat16")
    want = jax.random.uniform(key, (10,), jnp.bfloat16, -1.0, 1.0)
    assert got.dtype == jnp.bfloat16
    np.testing.assert_array_equal(np.asarray(got, np.float32), np.asarray(want, np.float32))


def _old_init(module: nn.Module, key: jax.Array) -> tuple[dict, dict]:
    """jaxnets 0.1's init, written with jax.random: split per composite, U(±1/sqrt(fan_in))."""
    if isinstance(module, (nn.Linear, nn.Conv2d)):
        w_shape = (
            (module.out_features, module.in_features)
            if isinstance(module, nn.Linear)
            else (module.out_channels, module.in_channels // module.groups, *module.kernel_size)
        )
        bound = 1 / math.sqrt(init.fans(w_shape)[0])
        kw, kb = jax.random.split(key)
        p = {"weight": jax.random.uniform(kw, w_shape, jnp.float32, -bound, bound)}
        if module.bias:
            p["bias"] = jax.random.uniform(kb, (w_shape[0],), jnp.float32, -bound, bound)
        return p, {}
    if isinstance(module, nn.Embedding):
        return {"weight": jax.random.normal(key, (module.num_embeddings, module.embedding_dim))}, {}
    kids = list(module.children().items())
    if not kids:
        return module.init(key)  # BatchNorm, activations: no random draws
    params, state = {}, {}
    for (name, child), k in zip(kids, jax.random.split(key, len(kids))):
        params[name], state[name] = _old_init(child, k)
    return params, state


def _model() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(3, 8, (3, 3), bias=False),
        nn.BatchNorm2d(8),
        nn.Sequential(nn.Conv2d(8, 8, (1, 1)), nn.ReLU(), nn.Conv2d(8, 4, (3, 3), groups=2)),
        nn.Flatten(),
        nn.Linear(40, 10),
        nn.Embedding(11, 6),
    )


@pytest.mark.parametrize("key", KEYS, ids=["typed", "raw"])
def test_model_init_values_are_unchanged_from_the_jax_random_implementation(key):
    model = _model()
    got, want = model.init(key), _old_init(model, key)
    jax.tree.map(_bits_equal, got, want)


def test_model_init_is_bit_identical_eager_and_under_jit_and_vmap():
    model = nn.Sequential(
        _model(), nn.MultiheadAttention(8, 2), nn.LayerNorm(8), nn.Embedding(5, 4, padding_idx=0)
    )
    key = jax.random.key(4)
    eager = model.init(key)
    jax.tree.map(_bits_equal, jax.jit(model.init)(key), eager)
    keys = jnp.stack([key, jax.random.key(5)])
    batched = jax.vmap(model.init)(keys)
    jax.tree.map(lambda b, e: _bits_equal(b[0], e), batched, eager)


def test_a_new_shape_compiles_no_new_program():
    # jax.random compiles one XLA program per distinct shape (the cold-init cost this file
    # removes). Count backend compilations while initialising layers of never-seen shapes.
    compiles: list[str] = []
    active = [False]

    def listen(event: str, duration: float, **kw: object) -> None:
        if active[0] and event == "/jax/core/compile/backend_compile_duration":
            compiles.append(event)

    jax.monitoring.register_event_duration_secs_listener(listen)
    nn.Linear(3, 2).init(jax.random.key(0))  # the fixed programs, compiled once
    nn.Embedding(3, 2).init(jax.random.key(0))
    layers = [nn.Linear(101 + i, 37 + i) for i in range(4)]
    layers += [nn.Conv2d(3 + i, 19, (5, 3 + i)) for i in range(4)]
    layers += [nn.Embedding(71 + i, 13) for i in range(4)]
    active[0] = True
    for layer in layers:
        jax.block_until_ready(layer.init(jax.random.key(1)))
    active[0] = False
    assert compiles == []


# --- initialisers by name ---------------------------------------------------------------------
def test_from_spec_reads_names_and_number_arguments():
    key = jax.random.key(0)
    np.testing.assert_array_equal(init.from_spec("zeros")(key, (2, 3), "float32"), np.zeros((2, 3)))
    np.testing.assert_array_equal(init.from_spec("ones")(key, (2,), "int32"), np.ones(2, np.int32))
    np.testing.assert_array_equal(
        init.from_spec("constant(val=-1e4)")(key, (3,), "float32"), np.full(3, -1e4, np.float32)
    )
    np.testing.assert_array_equal(
        init.from_spec("arange")(key, (2, 4), "int32"), np.array([[0, 1, 2, 3]] * 2, np.int32)
    )
    _bits_equal(init.from_spec(" normal( std = 0.02 ) ")(key, (5,), "float32"), init.normal(key, (5,), 0.02))
    u = init.from_spec("uniform(a=-3, b=-2.5)")(key, (1000,), "float32")
    assert float(u.min()) >= -3 and float(u.max()) < -2.5


def test_spec_initialisers_follow_torch_distributions():
    torch = pytest.importorskip("torch")
    key = jax.random.key(0)
    shape = (256, 128, 3)
    n = init.from_spec("normal(mean=1, std=0.5)")(key, shape, "float32")
    ref = torch.nn.init.normal_(torch.empty(shape), mean=1.0, std=0.5).numpy()
    assert abs(float(n.mean()) - ref.mean()) < 0.01 and abs(float(n.std()) - ref.std()) < 0.01
    x = init.from_spec("xavier_uniform(gain=2)")(key, shape, "float32")
    xr = torch.nn.init.xavier_uniform_(torch.empty(shape), gain=2.0).numpy()
    assert abs(float(jnp.abs(x).max()) - np.abs(xr).max()) < 1e-3
    t = init.from_spec("trunc_normal(std=0.02)")(key, shape, "float32")
    tr = torch.nn.init.trunc_normal_(torch.empty(shape), std=0.02).numpy()
    assert abs(float(t.std()) - tr.std()) < 1e-3


@pytest.mark.parametrize(
    "spec, match",
    [
        ("gaussian", r"unknown initialiser 'gaussian'; accepted: zeros, ones, constant\(val\)"),
        ("normal(sigma=1)", r"normal takes keyword arguments \('mean', 'std'\)"),
        ("normal(std=abc)", r"cannot read 'std=abc'"),
        ("normal(std=1, std=2)", r"cannot read 'std=2'"),
        ("constant", r"constant needs val="),
        ("normal(__import__('os'))", r"cannot read"),
    ],
)
def test_bad_specs_say_what_is_accepted(spec, match):
    with pytest.raises(ValueError, match=match):
        init.from_spec(spec)


def test_a_spec_must_be_text():
    with pytest.raises(TypeError, match="initialiser spec is a str"):
        init.from_spec(0.02)  # type: ignore[arg-type]
