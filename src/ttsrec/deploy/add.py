"""`add_generation`: export new members as generation N of an existing repository, nothing live yet.

The checkpoints go through the ordinary `export_repository` into a temp folder first, so every gate of
a fresh export runs (parity, accuracy, merge and cascade fits refitted for the new set) before anything
touches the repository. The result is then grafted in: a member whose checkpoint sha256 and name are
unchanged keeps its existing version folder (the new ensembles call that version); every other model
gets version folder N. New folders are written under temp names and renamed into place, existing
configs gain explicit version policies, and the manifest, written last, is what makes generation N
exist. A failed gate or a kill therefore leaves the live generation exactly as it was; the leftovers of a
kill are removed by the next deploy command (`state.clean_leftovers`).
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from tritonclient.grpc import model_config_pb2 as pb

from ttsrec.deploy import state
from ttsrec.errors import UserError
from ttsrec.export.writer import ExportConfig, export_repository
from ttsrec.repository import generations as gens
from ttsrec.repository import naming
from ttsrec.repository.config import Serving, read_config, set_parameters, write_config
from ttsrec.utils.atomic import output_lock
from ttsrec.utils.report import SILENT, Reporter

_SKIP_KEYS = ("files", gens.GENERATIONS, gens.LIVE, gens.ROLLOUT)


@dataclass(frozen=True)
class Added:
    """What `add_generation` wrote."""

    generation: int
    members_written: int
    members_kept: int
    bytes_added: int


def export_options(manifest: dict[str, Any], shards: int) -> tuple[Serving, ExportConfig]:
    """The serving and export options the repository was made with (a generation must match them)."""
    record = manifest.get("serving", {})
    names = {f.name for f in fields(Serving)}
    serving = Serving(backend=manifest.get("flavour", "python"),
                      **{k: v for k, v in record.items() if k in names and k != "fused_intra_op_threads"})
    policy = record.get("queue_policy", {})
    if policy.get("applied"):
        serving = Serving(**{**{f.name: getattr(serving, f.name) for f in fields(Serving)},
                             "queue_max": policy.get("max_queue_size", 0),
                             "queue_timeout_ms": policy.get("timeout_ms", 0)})
    config = ExportConfig(m_list=None if shards > 1 else manifest.get("m_list"),
                          precision=manifest.get("precision", "fp32"), merge=manifest.get("merge", "mean"),
                          fused=bool(manifest.get("fused")), shards=shards, raw_inputs="raw" in manifest,
                          cascade=bool(manifest.get("cascades")))
    return serving, config


def add_generation(checkpoints: Sequence[Path | str], repo: Path | str, *, data: Path | str | None = None,
                   reporter: Reporter = SILENT) -> Added:
    """Export `checkpoints` (files or run folders) as the next generation of `repo` (one repository or a
    sharded export); nothing is loaded until a rollout. Bad input and failed gates raise `UserError` with
    the repository untouched."""
    repo = Path(repo).absolute()
    roots = state.roots(repo)
    with output_lock(repo):
        for stale in repo.parent.glob(f".{repo.name}.gen-*"):  # a killed add's export (we hold the lock)
            shutil.rmtree(stale, ignore_errors=True)
        manifests = []
        for root in roots:
            manifest = state.load(root)
            if manifest.get(gens.ROLLOUT):
                raise UserError(f"{root} has an unfinished rollout to generation "
                                f"{manifest[gens.ROLLOUT]['to']}: rerun `tts-deploy rollout` first")
            state.clean_leftovers(root, manifest)
            manifests.append(manifest)
        number = 1 + max(max((r["generation"] for r in m.get(gens.GENERATIONS, [])), default=1)
                         for m in manifests)
        serving, config = export_options(manifests[0], len(roots) if len(roots) > 1 else 1)
        with tempfile.TemporaryDirectory(prefix=f".{repo.name}.gen-", dir=repo.parent) as work:
            out = export_repository(checkpoints, Path(work) / "export", serving, config, data=data,
                                    reporter=reporter)
            sources = [out / naming.shard_dir(k) for k in range(len(roots))] if len(roots) > 1 else [out]
            results = [graft(src, root, manifest, number)
                       for src, root, manifest in zip(sources, roots, manifests, strict=True)]
    return Added(number, sum(r[0] for r in results), sum(r[1] for r in results), sum(r[2] for r in results))


def adopt(root: Path, manifest: dict[str, Any]) -> dict[str, Any]:
    """Generation 1 of a repository exported before generations: every model at version 1."""
    configs = {p.name: read_config(p) for p in sorted(root.iterdir()) if (p / "config.pbtxt").is_file()}
    versions = {name: 1 for name, cfg in configs.items() if cfg.platform != "ensemble"}
    ensembles = {name: gens.config_text(gens.pinned_ensemble(cfg, versions, 1))
                 for name, cfg in configs.items() if cfg.platform == "ensemble"}
    texts = {name: gens.config_text(cfg) for name, cfg in configs.items() if cfg.platform != "ensemble"}
    return {"generation": 1, "created": manifest.get("created", ""), "export_id": manifest.get("export_id"),
            "versions": versions, "ensembles": ensembles, "configs": texts, "bytes_added": 0,
            "members": [_member_entry(m, 1, True) for m in manifest.get("members", [])],
            "manifest": {k: v for k, v in manifest.items() if k not in _SKIP_KEYS}}


def _member_entry(record: dict[str, Any], version: int, written: bool) -> dict[str, Any]:
    return {"name": record["name"], "version": version, "checkpoint_sha256": record.get("checkpoint_sha256"),
            "backbone": record.get("backbone"), "seed": record.get("seed"), "written": written}


def graft(src: Path, root: Path, manifest: dict[str, Any], number: int) -> tuple[int, int, int]:
    """Move exported `src` into `root` as generation `number`; returns (members written, members kept,
    bytes added)."""
    new = state.load(src)
    if new.get("feature_map_hash") != manifest.get("feature_map_hash"):
        raise UserError(f"the new members were trained on feature map {new.get('feature_map_hash')}, the "
                        f"repository serves {manifest.get('feature_map_hash')}: clients would encode rows "
                        "with the wrong ids; export them to a new repository instead")
    if not gens.has_generations(manifest):
        manifest = {**manifest, gens.GENERATIONS: [adopt(root, manifest)], gens.LIVE: 1}
    known = {(m["name"], m["checkpoint_sha256"]): m["version"]
             for r in manifest[gens.GENERATIONS] for m in r["members"]}
    configs = {p.name: read_config(p) for p in sorted(src.iterdir()) if (p / "config.pbtxt").is_file()}
    versions: dict[str, int] = {}
    members, moves, added = [], [], 0
    for name, cfg in configs.items():
        if cfg.platform == "ensemble":
            continue
        record = next((m for m in new.get("members", []) if m["name"] == name), None)
        kept = known.get((name, record["checkpoint_sha256"])) if record else None
        versions[name] = kept if kept is not None else number
        if record is not None:
            members.append(_member_entry(record, versions[name], kept is None))
        if kept is None:
            moves.append((src / name / naming.VERSION, root / name / str(number)))
            added += sum(f.stat().st_size for f in (src / name).rglob("*") if f.is_file())
    live_id = manifest.get("export_id")
    ensembles = {name: gens.config_text(gens.pinned_ensemble(cfg, versions, number,
                                                               {"export_id": live_id}))
                 for name, cfg in configs.items() if cfg.platform == "ensemble"}
    _place(root, moves, configs, number, live_id)
    texts = {name: gens.config_text(cfg) for name, cfg in configs.items() if cfg.platform != "ensemble"}
    record = {"generation": number, "created": state.now(), "export_id": new.get("export_id"),
              "versions": versions, "ensembles": ensembles, "configs": texts, "members": members,
              "bytes_added": added,
              "manifest": {k: v for k, v in new.items() if k not in _SKIP_KEYS}}
    _pin_live(root, manifest)
    state.save(root, {**manifest, gens.GENERATIONS: [*manifest[gens.GENERATIONS], record]})
    written = sum(1 for m in members if m["written"])
    return written, len(members) - written, added


def _place(root: Path, moves: list[tuple[Path, Path]], configs: dict[str, pb.ModelConfig], number: int,
           export_id: str | None) -> None:
    """Copy every new version folder under a temp name, then rename each into place; a model new to the
    repository gets its config (serving no version until a rollout lists one) the same way."""
    staged = []
    for source, target in moves:
        tmp = target.with_name(f".{target.name}.tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.parent.mkdir(parents=True, exist_ok=True)
        shutil.copytree(source, tmp)
        staged.append((tmp, target))
    for name, cfg in configs.items():
        folder = root / name
        if cfg.platform == "ensemble":
            (folder / str(number)).mkdir(parents=True, exist_ok=True) if folder.is_dir() else None
            continue
        if "ttsrec.export_id" in cfg.parameters:  # one id per repository: ShardedClient compares it
            set_parameters(cfg, {"export_id": export_id})
        if not (folder / "config.pbtxt").is_file():  # a model new to the repository
            write_config(folder, gens.set_policy(cfg, [number]))
    for tmp, target in staged:
        tmp.rename(target)


def _pin_live(root: Path, manifest: dict[str, Any]) -> None:
    """Give the live generation's configs explicit policies and pinned steps (a no-op once they have
    them), so the new version folders next to them are never loaded by accident."""
    live = gens.generation_record(manifest, manifest[gens.LIVE])
    for name, version in live["versions"].items():
        if (root / name / "config.pbtxt").is_file():
            cfg = read_config(root / name)
            if list(cfg.version_policy.specific.versions) != [version]:
                gens.write_desired(root, name, gens.set_policy(cfg, [version]))
    for name in live["ensembles"]:
        gens.write_ensemble(root, gens.ensemble_config(live, name), live["generation"])
