"""`--engine perf_analyzer`: run NVIDIA's C++ load generator when it is installed, read its CSV into Rows.

perf_analyzer (PyPI `perf-analyzer`) needs glibc 2.38; scripts/install_perf_analyzer.sh (`make
perf-analyzer`) installs it into a cache folder, through Debian 13's own loader where the system glibc is
older. It is looked up in $TTSREC_PERF_ANALYZER, that cache, then PATH. It gets the same valid ids as the
native engine through `--input-data` (a JSON file, one batch-1 row per entry, sent round-robin).

Where the native engine reports a row that did not settle with `stable=false`, perf_analyzer aborts
("Failed to obtain stable measurement ... Please try to increase the --measurement-interval"). So a
run that cannot stabilise is retried as its message says, with the window doubled (`-p`, 2×, 4×:
`STABILITY_RETRIES`), and the retry is logged (logger `ttsrec.bench.perf_analyzer`, one warning
naming the windows tried). Only when the longest window does not settle either does `run` raise
`Unstable`, a `RuntimeFailure` naming every window it tried. Other failures are not retried.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import os
import resource
import shutil
import subprocess
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from ttsrec.bench.measure import MeasureSettings
from ttsrec.bench.row import PA_COLUMNS, Row
from ttsrec.errors import RuntimeFailure, UserError

BINARY = "perf_analyzer"
INSTALL_SCRIPT = "scripts/install_perf_analyzer.sh"
LATENCY_PARTS = (
    "Client Send",
    "Network+Server Send/Recv",
    "Server Queue",
    "Server Compute Input",
    "Server Compute Infer",
    "Server Compute Output",
    "Client Recv",
)
UNSTABLE_MESSAGE = "Failed to obtain stable measurement"
"""What perf_analyzer prints (and exits non-zero) when `--max-trials` windows did not agree."""
STABILITY_RETRIES = 2
"""Runs after the first when perf_analyzer cannot stabilise, each with twice the previous window."""

log = logging.getLogger(__name__)


class Unstable(RuntimeFailure):
    """perf_analyzer did not stabilise, even with the longest window tried (`windows_ms`)."""

    def __init__(self, message: str, windows_ms: list[int]) -> None:
        super().__init__(message)
        self.windows_ms = windows_ms


def cache_dirs() -> list[Path]:
    """Where the install script puts it: $TTSREC_PERF_ANALYZER_DIR, the checkout's .cache, ~/.cache/ttsrec."""
    override = os.environ.get("TTSREC_PERF_ANALYZER_DIR")
    checkout = Path(__file__).resolve().parents[3]
    defaults = [checkout / ".cache" / "perf_analyzer", Path.home() / ".cache" / "ttsrec" / "perf_analyzer"]
    return [Path(override), *defaults] if override else defaults


def locate() -> str | None:
    """The perf_analyzer to run, or None: $TTSREC_PERF_ANALYZER, then the install cache, then PATH."""
    explicit = os.environ.get("TTSREC_PERF_ANALYZER")
    if explicit:
        return explicit if os.access(explicit, os.X_OK) else None
    for folder in cache_dirs():
        candidate = folder / "bin" / BINARY
        if os.access(candidate, os.X_OK):
            return str(candidate)
    return shutil.which(BINARY)


def find_perf_analyzer() -> str:
    path = locate()
    if path is None:
        raise UserError(
            f"perf_analyzer is not installed (run `make perf-analyzer` or bash {INSTALL_SCRIPT}; "
            "it needs network once); or use the native engine"
        )
    return path


def input_data(ids: np.ndarray, input_name: str = "feat_ids", rows: int = 256) -> dict[str, Any]:
    """perf_analyzer's real-input-data JSON: one entry per batch-1 row of `ids` [N, F]."""
    sample = np.asarray(ids[:rows], dtype=np.int64)
    return {"data": [{input_name: {"content": row.tolist(), "shape": [sample.shape[1]]}} for row in sample]}


def command(
    binary: str,
    model: str,
    url: str,
    protocol: str,
    batch: int,
    concurrency: int,
    settings: MeasureSettings,
    data_file: Path,
    csv_file: Path,
) -> list[str]:
    cmd = [
        binary,
        "-m",
        model,
        "-u",
        url,
        "-i",
        protocol,
        "-b",
        str(batch),
        "--concurrency-range",
        f"{concurrency}:{concurrency}",
        "-p",
        str(settings.window_ms),
        "-s",
        str(settings.stability_pct),
        "--max-trials",
        str(settings.max_trials),
        "--input-data",
        str(data_file),
        "-f",
        str(csv_file),
    ]
    if settings.percentile is not None:
        cmd += ["--percentile", str(settings.percentile)]
    if settings.warmup_requests > 0:
        cmd += ["--warmup-request-count", str(settings.warmup_requests)]
    return cmd


