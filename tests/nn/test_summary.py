"""jaxnets.summary: per-layer output shapes and parameter counts, checked against torch twins."""

from __future__ import annotations

import re
from dataclasses import dataclass

import jax
import pytest

import jaxnets
from jaxnets import nn

torch = pytest.importorskip("torch")


def parse(table: str) -> tuple[dict[str, tuple[str, str, int]], dict[str, str]]:
    """``({path: (type, output shape, params)}, {total name: value})`` from a summary string."""
    lines = table.splitlines()
    rules = [i for i, line in enumerate(lines) if set(line) == {"="}]
    rows = {}
    for line in lines[rules[1] + 1 : rules[2]]:
        path, kind, shape, count = re.split(r"\s{2,}", line.strip())
        rows[path] = (kind, shape, int(count.replace(",", "")))
    totals = dict(line.split(": ", 1) for line in lines[rules[2] + 1 : rules[3]])
    return rows, totals


def torch_shapes(model: torch.nn.Module, x: torch.Tensor) -> dict[str, str]:
    """``{module name: str(output shape)}`` from forward hooks, names as ``named_modules``."""
    shapes: dict[str, str] = {}

    def hook(name: str):
        def record(mod, inp, out) -> None:
            shapes.setdefault(name, str(tuple(out.shape)))

        return record

    hooks = [m.register_forward_hook(hook(name)) for name, m in model.named_modules()]
    with torch.no_grad():
        model.eval()(x)
    for h in hooks:
        h.remove()
    return shapes


def torch_totals(model: torch.nn.Module) -> tuple[int, int]:
    return sum(p.numel() for p in model.parameters()), sum(b.numel() for b in model.buffers())


def lenet() -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(1, 6, 5, padding=2),
        nn.BatchNorm2d(6),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(6, 16, 5),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(400, 120),
        nn.ReLU(),
        nn.Linear(120, 10),
    )


def torch_lenet() -> torch.nn.Sequential:
    t = torch.nn
    return t.Sequential(
        t.Conv2d(1, 6, 5, padding=2),
        t.BatchNorm2d(6),
        t.ReLU(),
        t.MaxPool2d(2),
        t.Conv2d(6, 16, 5),
        t.ReLU(),
        t.MaxPool2d(2),
        t.Flatten(),
        t.Linear(400, 120),
        t.ReLU(),
        t.Linear(120, 10),
    )


def test_sequential_cnn_shapes_and_counts_match_torch():
    rows, totals = parse(jaxnets.summary(lenet(), (2, 1, 28, 28)))
    tmodel = torch_lenet()
    expected = torch_shapes(tmodel, torch.zeros(2, 1, 28, 28))
    assert {p: r[1] for p, r in rows.items()} == {
        ("(model)" if k == "" else k): v for k, v in expected.items()
    }
    assert rows["0"] == ("Conv2d", "(2, 6, 28, 28)", 6 * 1 * 5 * 5 + 6)
    n_params, n_buffers = torch_totals(tmodel)
    assert totals["Total params"] == f"{n_params:,}"
    assert totals["Trainable params"] == f"{n_params:,}"
    assert totals["Buffers"] == f"{n_buffers:,}"  # running_mean, running_var, num_batches_tracked
    nbytes = 4 * n_params + 4 * 12 + 4  # float32 params and running stats, an int32 counter
    assert totals["Params + buffers size"].endswith(f"({nbytes:,} bytes)")


@dataclass(frozen=True)
class Composite(nn.Module):
    conv: nn.Conv2d = nn.Conv2d(3, 8, 3, padding=1)
    bn: nn.BatchNorm2d = nn.BatchNorm2d(8)
    pool: nn.AdaptiveAvgPool2d = nn.AdaptiveAvgPool2d(1)
    blocks: tuple[nn.Module, ...] = (nn.Linear(8, 16), nn.Linear(16, 16))
    head: nn.Sequential = nn.Sequential(nn.ReLU(), nn.Linear(16, 4))

    def apply(self, params, state, x, *, train=False, key=None):
        m = self.bind(params, state, train=train, key=key)
        h = m.pool(jax.nn.relu(m.bn(m.conv(x))))
        h = h.reshape(h.shape[0], self.conv.out_channels)  # reads a child's hyperparameter
        for block in m.blocks:
            h = jax.nn.relu(block(h))
        return m.head(h), m.state


class TorchComposite(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        t = torch.nn
        self.conv, self.bn, self.pool = (
            t.Conv2d(3, 8, 3, padding=1),
            t.BatchNorm2d(8),
            t.AdaptiveAvgPool2d(1),
        )
        self.blocks = t.ModuleList([t.Linear(8, 16), t.Linear(16, 16)])
        self.head = t.Sequential(t.ReLU(), t.Linear(16, 4))

    def forward(self, x):
        h = self.pool(torch.relu(self.bn(self.conv(x)))).flatten(1)
        for block in self.blocks:
            h = torch.relu(block(h))
        return self.head(h)


def test_composite_model_shapes_and_counts_match_torch():
    rows, totals = parse(Composite().summary((5, 3, 12, 12)))
    tmodel = TorchComposite()
    expected = torch_shapes(tmodel, torch.zeros(5, 3, 12, 12))
    expected = {("(model)" if k == "" else k): v for k, v in expected.items() if k != "blocks"}
    assert {p: r[1] for p, r in rows.items()} == expected
    assert rows["blocks.1"] == ("Linear", "(5, 16)", 16 * 16 + 16)
    assert rows["head"][0] == "Sequential" and rows["head.1"] == ("Linear", "(5, 4)", 16 * 4 + 4)
    n_params, n_buffers = torch_totals(tmodel)
    assert totals["Total params"] == f"{n_params:,}" and totals["Buffers"] == f"{n_buffers:,}"
    assert sum(r[2] for r in rows.values()) == n_params  # each row counts only its own params


def test_rows_are_indented_by_depth():
    table = Composite().summary((1, 3, 4, 4))
    assert "\n    head.1 " in table and "\n  head " in table and "\n(model) " in table


def test_nothing_is_computed_so_huge_models_are_instant():
    big = nn.Sequential(nn.Linear(100_000, 100_000), nn.ReLU())  # 40 GB if it were materialised
    rows, totals = parse(jaxnets.summary(big, (1, 100_000)))
    assert totals["Total params"] == "10,000,100,000"
    assert rows["1"] == ("ReLU", "(1, 100000)", 0)


def test_integer_inputs_use_the_dtype_argument():
    rows, _ = parse(jaxnets.summary(nn.Sequential(nn.Embedding(10, 3)), (2, 7), dtype="int32"))
    assert rows["0"][:2] == ("Embedding", "(2, 7, 3)")


def test_a_wrong_input_shape_is_reported_with_the_shape():
    with pytest.raises(
        jaxnets.JaxnetsError,
        match=r"Sequential failed in layer '0' \(Conv2d\) on an input of shape \(2, 3, 28, 28\)",
    ) as e:
        jaxnets.summary(lenet(), (2, 3, 28, 28))
    assert e.value.path == "0"


def test_module_summary_equals_jaxnets_summary():
    assert lenet().summary((1, 1, 28, 28)) == jaxnets.summary(lenet(), (1, 1, 28, 28))
