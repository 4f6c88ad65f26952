"""Names of models and tensors in an exported repository: one place, so the writer, the tests,
the client and the bench agree on them."""

from __future__ import annotations

FEAT_IDS = "feat_ids"
LOGIT = "logit"
PROB = "prob"
LOGIT_SUM = "logit_sum"
MEMBER_COUNT = "member_count"
MEMBERS_USED = "members_used"
"""A cascade's third output: how many members the row's merged logit averages (FP32, an integer)."""

SHARD_ENSEMBLE = "shard_sum"
FUSED_SUM = "fused_sum"
FEATURE_MAP_FILE = "feature_map.json"
MANIFEST_FILE = "tts_manifest.json"
SHARDS_FILE = "shards.json"
VERSION = "1"


MEMBER_PREFIX = "member_"


def member_name(index: int, backbone: str) -> str:
    return f"{MEMBER_PREFIX}{index:02d}_{backbone}"


def is_member(model_name: str) -> bool:
    """Whether a model (or ensemble step, possibly `shard/name`) is a member rather than a merge."""
    return model_name.rsplit("/", 1)[-1].startswith(MEMBER_PREFIX)


def merge_name(m: int, merge: str = "mean") -> str:
    """The merge step of `ensemble_mM`: `merge_mean_mM`, or `merge_weighted_mM` / `merge_selection_mM`."""
    return f"merge_{merge}_m{m}"


def merge_sum_name(m: int) -> str:
    return f"merge_sum_m{m}"


def ensemble_name(m: int) -> str:
    return f"ensemble_m{m}"


def fused_name(m: int) -> str:
    return f"fused_m{m}"


def cascade_name(m: int) -> str:
    """`cascade_mM`: M members in stages, each stage on the rows the previous ones did not settle."""
    return f"cascade_m{m}"


RAW_PREFIX = "raw_"
RAW_ENCODE = "raw_encode"
"""The encode step of every `raw_ensemble_mM`: raw field inputs -> `feat_ids` (tts-export --raw-inputs)."""


def raw_ensemble_name(m: int) -> str:
    """`ensemble_mM` with raw record fields in: raw_encode -> the M members -> the merge."""
    return f"{RAW_PREFIX}ensemble_m{m}"


def raw_fused_name(m: int) -> str:
    """`fused_mM` with the encode graph in front, one ONNX graph."""
    return f"{RAW_PREFIX}fused_m{m}"


def shard_dir(index: int) -> str:
    return f"shard_{index:02d}"


def merge_input(k: int) -> str:
    """Input `k` of a merge graph (`logit_0`, `logit_1`, ...)."""
    return f"logit_{k}"


def scope_tensor(k: int) -> str:
    """Ensemble-scope name of step `k`'s logit: unique per member, as Triton requires."""
    return f"logit_{k:02d}"
