"""Helpers for the deploy tests: tiny members whose generations differ visibly, each generation's
answers computed in-process from its own version folders, and bounded load loops that record which
generation answered every request."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import torch
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as pb

from export_fixtures import tiny_feature_map
from ttsrec.models import build_model
from ttsrec.models.checkpoint import save_member
from ttsrec.repository import generations as gens
from ttsrec.repository import naming
from ttsrec.repository.graphs import onnx_file

FMAP = tiny_feature_map()
BATCHES = (1, 7, 64)


def member(folder: Path, index: int, backbone: str, seed: int) -> Path:
    """One untrained tiny member; its seed decides its weights (a new seed: a visibly different member)."""
    folder.mkdir(parents=True, exist_ok=True)
    FMAP.save(folder / naming.FEATURE_MAP_FILE)
    torch.manual_seed(seed)
    model = build_model(backbone, FMAP, embed_dim=4, mlp_dims=[8])
    return save_member(folder / f"member_{index:02d}_{backbone}_s{seed}.pt", model, backbone=backbone,
                       hparams=model.hparams, seed=seed, vocab_sizes=FMAP.vocab_sizes,
                       feature_map_hash=FMAP.hash)


def two_runs(root: Path, changed: tuple[int, ...] = (1, 3)) -> tuple[list[Path], list[Path]]:
    """Generation 1: four members; generation 2: the `changed` ones retrained (seed + 10), the others the
    same files, so they keep their version."""
    spec = [("fnn", 0), ("dcnv2", 1), ("fnn", 2), ("dcnv2", 3)]
    first = [member(root / "run1", i, b, s) for i, (b, s) in enumerate(spec)]
    second = [member(root / "run2", i, b, s + 10) if i in changed else first[i]
              for i, (b, s) in enumerate(spec)]
    return first, second


def inputs() -> dict[int, np.ndarray]:
    rng = np.random.default_rng(7)
    return {b: rng.integers(-2, 12, size=(b, FMAP.num_fields)).astype(np.int64) for b in BATCHES}


class Reference:
    """What generation N of a model answers, computed in-process from N's version folders and configs."""

    def __init__(self, repo: Path, manifest: dict[str, Any]):
        self.repo = Path(repo)
        self.manifest = manifest
        self._sessions: dict[tuple[str, int], ort.InferenceSession] = {}

    def _run(self, model: str, version: int, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        key = (model, version)
        if key not in self._sessions:
            options = ort.SessionOptions()
            options.intra_op_num_threads = 1
            path = onnx_file(self.repo / model / str(version))
            self._sessions[key] = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        session = self._sessions[key]
        names = [o.name for o in session.get_outputs()]
        return dict(zip(names, session.run(names, feeds), strict=True))

    def logit(self, model: str, generation: int, ids: np.ndarray) -> np.ndarray:
        record = gens.generation_record(self.manifest, generation)
        if model in record["ensembles"]:
            cfg = text_format.Parse(record["ensembles"][model], pb.ModelConfig())
            scope = {naming.FEAT_IDS: ids}
            pending = list(cfg.ensemble_scheduling.step)
            while pending:
                step = next(s for s in pending if all(v in scope for v in s.input_map.values()))
                pending.remove(step)
                out = self._run(step.model_name, step.model_version,
                                {k: scope[v] for k, v in step.input_map.items()})
                scope.update({tensor: out[key] for key, tensor in step.output_map.items()})
            return scope[naming.LOGIT].reshape(-1)
        out = self._run(model, record["versions"][model], {naming.FEAT_IDS: ids})
        return out[naming.LOGIT].reshape(-1)

    def member_mean(self, generation: int, ids: np.ndarray) -> np.ndarray:
        """Mean of the generation's members' logits (what a sharded deployment answers)."""
        record = gens.generation_record(self.manifest, generation)
        logits = [self._run(m["name"], m["version"], {naming.FEAT_IDS: ids})[naming.LOGIT].reshape(-1)
                  for m in record["members"]]
        return np.mean(np.stack(logits).astype(np.float64), axis=0)


@dataclass
class Load:
    """Callers in a closed loop, bounded in count and time; every answer kept with its generation."""

    calls: list[Any]
    """(name, fn(ids) -> (logit, generation)) per caller."""
    max_requests: int = 4000
    max_seconds: float = 300.0
    answers: list[tuple[str, int, int | None, np.ndarray]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._loop, args=call, daemon=True) for call in self.calls]
        self.ids = inputs()

    def _loop(self, name: str, fn: Any) -> None:
        deadline = time.monotonic() + self.max_seconds
        for k in range(self.max_requests):
            if self._stop.is_set() or time.monotonic() > deadline:
                return
            batch = BATCHES[k % len(BATCHES)]
            try:
                logit, generation = fn(self.ids[batch])
                self.answers.append((name, batch, generation, np.asarray(logit)))
            except Exception as err:  # every failure is a finding: counted and reported
                self.errors.append(f"{name}: {type(err).__name__}: {err}")

    def __enter__(self) -> Load:
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(60)

    def seen(self) -> int:
        return len(self.answers)

    def wait_for(self, more: int, timeout_s: float = 60.0) -> None:
        """Until `more` answers came in after now (so a step is passed under load), or the time is up."""
        goal, deadline = self.seen() + more, time.monotonic() + timeout_s
        while self.seen() < goal and time.monotonic() < deadline and any(t.is_alive() for t in self._threads):
            time.sleep(0.02)


def check_answers(load: Load, expected: Any) -> dict[tuple[str, int | None], int]:
    """Every answer equals, bit for bit, its named generation's in-process answer and no other
    generation's; returns answers per (caller, generation)."""
    counts: dict[tuple[str, int | None], int] = {}
    for name, batch, generation, logit in load.answers:
        assert generation is not None, f"{name}: the answer does not name its generation"
        want = expected(name, generation, batch)
        assert np.array_equal(logit, want), (
            f"{name} batch {batch}: answer named generation {generation} but differs from it by "
            f"{np.abs(logit - want).max():.3g}")
        counts[(name, generation)] = counts.get((name, generation), 0) + 1
    return counts