def parse_csv(
    text: str, *, mode: str, m: int, batch: int, protocol: str, model: str, client_cpu: float = 0.0
) -> list[Row]:
    """perf_analyzer's `-f` CSV (µs; rows in any order) -> Rows sorted by concurrency."""
    table = text.strip().split("\n\n")[0]  # --verbose-csv may append more sections
    reader = csv.DictReader(io.StringIO(table))
    missing = [c for c in PA_COLUMNS if c not in (reader.fieldnames or [])]
    if missing:
        raise RuntimeFailure(f"perf_analyzer CSV lacks columns {missing}")
    rows = []
    for record in reader:
        values = {attr: float(record[name]) for name, attr in PA_COLUMNS.items()}
        rows.append(
            Row(
                mode=mode,
                m=m,
                batch=batch,
                concurrency=int(values.pop("concurrency")),
                throughput=values.pop("throughput"),
                avg_us=sum(float(record[c]) for c in LATENCY_PARTS),
                stable=True,
                client_cpu=client_cpu,
                engine="perf_analyzer",
                protocol=protocol,
                model=model,
                **values,
            )
        )
    return sorted(rows, key=lambda r: r.concurrency)


def run(
    model: str,
    url: str,
    protocol: str,
    batch: int,
    concurrency: int,
    settings: MeasureSettings,
    ids: np.ndarray,
    *,
    mode: str,
    m: int,
    retries: int = STABILITY_RETRIES,
) -> Row:
    """One perf_analyzer run for one concurrency; its CPU use comes from the child's rusage.

    A run that cannot stabilise is run again with twice the window, up to `retries` times (module doc).
    """
    binary = find_perf_analyzer()
    where = f"{model} (batch {batch}, concurrency {concurrency})"
    tried: list[int] = []
    with tempfile.TemporaryDirectory(prefix="tts-pa-") as tmp:
        data_file, csv_file = Path(tmp) / "input.json", Path(tmp) / "out.csv"
        data_file.write_text(json.dumps(input_data(ids)))
        for attempt in range(max(retries, 0) + 1):
            window = replace(settings, window_ms=settings.window_ms * 2**attempt)
            tried.append(window.window_ms)
            csv_file.unlink(missing_ok=True)
            outcome = _run_once(binary, model, url, protocol, batch, concurrency, window, data_file, csv_file)
            if outcome.csv is not None:
                break
            if not outcome.unstable:
                raise RuntimeFailure(f"perf_analyzer failed on {where}: {outcome.failure}")
        else:
            raise Unstable(
                f"perf_analyzer failed on {where}: {outcome.failure} (tried {_windows(tried)} windows, "
                f"-s {settings.stability_pct:g} %, --max-trials {settings.max_trials})",
                tried,
            )
    if len(tried) > 1:
        log.warning(
            "perf_analyzer: %s did not stabilise with %s windows; measured with %d ms windows",
            where, _windows(tried[:-1]), tried[-1],
        )
    assert outcome.csv is not None  # the loop either broke on a CSV or raised
    rows = parse_csv(
        outcome.csv, mode=mode, m=m, batch=batch, protocol=protocol, model=model, client_cpu=outcome.cpu
    )
    if not rows:
        raise RuntimeFailure(f"perf_analyzer wrote no rows for {model}")
    return rows[0]


class _Attempt(NamedTuple):
    csv: str | None
    """The `-f` CSV of a run that succeeded, else None."""
    cpu: float = 0.0
    failure: str = ""
    """The last line of output of a run that failed."""
    unstable: bool = False


def _run_once(
    binary: str,
    model: str,
    url: str,
    protocol: str,
    batch: int,
    concurrency: int,
    settings: MeasureSettings,
    data_file: Path,
    csv_file: Path,
) -> _Attempt:
    cmd = command(binary, model, url, protocol, batch, concurrency, settings, data_file, csv_file)
    before, t0 = resource.getrusage(resource.RUSAGE_CHILDREN), time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True)
    after, seconds = resource.getrusage(resource.RUSAGE_CHILDREN), time.perf_counter() - t0
    output = done.stdout + done.stderr
    if done.returncode != 0 or not csv_file.exists():
        lines = [ln.strip() for ln in output.splitlines() if ln.strip()]
        failure = lines[-1] if lines else f"exit {done.returncode}"
        return _Attempt(None, failure=failure, unstable=UNSTABLE_MESSAGE in output)
    cpu = 100.0 * ((after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)) / seconds
    return _Attempt(csv_file.read_text(), cpu=cpu)


def _windows(windows_ms: list[int]) -> str:
    return ", ".join(f"{w} ms" for w in windows_ms)
