"""Shared checks of the zoo tests: a jaxnets model against its torch reference, both ways, and files.

Not a conftest.py: tests/nn has one, and two top-level `conftest` modules cannot be imported by
name in one session.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import numpy as np
import pytest

import jaxnets
from jaxnets.core.state_dict import model_order

torch = pytest.importorskip("torch")

HERE = Path(__file__).parent
ATOL = RTOL = 1e-5


def randomize(module: Any, seed: int = 0) -> Any:
    """Gives a torch module non-trivial buffers and norm params, so eval outputs test them."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, t in module.state_dict().items():
            if not t.is_floating_point():
                continue
            leaf = name.rsplit(".", 1)[-1]
            if leaf == "running_var":
                t.copy_(0.5 + torch.rand(t.shape, generator=g))
            elif leaf == "running_mean" or (leaf == "bias" and t.ndim == 1):
                t.copy_(0.1 * torch.randn(t.shape, generator=g))
            elif leaf == "weight" and t.ndim == 1:  # norm scales
                t.copy_(0.5 + torch.rand(t.shape, generator=g))
            elif t.abs().max() == 0:  # zero-initialised params (ViT's class token)
                t.copy_(0.02 * torch.randn(t.shape, generator=g))
    return module.eval()


def to_torch_state_dict(model: Any, params: Any, state: Any) -> dict[str, Any]:
    return {k: torch.from_numpy(np.array(v)) for k, v in model.state_dict(params, state).items()}


def close(got: Any, want: Any, atol: float = ATOL, rtol: float = RTOL) -> None:
    if hasattr(want, "detach"):
        want = want.detach().numpy()
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=rtol, atol=atol)


def check_keys(model: Any, reference: Any) -> None:
    """Same keys with the same shapes, in torch's order (nothing is computed on the jaxnets side)."""
    report = jaxnets.check_state_dict(model, reference.state_dict())
    assert report.keys_match and not report.shape_mismatch, report
    assert list(model_order(model)) == list(reference.state_dict())


def check_both_ways(
    model: Any, reference: Any, inputs: tuple[Any, ...], run: Callable[..., Any], run_ref: Callable[..., Any]
) -> tuple[Any, Any]:
    """torch -> jaxnets (strict) gives torch's outputs; a fresh jaxnets init loads into torch
    (strict) and gives the same outputs there. Returns the loaded (params, state)."""
    params, state = model.load_state_dict(reference.state_dict())
    with torch.no_grad():
        close(run(params, state, *inputs), run_ref(reference, *inputs))
    fresh = model.init(jax.random.key(1))
    reference.load_state_dict(to_torch_state_dict(model, *fresh), strict=True)
    with torch.no_grad():
        close(run(*fresh, *inputs), run_ref(reference, *inputs))
    return params, state


def check_files(tmp_path: Path, model: Any, params: Any, state: Any, inputs: dict[str, np.ndarray],
                call: str, outputs: Any, reference: Any) -> None:
    """Weights round-trip strictly through safetensors files both ways (torch writes, jaxnets
    reads; jaxnets writes, torch reads); the model saved with jaxnets.save is loaded by a fresh
    process that imports only jaxnets, which must reproduce ``outputs``."""
    from safetensors.numpy import load_file, save_file
    from safetensors.torch import load_file as torch_load_file
    from safetensors.torch import save_file as torch_save_file

    torch_save_file({k: v.contiguous() for k, v in reference.state_dict().items()},
                    str(tmp_path / "torch.safetensors"))
    p1, s1 = model.load_state_dict(load_file(str(tmp_path / "torch.safetensors")))
    for k, v in model.state_dict(p1, s1).items():
        np.testing.assert_array_equal(v, reference.state_dict()[k].numpy(), err_msg=k)

    sd = model.state_dict(params, state)
    save_file({k: np.array(v, order="C") for k, v in sd.items()}, str(tmp_path / "m.safetensors"))
    p2, s2 = model.load_state_dict(load_file(str(tmp_path / "m.safetensors")))
    jax.tree.map(np.testing.assert_array_equal, (p2, s2), (params, state))
    reference.load_state_dict(torch_load_file(str(tmp_path / "m.safetensors")), strict=True)
    for k, v in reference.state_dict().items():
        np.testing.assert_array_equal(v.numpy(), sd[k], err_msg=k)

    jaxnets.save(tmp_path / "m.jnet", model, params, state)
    np.savez(tmp_path / "in.npz", **inputs)
    proc = subprocess.run(
        [sys.executable, str(HERE / "_load_fresh.py"), str(tmp_path / "m.jnet"),
         str(tmp_path / "in.npz"), str(tmp_path / "out.npz"), call],
        capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = np.load(tmp_path / "out.npz")
    want = [o for o in jax.tree.leaves(outputs)]
    assert len(got.files) == len(want)
    for i, w in enumerate(want):
        np.testing.assert_allclose(got[f"out{i}"], np.asarray(w), rtol=1e-6, atol=1e-6)

