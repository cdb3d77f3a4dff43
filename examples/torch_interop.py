"""A PyTorch model's weights into jaxnets and back: same keys, same layouts, same outputs.

Run:  .venv/bin/python examples/torch_interop.py        (needs torch: pip install torch)

1. torch -> jaxnets: ``jaxnets.load_state_dict(model, torch_model.state_dict())`` checks every
   key, shape and dtype (all problems listed at once) and returns ``(params, state)``;
2. the two models agree on the same input (eval mode: BatchNorm uses its running statistics);
3. jaxnets -> torch: train a step in JAX, then ``torch_model.load_state_dict`` takes
   ``jaxnets.state_dict(params, state, model=model)`` (``strict=True``) and agrees again;
4. a mismatch (a model built with another width) is one error listing every differing key.
"""

from __future__ import annotations

import os

import numpy as np


def main() -> None:
    os.environ.setdefault("JAX_PLATFORMS", "cpu")
    import jax
    import jax.numpy as jnp
    import optax
    import torch

    import jaxnets
    from jaxnets import nn, optim

    torch.manual_seed(0)
    torch_model = torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.BatchNorm2d(8), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
        torch.nn.Flatten(), torch.nn.Linear(8 * 4 * 4, 10),
    )
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(8 * 4 * 4, 10),
    )
    with torch.no_grad():  # give BatchNorm non-trivial running statistics
        torch_model.train()(torch.randn(32, 3, 8, 8) * 2 + 1)
    torch_model.eval()

    # 1. torch -> jaxnets
    params, state = jaxnets.load_state_dict(model, torch_model.state_dict())
    print("1. loaded", len(torch_model.state_dict()), "entries:", ", ".join(torch_model.state_dict()))

    # 2. same outputs
    x = np.random.default_rng(0).normal(size=(4, 3, 8, 8)).astype(np.float32)
    y_torch = torch_model(torch.from_numpy(x)).detach().numpy()
    y_jax, _ = model.apply(params, state, x, train=False)
    err = float(np.max(np.abs(np.asarray(y_jax) - y_torch)))
    print(f"2. outputs agree: max |jax - torch| = {err:.2e}")
    if err > 1e-4:
        raise SystemExit("outputs differ")

    # 3. a training step in JAX, then back into torch
    opt = optim.sgd(0.1)
    labels = jnp.arange(4)

    def loss_fn(p, s):  # type: ignore[no-untyped-def]
        logits, new_s = model.apply(p, s, x, train=True)
        return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean(), new_s

    (loss, state), grads = jax.value_and_grad(loss_fn, has_aux=True)(params, state)
    updates, _ = opt.update(grads, opt.init(params), params)
    params = optax.apply_updates(params, updates)
    sd = jaxnets.state_dict(params, state, model=model)  # numpy arrays, PyTorch's key order
    torch_model.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in sd.items()}, strict=True)
    y_torch = torch_model(torch.from_numpy(x)).detach().numpy()
    y_jax, _ = model.apply(params, state, x, train=False)
    err = float(np.max(np.abs(np.asarray(y_jax) - y_torch)))
    print(f"3. after a JAX training step (loss {float(loss):.3f}), torch agrees again: max diff {err:.2e}; "
          f"num_batches_tracked = {int(torch_model[1].num_batches_tracked)}")
    if err > 1e-4:
        raise SystemExit("outputs differ after the round trip")

    # 4. a model that does not fit: every problem at once
    wider = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(), nn.MaxPool2d(2),
                          nn.Flatten(), nn.Linear(16 * 4 * 4, 10))
    try:
        jaxnets.load_state_dict(wider, torch_model.state_dict())
    except jaxnets.StateDictError as e:
        print("4. loading into a wider model:\n   " + str(e).replace("\n", "\n   "))


if __name__ == "__main__":
    main()
