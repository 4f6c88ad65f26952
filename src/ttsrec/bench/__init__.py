"""`tts-bench`: throughput and latency per scaling factor M, measured like perf_analyzer."""

from ttsrec.bench.config import SweepConfig
from ttsrec.bench.load import AsyncLoad, ThreadLoad
from ttsrec.bench.measure import Latency, Measurement, MeasureSettings, measure
from ttsrec.bench.plan import Point
from ttsrec.bench.result import SweepResult
from ttsrec.bench.row import Row
from ttsrec.bench.sweep import Sweep

__all__ = [
    "AsyncLoad",
    "Latency",
    "MeasureSettings",
    "Measurement",
    "Point",
    "Row",
    "Sweep",
    "SweepConfig",
    "SweepResult",
    "ThreadLoad",
    "measure",
]
