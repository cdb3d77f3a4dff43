"""Peak host memory (VmHWM) of model files larger than the memory one would like to spend on them.

Three measurements, each in fresh processes on CPU devices, each against its bound (issue 12):

* **load, 2 processes**: a job of 2 ``jax.distributed`` processes (2 CPU devices each) loads a
  model of ``--size`` GiB sharded over the 4 devices; each process's peak may rise by at most
  its shards (half the model) + 256 MiB. Beside it, the whole-file path every process took
  before (read all of it, ``jax.device_put`` onto the sharding), at ``--baseline`` GiB.
* **save, 2 processes**: the same job saves the model into one file, each process writing its
  shards; the peak may rise by at most 256 MiB (the shards are on the devices already).
* **save, 1 process**: a model of ``--size`` GiB on 8 CPU devices (every leaf sharded over
  them) saved by one process; the peak may rise by at most its largest leaf + 256 MiB above the
  device-resident model (each leaf is copied to the host only while it is written).

CPU devices live in host memory, so what the devices hold is part of the resident set: each
figure is the rise of VmHWM over VmRSS just before the operation (``/proc/self/clear_refs``
resets the peak). Files are written without fsync (memory, not the disk, is measured here).

Run: ``python bench/memory.py [--size 4] [--baseline 1] [--leaves 16]`` (part of ``make bench``).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests" / "multihost"))
from _multihost import run_job, run_single  # noqa: E402  (the one bounded launcher)

MiB = 1 << 20
GiB = 1 << 30
BOUND = 256 * MiB
RATIO = "jaxnets peak rise / bound"

_COMMON = """
import json, re, time
import numpy as np, jax, jaxnets
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
def rss(field):
    return int(re.search(field + r":\\s+(\\d+)", open("/proc/self/status").read()).group(1)) << 10
def reset_peak():
    import ctypes, gc
    gc.collect()
    ctypes.CDLL("libc.so.6").malloc_trim(0)  # memory freed earlier leaves the resident set first
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # VmHWM := VmRSS
SIZE, LEAVES, PATH = {size}, {leaves}, {path!r}
ROWS = 4096
COLS = SIZE // LEAVES // ROWS // 4
devices = jax.devices()
mesh = Mesh(np.array(devices), ("x",))
spec = NamedSharding(mesh, P("x"))  # rows split over every device of the job
def block(i):
    return lambda idx: np.full((idx[0].stop - idx[0].start, COLS), i, np.float32)
def report(**fields):
    print("MEASURED " + json.dumps(fields), flush=True)
"""

_SAVE = """
model = {f"w{i}": jax.make_array_from_callback((ROWS, COLS), spec, block(i)) for i in range(LEAVES)}
jax.block_until_ready(model)
held = sum(s.data.nbytes for a in model.values() for s in a.addressable_shards)
reset_peak(); before = rss("VmRSS"); t = time.perf_counter()
jaxnets.save_state_dict(PATH, model, fsync=False)
report(seconds=time.perf_counter() - t, rise=rss("VmHWM") - before, held=held,
       largest=max(a.nbytes for a in model.values()), kept=rss("VmRSS") - before)
"""

_LOAD = """
reset_peak(); before = rss("VmRSS"); t = time.perf_counter()
if {whole}:  # the path every process took before: all of the file, then device_put
    with jaxnets.open(PATH) as r:
        arrays = r.read_all("model")["model"]
        got = {{k: jax.device_put(v, spec) for k, v in arrays.items()}}
        del arrays
else:
    got = jaxnets.load(PATH, sharding=spec).params
