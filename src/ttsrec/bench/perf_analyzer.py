"""`--engine perf_analyzer`: run NVIDIA's C++ load generator when it is installed, read its CSV into Rows.

perf_analyzer (PyPI `perf-analyzer`) needs glibc 2.38; scripts/install_perf_analyzer.sh (`make
perf-analyzer`) installs it into a cache folder, through Debian 13's own loader where the system glibc is
older. It is looked up in $TTSREC_PERF_ANALYZER, that cache, then PATH. It gets the same valid ids as the
native engine through `--input-data` (a JSON file, one batch-1 row per entry, sent round-robin).
"""

from __future__ import annotations

import csv
import io
import json
import os
import resource
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

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
) -> Row:
    """One perf_analyzer run for one concurrency; its CPU use comes from the child's rusage."""
    binary = find_perf_analyzer()
    with tempfile.TemporaryDirectory(prefix="tts-pa-") as tmp:
        data_file, csv_file = Path(tmp) / "input.json", Path(tmp) / "out.csv"
        data_file.write_text(json.dumps(input_data(ids)))
        cmd = command(binary, model, url, protocol, batch, concurrency, settings, data_file, csv_file)
        before, t0 = resource.getrusage(resource.RUSAGE_CHILDREN), time.perf_counter()
        done = subprocess.run(cmd, capture_output=True, text=True)
        after, seconds = resource.getrusage(resource.RUSAGE_CHILDREN), time.perf_counter() - t0
        if done.returncode != 0 or not csv_file.exists():
            lines = [ln for ln in (done.stdout + done.stderr).splitlines() if ln.strip()]
            raise RuntimeFailure(
                f"perf_analyzer failed on {model} (batch {batch}, concurrency {concurrency}): "
                f"{lines[-1] if lines else f'exit {done.returncode}'}"
            )
        cpu = 100.0 * ((after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)) / seconds
        rows = parse_csv(
            csv_file.read_text(), mode=mode, m=m, batch=batch, protocol=protocol, model=model, client_cpu=cpu
        )
    if not rows:
        raise RuntimeFailure(f"perf_analyzer wrote no rows for {model}")
    return rows[0]
