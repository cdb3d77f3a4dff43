"""Loads a jaxnets model file and classifies the digits test split: no training code needed.

Run:  .venv/bin/python examples/predict.py demo_out/digits.jnet      (after `make demo`)

This script imports only jaxnets, numpy and scikit-learn's bundled data. The architecture comes
back from the file's config (registered names + hyperparameters), the weights and BatchNorm
statistics from its arrays; nothing in the file is executed.
"""

from __future__ import annotations

import argparse
import os

import numpy as np


def main(argv: list[str] | None = None) -> float:
    parser = argparse.ArgumentParser(description="Classify the digits test split with a saved model.")
    parser.add_argument("model_file", help="a jaxnets model file, e.g. demo_out/digits.jnet")
    args = parser.parse_args(argv)
    os.environ.setdefault("JAX_PLATFORMS", "cpu")

    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    import jaxnets

    loaded = jaxnets.load(args.model_file)
    model, params = loaded.model, loaded.params
    print(f"loaded {args.model_file}: {type(model).__name__} with "
          f"{sum(int(np.size(v)) for v in jaxnets.state_dict(params).values()):,} parameters")

    # The demo's split: same data, same seed (examples/demo.py: load_data).
    digits = load_digits()
    x = (digits.images / 16.0).astype(np.float32)[:, None, :, :]
    y = digits.target.astype(np.int32)
    _, x_test, _, y_test = train_test_split(x, y, test_size=0.2, random_state=0, stratify=y)

    logits = loaded.predict(x_test)  # the model's apply in eval mode, compiled once (jax.jit)
    pred = np.asarray(logits).argmax(-1)
    accuracy = float(np.mean(pred == y_test))
    print(f"test accuracy: {accuracy:.2%} on {len(y_test)} images")

    shades = " .:-=+*#%@"
    for i in range(3):
        img = x_test[i, 0]
        rows = ["".join(shades[min(int(v * 9.99), 9)] * 2 for v in row) for row in img]
        print(f"\nimage {i}: predicted {pred[i]}, label {y_test[i]}")
        print("\n".join("    " + r for r in rows))
    return accuracy


if __name__ == "__main__":
    main()
