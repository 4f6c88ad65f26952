"""Helpers for the export tests: tiny real checkpoints (untrained, for the fast CLI checks), an
ensemble run in-process by following its `config.pbtxt` step by step, and the PyTorch reference."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch

from ttsrec.data.feature_map import FeatureMap, Field
from ttsrec.models import build_model
from ttsrec.models.checkpoint import load_member, save_member
from ttsrec.repository import naming
from ttsrec.repository.config import read_config
from ttsrec.repository.graphs import onnx_file


def tiny_feature_map(dataset_id: str = "tiny", fields: int = 4) -> FeatureMap:
    return FeatureMap(dataset_id, [Field(f"c{i}", "categorical", [str(v) for v in range(5 + i)])
                                   for i in range(fields)])


def tiny_run(folder: Path, backbones: tuple[str, ...] = ("fnn", "dcnv2"), *, dataset_id: str = "tiny",
             with_feature_map: bool = True) -> list[Path]:
    """Untrained small members + feature_map.json in `folder`, as `tts-train` lays out a run."""
    fmap = tiny_feature_map(dataset_id)
    folder.mkdir(parents=True, exist_ok=True)
    if with_feature_map:
        fmap.save(folder / "feature_map.json")
    paths = []
    for index, backbone in enumerate(backbones):
        torch.manual_seed(index)
        model = build_model(backbone, fmap, embed_dim=4, mlp_dims=[8])
        path = folder / f"member_{index:02d}_{backbone}_s{index}.pt"
        paths.append(save_member(path, model, backbone=backbone, hparams=model.hparams, seed=index,
                                 vocab_sizes=fmap.vocab_sizes, feature_map_hash=fmap.hash))
    return paths


def torch_logits(checkpoints: list[Path], ids: np.ndarray) -> dict[str, np.ndarray]:
    """Each checkpoint's logits [B, 1], keyed by checkpoint path."""
    out = {}
    for path in checkpoints:
        member = load_member(path)
        with torch.no_grad():
            out[str(Path(path).resolve())] = member.model(torch.from_numpy(ids)).numpy()
    return out


class EnsembleRunner:
    """Runs `ensemble_*` configs of a repository in-process: every step's `model.onnx` in onnxruntime,
    tensors routed exactly as the config's `input_map` / `output_map` say."""

    def __init__(self, repo: Path):
        self.repo = Path(repo)
        self._sessions: dict[str, ort.InferenceSession] = {}

    def session(self, model: str) -> ort.InferenceSession:
        if model not in self._sessions:
            path = onnx_file(self.repo / model / naming.VERSION)
            self._sessions[model] = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        return self._sessions[model]

    def model(self, model: str, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        session = self.session(model)
        names = [o.name for o in session.get_outputs()]
        return dict(zip(names, session.run(names, feeds), strict=True))

    def ensemble(self, name: str, feat_ids: np.ndarray) -> dict[str, np.ndarray]:
        cfg = read_config(self.repo / name)
        assert cfg.platform == "ensemble"
        scope = {cfg.input[0].name: feat_ids}
        pending = list(cfg.ensemble_scheduling.step)
        while pending:  # run any step whose inputs are ready (members first, then the merge)
            step = next(s for s in pending if all(v in scope for v in s.input_map.values()))
            pending.remove(step)
            result = self.model(step.model_name, {k: scope[v] for k, v in step.input_map.items()})
            for key, tensor in step.output_map.items():
                scope[tensor] = result[key]
        return {o.name: scope[o.name] for o in cfg.output}
