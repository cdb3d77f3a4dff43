"""First prediction of ResNet-18 from a saved file, in a fresh process: jaxnets vs torch.

What a script that starts, loads a trained model and predicts pays before its first answer. Each
measurement runs in a fresh Python process (nothing imported, compiled or cached beforehand; jax's
persistent compilation cache stays off, as it is by default, and the children's environment has
no ``JAX_COMPILATION_CACHE_DIR``). Timed inside the child, from its first line:

* **import**: ``import jaxnets`` (which imports jax) / ``import torch`` and the bench's
  torchvision-style ResNet-18 module (bench/_resnet.py; torchvision itself is not installed);
* **load**: ``jaxnets.load(path)`` (config, checks, checksums, arrays on the default device) /
  ``torch.load(path, weights_only=True)`` + building the model + ``load_state_dict`` + ``eval()``;
* **first prediction** of one 224x224 image: ``loaded.predict(x)`` (the jitted apply on
  ``LoadedModel``: compiling the whole model once, then running it) / the forward under
  ``torch.no_grad()``; both until the result is ready.

Two more lines, for reference: the eager ``loaded.model.apply(...)`` (one XLA compilation per
operation), and ``loaded.predict`` with jax's persistent compilation cache switched on by the user
(``JAX_COMPILATION_CACHE_DIR`` set for that child, the cache filled by one untimed process first):
what a script that restarts often gets when it opts in (docs/saving_loading.md).

The files hold the same weights (torch's, loaded into ``jaxnets.models.resnet18`` and saved with
``jaxnets.save``), and every child's logits are checked against torch's: a contender that
predicts something else fails the benchmark instead of being timed. Rounds are interleaved (the
order of the contenders alternates), and each reported figure is the median over rounds.
Goal: jaxnets (jit) total <= 0.6x torch's.

Writes bench/results/first_prediction.json (a panel of docs/benchmarks.png).

Run: ``python bench/first_prediction.py [--rounds 5] [--timeout 300]``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent

CONTENDERS = ("jaxnets predict", "jaxnets eager", "jaxnets cached", "torch")
NAMES = {  # in the table and the chart
    "jaxnets predict": "jaxnets",
    "jaxnets eager": "jaxnets eager apply",
    "jaxnets cached": "jaxnets + compilation cache",
    "torch": "torch",
}
PARTS = ("import_s", "load_s", "predict_s", "total_s")
IMAGE = (1, 3, 224, 224)
GOAL = 0.6


def _child(kind: str, folder: Path) -> dict[str, Any]:
    """Runs in the fresh process: import, load, first prediction, each timed."""
    t0 = time.perf_counter()
    sys.path[:0] = [str(ROOT), str(HERE)]
    if kind == "torch":
        import torch
        from _resnet import torch_resnet18

        t1 = time.perf_counter()
        import numpy as np

        model = torch_resnet18()
        model.load_state_dict(torch.load(folder / "resnet18.pt", weights_only=True))
        model.eval()
        x = torch.from_numpy(np.load(folder / "x.npy"))
        t2 = time.perf_counter()
        with torch.no_grad():
            out = model(x).numpy()
        t3 = time.perf_counter()
    else:
        import jax

        import jaxnets

        t1 = time.perf_counter()
        import numpy as np

        loaded = jaxnets.load(folder / "resnet18.jaxnets")
        jax.block_until_ready((loaded.params, loaded.state))
        x = np.load(folder / "x.npy")
        t2 = time.perf_counter()
        if kind == "jaxnets eager":
            y = loaded.model.apply(loaded.params, loaded.state, x)[0]
        else:
            y = loaded.predict(x)
        out = np.asarray(jax.block_until_ready(y))
        t3 = time.perf_counter()
        cache = jax.config.jax_compilation_cache_dir
        if bool(cache) != (kind == "jaxnets cached"):  # else the line would not be what it says
            raise RuntimeError(f"{kind}: jax's compilation cache dir is {cache!r}")
    times = {"import_s": t1 - t0, "load_s": t2 - t1, "predict_s": t3 - t2, "total_s": t3 - t0}
    return {**times, "logits": [float(v) for v in out.reshape(-1)]}


def _prepare(folder: Path) -> None:
    """The same random-init ResNet-18 weights as a torch state_dict file and a jaxnets model file."""
    sys.path[:0] = [str(ROOT), str(HERE)]
    import numpy as np
    import torch
    from _resnet import torch_resnet18

    import jaxnets

    torch.manual_seed(0)
    tmodel = torch_resnet18()
    with torch.no_grad():  # non-trivial BatchNorm statistics, as a trained model has
        for m in tmodel.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
    torch.save(tmodel.state_dict(), folder / "resnet18.pt")
    model = jaxnets.models.resnet18()
    params, state = model.load_state_dict(folder / "resnet18.pt")
    jaxnets.save(folder / "resnet18.jaxnets", model, params, state)
    np.save(folder / "x.npy", np.random.default_rng(0).standard_normal(IMAGE, dtype=np.float32))


def _fresh(kind: str, folder: Path, timeout: float) -> dict[str, Any]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("JAX_COMPILATION_CACHE", "JAX_PERSISTENT_CACHE"))}
    if kind == "jaxnets cached":  # what a user opting in sets; cache every compilation
        env["JAX_COMPILATION_CACHE_DIR"] = str(folder / "jax-cache")
        env["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"
        env["JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES"] = "0"
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", kind, "--folder", str(folder)]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
    except subprocess.TimeoutExpired as e:
        raise RuntimeError(f"{kind}: the fresh process took over {timeout:.0f} s") from e
    if proc.returncode != 0:
        raise RuntimeError(f"{kind} failed:\n{proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def _check_same(runs: dict[str, list[dict[str, Any]]]) -> float:
    """The largest difference of any contender's logits from torch's (raises above tolerance)."""
    import numpy as np

    ref = np.array(runs["torch"][0]["logits"])
    worst = 0.0
    for kind, rows in runs.items():
        for row in rows:
            diff = float(np.max(np.abs(np.array(row["logits"]) - ref)))
            if diff > 1e-3 * max(1.0, float(np.max(np.abs(ref)))):
                raise RuntimeError(f"{kind} predicts other logits than torch (max diff {diff:.3g})")
            worst = max(worst, diff)
    return worst


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=5, help="fresh processes per contender (median)")
    ap.add_argument("--timeout", type=float, default=300.0, help="seconds per fresh process")
    ap.add_argument("--json", type=Path, default=HERE / "results" / "first_prediction.json",
                    help="the results file (default bench/results/first_prediction.json)")
    ap.add_argument("--no-json", action="store_true", help="write no results file")
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--prepare", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--folder", type=Path, default=None, help=argparse.SUPPRESS)
    args, _ = ap.parse_known_args(argv)  # make bench passes its own arguments to every script
    if args.prepare:
        _prepare(args.folder)
        return 0
    if args.child:
        print(json.dumps(_child(args.child, args.folder)))
        return 0

    with tempfile.TemporaryDirectory(prefix="jaxnets-first-prediction-") as tmp:
        folder = Path(tmp)
        # In its own process too, so this one holds neither library while the children run.
        cmd = [sys.executable, str(Path(__file__).resolve()), "--prepare", "--folder", str(folder)]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=args.timeout)
        if proc.returncode != 0:
            raise RuntimeError(f"preparing the files failed:\n{proc.stderr[-2000:]}")
        _fresh("jaxnets cached", folder, args.timeout)  # fills the cache; not timed
        runs: dict[str, list[dict[str, Any]]] = {k: [] for k in CONTENDERS}
        for r in range(args.rounds):
            for kind in CONTENDERS if r % 2 == 0 else CONTENDERS[::-1]:
                runs[kind].append(_fresh(kind, folder, args.timeout))
        worst = _check_same(runs)

    med = {k: {p: statistics.median(row[p] for row in rows) for p in PARTS} for k, rows in runs.items()}
    print(f"ResNet-18, 1x3x224x224: import + load + first prediction in a fresh process, "
          f"median of {args.rounds} (s); logits agree with torch's to {worst:.1e}")
    print(f"{'':<28} {'import':>8} {'load':>8} {'predict':>8} {'total':>8} {'/ torch':>8}")
    for kind in CONTENDERS:
        m = med[kind]
        ratio = m["total_s"] / med["torch"]["total_s"]
        print(f"{NAMES[kind]:<28} {m['import_s']:>8.2f} {m['load_s']:>8.2f} {m['predict_s']:>8.2f} "
              f"{m['total_s']:>8.2f} {ratio:>7.2f}x")
    ratio = med["jaxnets predict"]["total_s"] / med["torch"]["total_s"]
    print(f"jaxnets (loaded.predict) / torch, total: {ratio:.3f} (goal <= {GOAL}: "
          f"{'met' if ratio <= GOAL else 'NOT met'})")
    if not args.no_json:
        from chart import write_results

        groups = {part: {NAMES[k]: med[k][f"{part}_s"] for k in CONTENDERS}
                  for part in ("total", "import", "load", "predict")}
        title = "First prediction of ResNet-18 in a fresh process: import + load + predict (s)"
        refs = [NAMES["jaxnets eager"], NAMES["jaxnets cached"]]
        print("wrote", write_results(args.json.stem, title, groups, reference=refs,
                                     directory=args.json.parent))
    return 0


if __name__ == "__main__":
    sys.exit(main())
