"""Generations of one repository: several exports side by side as Triton versions, one of them live.

Triton keeps one `config.pbtxt` per model, not per version (server issue #8056), so an ensemble cannot
hold two versions with different steps. A generation is therefore recorded in `tts_manifest.json`:

    "generations": [{"generation": N, "versions": {model: version}, "ensembles": {name: config text},
                     "manifest": {...the export's own manifest...}, "created": ...}, ...],
    "live": N

Non-ensemble models (members, merges, fused graphs, cascades, raw models) hold one version folder per
generation that changed them (an unchanged member keeps its folder and version); each config's
`version_policy` lists the versions the server should hold. Ensembles keep one config on disk, pinned
to the live generation's member versions, with version folder `N/` so every answer's `model_version`
names the generation that made it. During a rollout a config-only copy `<ensemble>.g<N>` of each
generation's ensembles is loaded through Triton's load API (never written to disk), so a client can pin
a generation while the unsuffixed name switches.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from google.protobuf import json_format, text_format
from tritonclient.grpc import model_config_pb2 as pb

from ttsrec.errors import UserError
from ttsrec.repository import naming
from ttsrec.repository.config import set_parameters

GENERATIONS = "generations"
LIVE = "live"
ROLLOUT = "rollout"
SEPARATOR = ".g"
"""`ensemble_m8.g2`: generation 2's ensemble_m8 (Triton accepts '.' in model names; the bench's and
the client's name patterns are anchored, so they never take it for `ensemble_m8`)."""


def generation_model(name: str, generation: int) -> str:
    """The per-generation name of an ensemble, loaded during rollouts."""
    return f"{name}{SEPARATOR}{generation}"


def split_generation_model(name: str) -> tuple[str, int | None]:
    """`ensemble_m8.g2` -> ("ensemble_m8", 2); a plain name -> (name, None)."""
    base, sep, tail = name.rpartition(SEPARATOR)
    if sep and base and tail.isdigit():
        return base, int(tail)
    return name, None


def has_generations(manifest: dict[str, Any]) -> bool:
    return bool(manifest.get(GENERATIONS))


def generation_record(manifest: dict[str, Any], generation: int) -> dict[str, Any]:
    """One generation's record; a `UserError` naming the generations there are."""
    for record in manifest.get(GENERATIONS, []):
        if record["generation"] == generation:
            return record
    known = ", ".join(str(r["generation"]) for r in manifest.get(GENERATIONS, [])) or "none"
    raise UserError(f"the repository has no generation {generation} (generations: {known})")


def live_generation(manifest: dict[str, Any]) -> int | None:
    return manifest.get(LIVE) if has_generations(manifest) else None


def models_of(record: dict[str, Any]) -> list[str]:
    """Every model of a generation: its non-ensemble models, then its ensembles."""
    return sorted(record["versions"]) + sorted(record["ensembles"])


def ensemble_config(record: dict[str, Any], name: str) -> pb.ModelConfig:
    """Generation `record`'s config of ensemble `name` (steps pinned to its versions)."""
    return text_format.Parse(record["ensembles"][name], pb.ModelConfig())


def pinned_ensemble(cfg: pb.ModelConfig, versions: dict[str, int], generation: int,
                    params: dict[str, object] | None = None) -> pb.ModelConfig:
    """`cfg` with every step pinned to `versions` and only version `generation` served."""
    out = pb.ModelConfig()
    out.CopyFrom(cfg)
    for step in out.ensemble_scheduling.step:
        if step.model_name not in versions:
            raise UserError(f"ensemble {cfg.name} calls {step.model_name}, which generation {generation} "
                            "does not hold")
        step.model_version = versions[step.model_name]
    set_policy(out, [generation])
    return set_parameters(out, {"generation": generation, **(params or {})})


def set_policy(cfg: pb.ModelConfig, versions: list[int]) -> pb.ModelConfig:
    """`version_policy { specific { versions: [...] } }`: exactly these versions are served."""
    cfg.version_policy.specific.versions[:] = sorted(set(versions))
    return cfg


def config_text(cfg: pb.ModelConfig) -> str:
    return text_format.MessageToString(cfg)


def config_json(cfg: pb.ModelConfig) -> str:
    """What Triton's load API takes as a config override."""
    return json_format.MessageToJson(cfg, preserving_proto_field_name=True)


def write_desired(repo: Path, name: str, cfg: pb.ModelConfig) -> bool:
    """Write `cfg` as `name`'s config unless it is already that; True when the file changed."""
    path = Path(repo) / name / "config.pbtxt"
    text = config_text(cfg)
    if path.is_file() and path.read_text() == text:
        return False
    tmp = path.with_name(".config.pbtxt.tmp")
    tmp.write_text(text)
    tmp.replace(path)
    return True


def live_models(repo: Path, manifest: dict[str, Any]) -> list[str] | None:
    """The models a server should load for the live generation (None: not a generation repository)."""
    live = live_generation(manifest)
    if live is None:
        return None
    return [m for m in models_of(generation_record(manifest, live)) if (Path(repo) / m).is_dir()]


def server_args(repo: Path) -> list[str]:
    """tritonserver options for `repo`: explicit model control loading the live generation's models,
    so a rollout can load and switch models; nothing for a repository without generations."""
    import json

    path = Path(repo) / naming.MANIFEST_FILE
    try:
        manifest = json.loads(path.read_text())
    except (OSError, ValueError):
        return []
    models = live_models(repo, manifest) if isinstance(manifest, dict) else None
    if not models:
        return []
    return ["--model-control-mode=explicit", *(f"--load-model={m}" for m in models)]


def version_dirs(repo: Path, name: str) -> list[int]:
    """Version folders of a model on disk."""
    folder = Path(repo) / name
    return sorted(int(p.name) for p in folder.iterdir() if p.is_dir() and p.name.isdigit()) \
        if folder.is_dir() else []


def write_ensemble(repo: Path, cfg: pb.ModelConfig, generation: int) -> bool:
    """An ensemble's config on disk plus its (empty) version folder `generation/`; True when the config
    changed."""
    (Path(repo) / cfg.name / str(generation)).mkdir(parents=True, exist_ok=True)
    return write_desired(repo, cfg.name, cfg)
