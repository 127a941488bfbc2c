"""Start-up time and memory of the ``vqaudio`` command, beside a bare ``python -c pass`` in the same run.

Each command runs in a fresh process (median of ``--repeats`` after a warm-up); its wall time, the ratio to the
bare interpreter, peak resident memory (``ru_maxrss`` of the child) and which heavy modules it imported are
reported. ``--help`` should import neither torch nor any plotting code; ``info`` loads the embedded model.

    python benchmarks/bench_startup.py
    python benchmarks/bench_startup.py --repeats 9 --json startup.json
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

from timing import median_seconds

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "matplotlib", "tensorboard", "librosa", "numba", "scipy", "torch._dynamo")
REPORT_MODULES = (
    "import atexit, sys; atexit.register(lambda: print('MODULES', *sorted(sys.modules), file=sys.stderr))"
)

COMMANDS = {
    "python -c pass": ["-c", "pass"],
    "import vqaudio": ["-c", "import vqaudio"],
    "vqaudio --help": ["-m", "vqaudio.cli.main", "--help"],
    "vqaudio tokenize --help": ["-m", "vqaudio.cli.main", "tokenize", "--help"],
    "vqaudio info (loads the model)": ["-m", "vqaudio.cli.main", "info"],
}


def run_once(arguments: list[str]) -> tuple[int, set[str]]:
    """Run ``python ARGUMENTS`` once; returns (peak RSS of the child in MB, heavy modules it imported)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONSTARTUP": ""}
    process = subprocess.run(
        [
            sys.executable,
            "-c",
            f"{REPORT_MODULES}\nimport runpy, sys; sys.argv = {arguments!r}; " + _runner(arguments),
        ],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
    )
    if process.returncode not in (0,):
        raise SystemExit(f"{arguments}: exit {process.returncode}\n{process.stderr[-2000:]}")
    after = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    modules = set(process.stderr.rpartition("MODULES ")[2].split())
    return max(after, before) // 1024, {name for name in HEAVY if name in modules}


def _runner(arguments: list[str]) -> str:
    if arguments[0] == "-c":
        return f"exec({arguments[1]!r})"
    return (
        f"sys.argv = ['vqaudio', *{arguments[2:]!r}]; runpy.run_module({arguments[1]!r}, run_name='__main__')"
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--json", type=Path, help="Also write the results here.")
    args = parser.parse_args()
    results = {}
    baseline = None
    for name, arguments in COMMANDS.items():
        seconds = median_seconds(lambda arguments=arguments: run_once(arguments), args.repeats)
        peak_mb, heavy = run_once(arguments)
        baseline = baseline or seconds
        results[name] = {
            "seconds": seconds,
            "ratio_to_python": seconds / baseline,
            "peak_mb": peak_mb,
            "heavy": sorted(heavy),
        }
        print(
            f"{name:32s} {seconds:6.2f} s  {seconds / baseline:5.1f}x python  peak {peak_mb:4d} MB  imports {', '.join(sorted(heavy)) or '-'}"
        )
    if args.json:
        args.json.write_text(
            json.dumps({"time": time.strftime("%Y-%m-%d %H:%M"), "results": results}, indent=2)
        )


if __name__ == "__main__":
    main()
