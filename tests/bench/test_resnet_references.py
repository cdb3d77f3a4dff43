"""bench/_resnet.py: the flax.linen and torch ResNet-18s the benchmarks compare against are
torchvision's network, as jaxnets.models.resnet18 is."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import jax
import numpy as np
import pytest

import jaxnets

BENCH = Path(__file__).resolve().parents[2] / "bench"


def _resnet() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_resnet", BENCH / "_resnet.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # flax's dataclasses look their module up there
    spec.loader.exec_module(mod)
    return mod


def test_the_torch_resnet18_has_jaxnets_keys_and_shapes_and_computes_the_same_logits() -> None:
    torch = pytest.importorskip("torch")
    tmodel = _resnet().torch_resnet18(10).eval()
    sd = tmodel.state_dict()
    model = jaxnets.models.resnet18(num_classes=10)
    ours = jaxnets.state_dict(*model.init(jax.random.key(0)))
    assert {k: tuple(v.shape) for k, v in sd.items()} == {k: tuple(v.shape) for k, v in ours.items()}
    params, state = model.load_state_dict(sd)
    x = np.random.default_rng(0).standard_normal((2, 3, 64, 64), dtype=np.float32)
    with torch.no_grad():
        want = tmodel(torch.from_numpy(x)).numpy()
    got = np.asarray(model.apply(params, state, x)[0])
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("nchw_input", [False, True])
def test_the_flax_resnet18_has_torchvisions_parameter_count(nchw_input: bool) -> None:
    pytest.importorskip("flax")
    fmodel = _resnet().flax_resnet18(nchw_input=nchw_input)
    shape = (1, 3, 64, 64) if nchw_input else (1, 64, 64, 3)
    variables = jax.eval_shape(fmodel.init, jax.random.key(0), jax.numpy.ones(shape))
    n = sum(int(np.prod(a.shape)) for a in jax.tree.leaves(variables["params"]))
    assert n == 11_689_512  # torchvision's resnet18, as jaxnets.models.resnet18
    out = jax.eval_shape(fmodel.apply, variables, jax.numpy.ones(shape))
    assert out.shape == (1, 1000)


def test_importing_the_module_imports_neither_library() -> None:
    code = (f"import sys, importlib.util; s = importlib.util.spec_from_file_location('r', {str(BENCH / '_resnet.py')!r}); "
            "m = importlib.util.module_from_spec(s); s.loader.exec_module(m); "
            "print('torch' in sys.modules, 'flax' in sys.modules, 'jax' in sys.modules)")
    import subprocess

    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.stdout.split() == ["False", "False", "False"], out.stderr
