"""Run some tests N times while busy-loop processes compete for the CPUs; print pass/fail counts per test.

Issue 18: a suite that stays green on a busy machine. A test that is robust by design passes here as it
does on a quiet machine (it may take longer); one that leans on timing shows up as a failure count.

```bash
.venv/bin/python benchmarks/load_check.py tests/test_train_ray.py::test_ray_ctrl_c_cancels_remaining_members
.venv/bin/python benchmarks/load_check.py --runs 3 --load 2 tests/test_bench_agreement.py -- -x
```

Each run is one `python -m pytest -m "slow or not slow"` over the given tests (slow ones included), with
`--load` processes spinning `while True: pass` at normal priority for its whole duration (default: one
per core). Outcomes come from pytest's JUnit XML. Exit code 0 when every test passed every run.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from collections import Counter, defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUTCOMES = ("passed", "failed", "error", "skipped")


def busy_loops(count: int) -> list[subprocess.Popen[bytes]]:
    return [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(count)]


def stop(procs: list[subprocess.Popen[bytes]]) -> None:
    for proc in procs:  # only the processes this script started, by their own handles
        proc.terminate()
    for proc in procs:
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def outcomes(junit: Path) -> dict[str, str]:
    """test id -> passed | failed | error | skipped, from pytest's JUnit XML."""
    if not junit.exists():
        return {}
    result = {}
    for case in ET.parse(junit).getroot().iter("testcase"):
        name = f"{case.get('classname', '')}::{case.get('name', '')}"
        tags = {child.tag for child in case}
        result[name] = next((o for o in ("failure", "error", "skipped") if o in tags), "passed")
        result[name] = {"failure": "failed"}.get(result[name], result[name])
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("tests", nargs="+", help="pytest node ids or files (after them, -- and pytest flags)")
    parser.add_argument("-n", "--runs", type=int, default=2, help="times to run the tests (default 2)")
    parser.add_argument("-l", "--load", type=int, default=os.cpu_count() or 2,
                        help="busy-loop processes during each run (default: one per core)")
    parser.add_argument("--python", default=str(ROOT / ".venv" / "bin" / "python"),
                        help="the interpreter that runs pytest (default: the checkout's .venv)")
    argv = sys.argv[1:]
    cut = argv.index("--") if "--" in argv else len(argv)
    args, extra = parser.parse_args(argv[:cut]), argv[cut + 1 :]
    counts: dict[str, Counter[str]] = defaultdict(Counter)
    codes = []
    with tempfile.TemporaryDirectory(prefix="tts-load-") as tmp:
        for run in range(1, args.runs + 1):
            junit = Path(tmp) / f"run{run}.xml"
            cmd = [args.python, "-m", "pytest", "-q", "-m", "slow or not slow", "-p", "no:cacheprovider",
                   f"--junitxml={junit}", *extra, *args.tests]
            load = busy_loops(args.load)
            started = time.perf_counter()
            try:
                code = subprocess.run(cmd, cwd=ROOT).returncode
            finally:
                load_avg = os.getloadavg()[0]
                stop(load)
            seen = outcomes(junit)
            for name, outcome in seen.items():
                counts[name][outcome] += 1
            codes.append(code)
            print(f"run {run}/{args.runs}: pytest exit {code}, {time.perf_counter() - started:.0f} s, "
                  f"{args.load} busy loops, load average {load_avg:.1f}: "
                  + ", ".join(f"{n} {o}" for o, n in sorted(Counter(seen.values()).items())), flush=True)
    width = max((len(n) for n in counts), default=4)
    print(f"\n{'test':<{width}}  " + "  ".join(f"{o:>7}" for o in OUTCOMES))
    for name in sorted(counts):
        print(f"{name:<{width}}  " + "  ".join(f"{counts[name][o]:>7}" for o in OUTCOMES))
    all_passed = bool(counts) and all(set(c) == {"passed"} for c in counts.values()) and not any(codes)
    print(f"\n{'every test passed every run' if all_passed else 'NOT every test passed every run'} "
          f"({args.runs} runs under {args.load} busy loops)")
    return 0 if all_passed else 1


if __name__ == "__main__":
    sys.exit(main())
