"""Cold-start cost of the CLI: `runbook --help` and `runbook validate runbooks/`, each as
the median of several runs, against `python -c pass` on the same interpreter.

Target: at most 0.3 s above the bare interpreter.
Run: .venv/bin/python benchmarks/cli_startup.py [--runs N]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
CASES = {
    "python -c pass": [sys.executable, "-c", "pass"],
    "runbook --help": [sys.executable, "-c", "from engine.cli import main; main()", "--help"],
    "runbook validate runbooks/": [sys.executable, "-c", "from engine.cli import main; main()",
                                   "validate", str(REPO / "runbooks")],
}


def median_seconds(argv: list[str], runs: int) -> float:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run(argv, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                       check=False, timeout=120)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=9)
    args = parser.parse_args()
    for argv in CASES.values():  # warm the file cache and the bytecode
        median_seconds(argv, 1)
    results = {name: median_seconds(argv, args.runs) for name, argv in CASES.items()}
    bare = results["python -c pass"]
    print(f"median of {args.runs} runs, interpreter {sys.executable}")
    for name, seconds in results.items():
        extra = "" if name.startswith("python") else \
            f"  +{seconds - bare:.3f} s over bare ({seconds / bare:.1f}x)  target +0.300 s " \
            + ("ok" if seconds - bare <= 0.3 else "MISSED")
        print(f"{name:32s} {seconds:.3f} s{extra}")


if __name__ == "__main__":
    main()
