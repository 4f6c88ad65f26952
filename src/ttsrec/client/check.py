"""A quick round trip through every served ensemble: what `tts-serve --check` and the demo print.

Rows are drawn inside each field's vocabulary (feature_map.json) when the repository has one, so
the answers look like real predictions; random int64 ids would be valid too (OOV mapping).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ttsrec.client.client import Client
from ttsrec.client.sharded import ShardedClient
from ttsrec.data.feature_map import FeatureMap
from ttsrec.repository import naming

QUERYABLE = ("ensemble_", "fused_")


def sample_ids(repo: Path, num_fields: int, rows: int, seed: int = 0) -> np.ndarray:
    """Ids within each field's vocabulary if `repo/feature_map.json` exists, else small random ids."""
    rng = np.random.default_rng(seed)
    path = Path(repo) / naming.FEATURE_MAP_FILE
    highs = FeatureMap.load(path).column_vocab_sizes if path.is_file() else [1000] * num_fields
    return np.stack([rng.integers(0, h, size=rows) for h in highs], axis=1).astype(np.int64)


def _timed(fn: Any, repeats: int) -> tuple[Any, float]:
    times, out = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - start)
    return out, float(np.median(times) * 1e3)


def check_server(urls: dict[str, str], repo: Path, models: Sequence[str], *, rows: int = 3,
                 repeats: int = 5) -> list[dict[str, Any]]:
    """Query each ensemble/fused model over each protocol ({"grpc": url, "http": url}); one row each."""
    results = []
    for model in sorted(m for m in models if m.startswith(QUERYABLE)):
        for protocol, url in urls.items():
            with Client(url, protocol, model, timeout_s=30) as client:
                ids = sample_ids(repo, client.info.num_fields, rows)
                (prob, _), p50 = _timed(lambda c=client, x=ids: c.predict(x), repeats)
                results.append({"model": model, "protocol": protocol, "url": url, "rows": rows,
                                "members": len(client.info.members) or "-",
                                "p50_ms": round(p50, 2), "prob": [round(float(p), 4) for p in prob]})
    return results


def check_shards(urls: Sequence[str], repo: Path, *, protocol: str = "grpc", rows: int = 3,
                 repeats: int = 5) -> list[dict[str, Any]]:
    """One fan-out through `ShardedClient` over all shards."""
    with ShardedClient(list(urls), protocol) as client:
        num_fields = client.clients[0].info.num_fields
        ids = sample_ids(repo, num_fields, rows)
        result, p50 = _timed(lambda: client.predict(ids), repeats)
    return [{"model": f"{naming.SHARD_ENSEMBLE} x{len(urls)}", "protocol": protocol, "url": ",".join(urls),
             "rows": rows, "members": len(result.members), "p50_ms": round(p50, 2),
             "prob": [round(float(p), 4) for p in result.prob]}]
