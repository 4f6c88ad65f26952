"""The README's serving sweep: every mode, M = 1..16, batch 1 and 256, concurrency 1 and 4.

A recipe around `tts-bench` so the published figures can be reproduced with one command:

    .venv/bin/python benchmarks/serving_sweep.py --repository model_repository \
        --shards-repository out/demo/shards --out out/bench

It prints the exact `tts-bench` command it runs; results land in `--out` (CSV, JSON, markdown) and
the plot in `--plot` (default `docs/img/bench_sweep.png`). `--quick` keeps the shape, with fewer
points and shorter windows (for `make demo`).
"""

from __future__ import annotations

import argparse
import shlex
import subprocess
import sys
from pathlib import Path


def command(args: argparse.Namespace) -> list[str]:
    modes = "ensemble,fused,inprocess" + (",sharded" if args.shards_repository else "")
    cmd = [sys.executable, "-m", "ttsrec.cli.bench", "--repository", str(args.repository), "--mode", modes]
    if args.shards_repository:
        cmd += ["--shards-repository", str(args.shards_repository)]
    if args.quick:
        cmd += ["-b", "1,256", "--concurrency-range", "4", "-p", "500", "--max-trials", "5", "-s", "25"]
    else:
        cmd += ["-b", "1,256", "--concurrency-range", "1,4", "-p", "2000", "--max-trials", "8", "-s", "15"]
    if args.m_list:
        cmd += ["--m-list", args.m_list]
    if args.eval_data:
        cmd += ["--eval-data", str(args.eval_data)]
    out = Path(args.out)
    cmd += [
        "-f",
        str(out / "sweep.csv"),
        "--json",
        str(out / "sweep.json"),
        "--markdown",
        str(out / "sweep.md"),
        "--plot",
        str(args.plot),
    ]
    return cmd


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repository", type=Path, default=Path("model_repository"))
    parser.add_argument("--shards-repository", type=Path, default=None)
    parser.add_argument("--m-list", default=None, help="default: every M in the repository")
    parser.add_argument("--eval-data", type=Path, default=None)
    parser.add_argument("--out", type=Path, default=Path("out/bench"))
    parser.add_argument("--plot", type=Path, default=Path("docs/img/bench_sweep.png"))
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    cmd = command(args)
    print("+ " + shlex.join(cmd), flush=True)
    return subprocess.call(cmd)


if __name__ == "__main__":
    sys.exit(main())
