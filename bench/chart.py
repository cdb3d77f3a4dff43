"""Draws docs/benchmarks.png from the results the benchmark scripts leave in bench/results/*.json.

Run:  .venv/bin/python bench/chart.py          (``make bench`` runs it after the benchmarks)

A results file is one benchmark's run, written with :func:`write_results`::

    {"title": "Model files: save and load", "unit": "s", "lower_is_better": true,
     "groups": {"save": {"jaxnets": 0.21, "safetensors": 0.25, "torch.save": 0.40},
                "load": {"jaxnets": 0.08, "safetensors": 0.09, "torch.load": 0.31}},
     "machine": "2 CPU cores", "date": "2026-11-23T10:00:00+00:00"}

Each file becomes one panel of grouped bars (a group per operation, a bar per library). Where every
group has a ``jaxnets`` entry, bars show each value relative to jaxnets' (log scale, jaxnets = 1),
since only ratios within one panel mean anything: its numbers were measured side by side in one run.
Libraries listed in an optional ``"reference"`` (e.g. torch eager beside two jax libraries) are
drawn hatched and marked "(reference)" in the legend. When the files come from different machines
(a GPU run beside CPU runs), each panel names its own machine. Panels of more than eight groups
take a whole row.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
CHART = HERE.parent / "docs" / "benchmarks.png"

__all__ = ["write_results", "read_results", "layout", "draw", "main"]


def write_results(
    name: str,
    title: str,
    groups: Mapping[str, Mapping[str, float]],
    *,
    unit: str = "s",
    lower_is_better: bool = True,
    reference: Sequence[str] = (),
    machine: str | None = None,
    directory: Path = RESULTS,
) -> Path:
    """Writes one benchmark's numbers as ``bench/results/<name>.json`` for :func:`draw`.

    Args:
      name: the file stem, e.g. ``"files"`` (one file per benchmark script).
      title: the panel title, e.g. ``"Model files, 100 MB: save and load"``.
      groups: ``{operation: {library: value}}``, e.g. ``{"save": {"jaxnets": 0.2, "orbax": 0.5}}``.
      unit: the values' unit (``"s"``, ``"ms"``, ``"x"``).
      lower_is_better: shown in the axis label.
      reference: libraries shown for reference rather than as contenders (hatched bars).
      machine: what ran it; default this machine's architecture, core count and OS (a GPU
        benchmark names its device).
      directory: where to write (default bench/results/).

    Returns:
      The path written.

    Raises:
      ValueError: a ``reference`` library that no group has.
    """
    libs = {lib for row in groups.values() for lib in row}
    unknown = [lib for lib in reference if lib not in libs]
    if unknown:
        raise ValueError(f"reference libraries {unknown} are in no group (libraries: {sorted(libs)})")
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{name}.json"
    data = {
        "title": title,
        "unit": unit,
        "lower_is_better": lower_is_better,
        "groups": {g: {k: float(v) for k, v in row.items()} for g, row in groups.items()},
        "reference": list(reference),
        "machine": machine or f"{platform.machine()}, {os.cpu_count()} CPU cores, {platform.system()}",
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    }
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(data, indent=1))
    tmp.replace(path)
    return path


def read_results(directory: Path = RESULTS) -> list[dict[str, Any]]:
    """Every valid results file in ``directory``, sorted by name; malformed ones are reported and skipped."""
    out = []
    for path in sorted(directory.glob("*.json")):
        try:
            data = json.loads(path.read_text())
            groups = data["groups"]
            if not isinstance(groups, dict) or not all(
                isinstance(row, dict) and all(isinstance(v, (int, float)) for v in row.values())
                for row in groups.values()
            ):
                raise ValueError("'groups' must be {operation: {library: number}}")
            reference = data.setdefault("reference", [])
            if not isinstance(reference, list) or not all(isinstance(x, str) for x in reference):
                raise ValueError("'reference' must be a list of library names")
        except (OSError, ValueError, KeyError, TypeError) as e:
            print(f"chart: skipping {path}: {e}", file=sys.stderr)
            continue
        data.setdefault("title", path.stem)
        data["name"] = path.stem
        out.append(data)
    return out


WIDE = 8  # a panel with more groups than this takes a whole row


def layout(n_groups: Sequence[int]) -> list[tuple[int, int, int]]:
    """Where each panel goes, in order: ``(row, column, columns spanned)`` on a 2-column grid.

    Panels of up to :data:`WIDE` groups fill the rows two by two; a wider one takes a row of its
    own, so its labels stay readable (the half row it leaves empty takes the next narrow panel).
    """
    slots: list[tuple[int, int, int]] = []
    row, col = 0, 0  # the next free slot at the end
    gap: tuple[int, int] | None = None  # a right half left empty by a wide panel, filled next
    for n in n_groups:
        if n > WIDE:
            if col:
                gap, row, col = (row, 1), row + 1, 0
            slots.append((row, 0, 2))
            row += 1
        elif gap is not None:
            slots.append((*gap, 1))
            gap = None
        else:
            slots.append((row, col, 1))
            row, col = (row + 1, 0) if col else (row, 1)
    return slots


def draw(results: list[dict[str, Any]], path: Path = CHART) -> Path:
    """Draws one panel of grouped bars per results file into ``path`` (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    slots = layout([len(r["groups"]) for r in results])
    rows = 1 + max(row for row, _, _ in slots)
    cols = 1 if len(results) == 1 else 2
    fig = plt.figure(figsize=(6.5 * cols, 3.8 * rows))
    grid = fig.add_gridspec(rows, cols)
    axes = [fig.add_subplot(grid[row, col] if span == 1 else grid[row, :])
            for row, col, span in slots]
    libraries: list[str] = ["jaxnets"]  # first, then in the order the results list them
    for r in results:
        for row in r["groups"].values():
            libraries += [lib for lib in row if lib not in libraries]
    palette = list(plt.cm.tab10.colors) + list(plt.cm.Dark2.colors)  # 18 distinct colours
    colors = {lib: palette[i % len(palette)] for i, lib in enumerate(libraries)}
    machines = {r.get("machine", "") for r in results}
    for ax, r in zip(axes, results):
        groups = list(r["groups"])
        libs = [lib for lib in libraries if any(lib in r["groups"][g] for g in groups)]
        relative = all(r["groups"][g].get("jaxnets", 0) > 0 for g in groups)
        width = 0.8 / max(len(libs), 1)
        x = np.arange(len(groups))
        for i, lib in enumerate(libs):
            vals = np.array([r["groups"][g].get(lib, np.nan) for g in groups], dtype=float)
            if relative:
                vals = vals / np.array([r["groups"][g]["jaxnets"] for g in groups])
            ref = lib in r["reference"]
            ax.bar(x + (i - (len(libs) - 1) / 2) * width, vals, width,
                   label=f"{lib} (reference)" if ref else lib, color=colors[lib],
                   hatch="//" if ref else None, alpha=0.6 if ref else 1.0,
                   edgecolor="black" if lib == "jaxnets" else ("dimgray" if ref else "none"),
                   linewidth=0.8)
        ax.set_xticks(x, [g.replace(", ", "\n") for g in groups], fontsize=8 if len(groups) <= 12 else 7)
        better = "lower is better" if r.get("lower_is_better", True) else "higher is better"
        if relative:
            ax.set_yscale("log")
            ax.axhline(1.0, color="black", lw=0.8)
            shown = [v for g in groups for v in r["groups"][g].values() if v > 0]
            ratios = [v / r["groups"][g]["jaxnets"] for g in groups for v in r["groups"][g].values()
                      if v > 0]
            if shown:  # every bar whole, with room for the legend above the tallest
                ax.set_ylim(min(min(ratios), 1.0) / 1.5, max(max(ratios), 1.0) * 3.0)
            ax.set_ylabel(f"relative to jaxnets ({better})")
        else:
            ax.set_ylabel(f"{r.get('unit', '')} ({better})")
        title = r["title"] if len(machines) == 1 else f"{r['title']}\n({r.get('machine', '')})"
        ax.set_title(title, fontsize=10)
        ax.grid(axis="y", alpha=0.3)
        ax.legend(fontsize=7, ncol=2)
    machine = results[0].get("machine", "") if len(machines) == 1 else ""
    fig.suptitle(f"jaxnets benchmarks ({machine})" if machine else "jaxnets benchmarks")
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.4 / fig.get_figheight()))  # room for the suptitle
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Draw docs/benchmarks.png from bench/results/*.json.")
    parser.add_argument("--results", type=Path, default=RESULTS, help="folder of results JSON files")
    parser.add_argument("--out", type=Path, default=CHART, help="the PNG to write")
    args = parser.parse_args(argv)
    results = read_results(args.results)
    if not results:
        print(f"chart: no results in {args.results}/ (benchmark scripts write them with "
              "bench/chart.py:write_results); nothing drawn.")
        return 0
    path = draw(results, args.out)
    print(f"chart: {len(results)} benchmark(s) -> {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
