"""What `tts-export` reads: member checkpoints (files or run folders) and the feature map, plus
the prepared data when it can be found (real rows for the parity gate, labels for the fp16 AUC check)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ttsrec.data.feature_map import FeatureMap
from ttsrec.data.prepared import PreparedData
from ttsrec.ensemble.runs import expand_checkpoints, run_data_dir
from ttsrec.errors import UserError
from ttsrec.models.checkpoint import LoadedMember, load_members
from ttsrec.repository.naming import FEATURE_MAP_FILE


@dataclass
class Sources:
    members: list[LoadedMember]
    feature_map: FeatureMap
    data_dir: Path | None
    """A prepared data folder (feature_map.json + splits), when known."""


def load_sources(checkpoints: Sequence[Path], data: Path | None = None) -> Sources:
    """Load members and find their feature map: `data` (a prepared folder or a feature_map.json),
    else next to the checkpoints, else the data folder their `run.json` names."""
    files = expand_checkpoints(checkpoints)
    members = load_members(files)
    if data is not None:
        fmap_path, data_dir = _from_given(Path(data))
    else:
        fmap_path, data_dir = _discover(files)
    fmap = FeatureMap.load(fmap_path)
    if fmap.hash != members[0].feature_map_hash:
        raise UserError(f"feature map {fmap_path} ({fmap.hash}) is not the one the members were trained on "
                        f"({members[0].feature_map_hash})")
    if fmap.vocab_sizes != list(members[0].vocab_sizes):
        raise UserError(f"feature map {fmap_path} vocab sizes differ from the members' checkpoints")
    return Sources(members, fmap, data_dir)


def _from_given(path: Path) -> tuple[Path, Path | None]:
    if path.is_dir():
        if not (path / FEATURE_MAP_FILE).is_file():
            raise UserError(f"{path} holds no {FEATURE_MAP_FILE} (give a prepared data folder or the file)")
        return path / FEATURE_MAP_FILE, path if _has_splits(path) else None
    if not path.is_file():
        raise UserError(f"feature map not found: {path}")
    return path, path.parent if _has_splits(path.parent) else None


def _discover(files: Sequence[Path]) -> tuple[Path, Path | None]:
    for folder in dict.fromkeys(f.parent for f in files):
        if (folder / FEATURE_MAP_FILE).is_file():
            return _from_given(folder / FEATURE_MAP_FILE)
        data_dir = run_data_dir(folder)
        if data_dir is not None and (data_dir / FEATURE_MAP_FILE).is_file():
            return _from_given(data_dir)
    raise UserError("cannot find the members' feature_map.json: pass --data with the prepared data folder")


def _has_splits(folder: Path) -> bool:
    """Whether `ttsrec.data.prepared.PreparedData` can read a test split there."""
    try:
        return PreparedData(folder).num_rows("test") > 0
    except (UserError, OSError, ImportError, KeyError, ValueError):
        return False
