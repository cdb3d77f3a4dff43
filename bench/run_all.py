"""`make bench`: runs every benchmark script in bench/ (each defines main()) in one process each.

Ratios are only meaningful within one script's run (measured side by side); this machine is noisy.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
SKIP = {"run_all.py", "chart.py"}


def main() -> int:
    scripts = sorted(p for p in HERE.glob("*.py") if p.name not in SKIP and "def main(" in p.read_text())
    failed = []
    for script in scripts:
        print(f"\n=== {script.name} ===", flush=True)
        if subprocess.call([sys.executable, str(script), *sys.argv[1:]]) != 0:
            failed.append(script.name)
    chart = HERE / "chart.py"
    if chart.exists():
        subprocess.call([sys.executable, str(chart)])
    if failed:
        print(f"\nfailed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