jax.block_until_ready(got)
seconds = time.perf_counter() - t
held = sum(s.data.nbytes for a in got.values() for s in a.addressable_shards)
ok = all(float(got[f"w{{i}}"].addressable_shards[0].data[0, 0]) == i for i in range(LEAVES))
report(seconds=seconds, rise=rss("VmHWM") - before, held=held, ok=ok)
"""


def _measured(outs: list[str]) -> list[dict[str, float]]:
    found = []
    for out in outs:
        lines = [line for line in out.splitlines() if line.startswith("MEASURED ")]
        if not lines:
            raise RuntimeError(f"no measurement in the output:\n{out[-3000:]}")
        found.append(json.loads(lines[-1].removeprefix("MEASURED ")))
    return found


def _job(script: str, folder: str, timeout: float) -> list[dict[str, float]]:
    return _measured(run_job(script, folder, timeout=timeout))


def _line(what: str, m: dict[str, float], bound: float) -> str:
    verdict = "ok" if m["rise"] <= bound else "OVER"
    return (f"  {what:<42}{m['rise'] / MiB:>9.0f}{bound / MiB:>9.0f}  {verdict:<5}"
            f"{m['seconds']:>8.2f}")  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", type=float, default=4.0, help="model size in GiB (default 4)")
    parser.add_argument("--leaves", type=int, default=16, help="number of leaves (default 16)")
    parser.add_argument("--baseline", type=float, default=1.0,
                        help="GiB for the whole-file load path (0: skip; it needs ~6x the size per process)")  # fmt: skip
    parser.add_argument("--dir", default=None, help="where to write the files (default: a temp dir)")
    parser.add_argument("--no-json", dest="json", action="store_false", help="do not write bench/results/memory.json")
    args = parser.parse_args(argv)
    folder = tempfile.mkdtemp(prefix="jaxnets_memory_", dir=args.dir)
    size = int(args.size * GiB)
    groups: dict[str, dict[str, float]] = {}
    failed = False
    print(f"peak host memory: rise of VmHWM over VmRSS before the operation (MiB), {args.size:g} GiB "
          f"model of {args.leaves} float32 leaves, CPU devices")  # fmt: skip
    print(f"  {'operation':<42}{'rise':>9}{'bound':>9}  {'':<5}{'seconds':>8}")
    try:
        path = os.path.join(folder, "model.jnet")
        common = _COMMON.format(size=size, leaves=args.leaves, path=path)
        # Save and load in separate jobs: a fresh process has no freed memory to reuse.
        saves = _job(common + _SAVE, folder, timeout=600)
        for pid, m in enumerate(saves):
            print(_line(f"save, 2 processes: process {pid}", m, BOUND))
            failed |= m["rise"] > BOUND
        loads = _job(common + _LOAD.format(whole=False), folder, timeout=600)
        for pid, m in enumerate(loads):
            bound = m["held"] + BOUND
            print(_line(f"load (range reads), process {pid}: shards {m['held'] / MiB:.0f}", m, bound))
            failed |= m["rise"] > bound or not m["ok"]
        # The chart's panel: each peak rise as a fraction of its bound (at most 1 meets it).
        groups["save, 2 processes"] = {RATIO: max(m["rise"] for m in saves) / BOUND}
        groups["load, 2 processes"] = {RATIO: max(m["rise"] / (m["held"] + BOUND) for m in loads)}
        os.unlink(path)

        single = os.path.join(folder, "single.jnet")
        script = (_COMMON.format(size=size, leaves=args.leaves, path=single) + _SAVE)
        (one,) = _measured([run_single(script, devices=8, timeout=600)])
        bound = one["largest"] + BOUND
        print(_line(f"save, 1 process, 8 devices: largest leaf {one['largest'] / MiB:.0f}", one, bound))
        print(f"    host memory still held after the save: {one['kept'] / MiB:.0f} MiB")
        failed |= one["rise"] > bound
        groups["save, 1 process"] = {RATIO: one["rise"] / bound}
        os.unlink(single)

        if args.baseline > 0:
            small = int(args.baseline * GiB)
            common = _COMMON.format(size=small, leaves=args.leaves, path=path)
            _job(common + _SAVE, folder, timeout=600)
            new = _job(common + _LOAD.format(whole=False), folder, timeout=600)
            old = _job(common + _LOAD.format(whole=True), folder, timeout=600)
            print(f"  at {args.baseline:g} GiB, side by side (process 0; the other alike):")
            print(_line("load (range reads)", new[0], new[0]["held"] + BOUND))
            print(_line("load (whole file, then device_put)", old[0], old[0]["held"] + BOUND))
            print(f"    whole-file / range reads: peak rise {old[0]['rise'] / max(new[0]['rise'], 1):.1f}x, "
                  f"time {old[0]['seconds'] / new[0]['seconds']:.1f}x")  # fmt: skip
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    if args.json and groups:
        sys.path.insert(0, str(HERE))
        from chart import write_results

        print("wrote", write_results("memory", f"Peak host memory rise / its bound, {args.size:g} GiB model",
                                     groups, unit="x"))  # fmt: skip
    if failed:
        print("a bound was not met", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
