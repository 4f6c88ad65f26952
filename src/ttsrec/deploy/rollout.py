"""Rollout and rollback: move running servers from the live generation L to generation T.

Against Triton's model-control API (the server runs with `--model-control-mode=explicit`, which
`tts-serve` chooses for a repository with generations). Every step states what the server should hold
and asks Triton for it, so a step that runs twice changes nothing, and a rollout killed at any step
is finished by running the same command again:

1. check   : T's models that are not loaded yet fit in free memory (manifest sizes), else exit 2;
2. stage   : every non-ensemble model of T is loaded beside L's (its config lists L's and T's versions;
             Triton loads the new versions and keeps serving the old ones), and the config-only
             `<ensemble>.gL` / `.gT` copies are loaded (clients and ShardedClient pin them);
3. switch  : each unsuffixed ensemble's config is rewritten to call T's versions, with version folder
             T, and reloaded: Triton swaps it between requests, and requests in flight finish on L;
4. retire  : everything not in T is unloaded (old versions, L-only models, `<ensemble>.gL`); Triton
             lets in-flight requests finish before an unload completes;
5. record  : the manifest says T is live (written atomically, last).

Shards (a sharded export, one server each) go through every step together: all shards stage before
any switches, so during the switch every shard holds both generations (`ShardedClient` re-asks a
lagging shard for the generation the others answered with), and none retires before all switched.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ttsrec.deploy import state
from ttsrec.errors import RuntimeFailure, UserError
from ttsrec.repository import generations as gens
from ttsrec.repository import naming
from ttsrec.repository.config import read_config
from ttsrec.utils.atomic import output_lock
from ttsrec.utils.report import SILENT, Reporter

STEPS = ("check", "stage", "switch", "retire", "record")
INSTANCE_BYTES = 80 << 20
"""What one loaded python-backend model instance costs besides its graph (stub process, interpreter,
onnxruntime): measured 71-117 MB RSS per stub here, median 76 MB (RSS counts shared libraries too)."""


@dataclass
class Target:
    """One repository (or shard) and the server that serves it."""

    root: Path
    url: str
    manifest: dict[str, Any] = field(default_factory=dict)
    admin_header: tuple[str, str] | None = None

    def client(self) -> Any:
        import tritonclient.http as http

        return http.InferenceServerClient(self.url, connection_timeout=60.0, network_timeout=300.0)

    @property
    def headers(self) -> dict[str, str] | None:
        return dict([self.admin_header]) if self.admin_header else None


@dataclass
class Plan:
    """What a rollout will do, for `--dry-run` and for the run itself."""

    live: int
    to: int
    lines: list[str]
    need_bytes: int
    free_bytes: int | None


def _call(target: Target, what: str, fn: Callable[[Any], Any]) -> Any:
    """One model-control call; Triton's refusal becomes a one-line runtime failure naming the server."""
    client = target.client()
    try:
        return fn(client)
    except Exception as err:  # tritonclient raises its own exception types for every failure
        message = str(err).splitlines()[0][:300] if str(err) else type(err).__name__
        hint = " (is the server running with --model-control-mode=explicit, as tts-serve does for a " \
               "repository with generations?)" if "explicit" in message or "polling" in message else ""
        raise RuntimeFailure(f"{target.url}: {what} failed: {message}{hint}") from None
    finally:
        client.close()


def loaded(target: Target) -> dict[str, set[int]]:
    """Model -> versions the server holds READY."""
    index = _call(target, "repository index", lambda c: c.get_model_repository_index(headers=target.headers))
    held: dict[str, set[int]] = {}
    for entry in index:
        if entry.get("state") == "READY" and str(entry.get("version", "")).isdigit():
            held.setdefault(entry["name"], set()).add(int(entry["version"]))
    return held


def plan(targets: list[Target], to: int, free_bytes: int | None) -> Plan:
    """The steps for every target, and the memory the new versions need."""
    lines, need = [], 0
    live = gens.live_generation(targets[0].manifest) or 1
    for target in targets:
        record = gens.generation_record(target.manifest, to)
        held = loaded(target)
        new = [(n, v) for n, v in sorted(record["versions"].items()) if v not in held.get(n, set())]
        need += sum(_version_bytes(target.root, n, v) for n, v in new)
        lines.append(f"{target.url}: stage {len(new)} new model versions of generation {to} beside "
                     f"generation {live}, load {len(record['ensembles'])} {gens.SEPARATOR}{to} ensembles")
        lines.append(f"{target.url}: switch {', '.join(sorted(record['ensembles'])) or 'no ensembles'} to "
                     f"generation {to}")
        lines.append(f"{target.url}: retire what generation {to} does not use; record generation {to} live")
    return Plan(live, to, lines, need, free_bytes)


def _version_bytes(root: Path, name: str, version: int) -> int:
    """Memory a loaded model version takes: its files, plus a stub per instance (python flavour)."""
    folder = root / name / str(version)
    files = sum(f.stat().st_size for f in folder.rglob("*") if f.is_file()) if folder.is_dir() else 0
    cfg = read_config(root / name)
    instances = sum(g.count or 1 for g in cfg.instance_group) or 1
    return 2 * files + (instances * INSTANCE_BYTES if cfg.backend == "python" else 0)


def free_memory() -> int:
    """MemAvailable of this machine (bytes)."""
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) * 1024
    raise RuntimeFailure("cannot read MemAvailable from /proc/meminfo")


def check_memory(p: Plan) -> None:
    if p.free_bytes is not None and p.need_bytes > p.free_bytes:
        raise UserError(f"generation {p.to} needs about {p.need_bytes / 1e6:.0f} MB more to load beside "
                        f"generation {p.live}, but only {p.free_bytes / 1e6:.0f} MB are free: free memory "
                        "first, or roll out on a bigger machine")


def stage(target: Target, live: int, to: int) -> None:
    """T's non-ensemble models loaded beside L's; the `.gL` and `.gT` ensembles loaded from memory."""
    manifest = target.manifest
    record, old = gens.generation_record(manifest, to), gens.generation_record(manifest, live)
    held = loaded(target)
    for name, version in sorted(record["versions"].items()):
        versions = [version] + ([old["versions"][name]] if name in old["versions"] else [])
        cfg = gens.set_policy(_config(target.root, record, name), versions)
        if gens.write_desired(target.root, name, cfg) or not set(versions) <= held.get(name, set()):
            _call(target, f"load {name}", lambda c, n=name: c.load_model(n, headers=target.headers))
    for generation in dict.fromkeys((live, to)):
        load_generation_ensembles(target, gens.generation_record(manifest, generation))


def _config(root: Path, record: dict[str, Any], name: str) -> Any:
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2 as pb

    text = record.get("configs", {}).get(name)
    return text_format.Parse(text, pb.ModelConfig()) if text else read_config(root / name)


def load_generation_ensembles(target: Target, record: dict[str, Any]) -> None:
    """`<ensemble>.gN` for each ensemble of generation N: config and an empty version folder sent with the
    load request (Triton's override), nothing written into the repository."""
    n = record["generation"]
    for name in sorted(record["ensembles"]):
        cfg = gens.ensemble_config(record, name)
        cfg.name = gens.generation_model(name, n)
        files = {f"file:{n}/generation": str(n).encode()}
        _call(target, f"load {cfg.name}", lambda c, m=cfg, f=files: c.load_model(
            m.name, headers=target.headers, config=gens.config_json(m), files=f))


def switch(target: Target, to: int) -> None:
    """Each unsuffixed ensemble of T rewritten to call T's versions and reloaded (Triton swaps it)."""
    record = gens.generation_record(target.manifest, to)
    held = loaded(target)
    for name in sorted(record["ensembles"]):
        changed = gens.write_ensemble(target.root, gens.ensemble_config(record, name), to)
        if changed or held.get(name) != {to}:
            _call(target, f"switch {name}", lambda c, n=name: c.load_model(n, headers=target.headers))


def retire(target: Target, to: int) -> None:
    """Unload everything generation T does not use: other generations' ensembles first (they hold the
    old members), then models outside T, then the old versions of T's models."""
    record = gens.generation_record(target.manifest, to)
    keep = set(record["versions"]) | set(record["ensembles"])
    keep |= {gens.generation_model(e, to) for e in record["ensembles"]}
    held = loaded(target)
    doomed = [n for n in held if n not in keep] + [  # not in the repository index: ask for them
        gens.generation_model(e, r["generation"]) for r in target.manifest[gens.GENERATIONS]
        if r["generation"] != to for e in r["ensembles"]]
    doomed.sort(key=lambda n: (gens.split_generation_model(n)[1] is None, n not in _ensembles(target, n)))
    for name in doomed:
        if _call(target, f"readiness of {name}", lambda c, n=name: c.is_model_ready(n)):
            _call(target, f"unload {name}", lambda c, n=name: c.unload_model(n, headers=target.headers))
    for name, version in sorted(record["versions"].items()):
        cfg = gens.set_policy(_config(target.root, record, name), [version])
        changed = gens.write_desired(target.root, name, cfg)
        if changed or held.get(name, set()) != {version}:
            _call(target, f"retire old versions of {name}",
                  lambda c, n=name: c.load_model(n, headers=target.headers))


def _ensembles(target: Target, name: str) -> set[str]:
    """`{name}` when `name` is an ensemble on disk (ensembles are unloaded before what they call)."""
    path = target.root / name / "config.pbtxt"
    return {name} if path.is_file() and read_config(path).platform == "ensemble" else set()


def record(target: Target, to: int) -> None:
    """The manifest says T is live; its top-level description becomes T's (what tools read)."""
    manifest = state.load(target.root)
    body = gens.generation_record(manifest, to)["manifest"]
    keep = {k: manifest[k] for k in (gens.GENERATIONS,) if k in manifest}
    state.save(target.root, {**body, **keep, gens.LIVE: to})
    target.manifest = state.load(target.root)


def mark(target: Target, live: int, to: int, step: str) -> None:
    """The rollout in progress, for `status` (the steps themselves never depend on it)."""
    manifest = state.load(target.root)
    manifest[gens.ROLLOUT] = {"from": live, "to": to, "step": step, "updated": state.now()}
    state.save(target.root, manifest)
    target.manifest = manifest


def rollout(targets: list[Target], to: int, *, free_bytes: int | None = None, dry_run: bool = False,
            reporter: Reporter = SILENT, pause: Callable[[str], None] | None = None) -> Plan:
    """Move every target to generation `to` (see the module docstring); `pause(step)` runs after each step
    (tests kill the process there). Returns the plan. Holds the repository's lock, so an `add` or another
    rollout waits; what an interrupted `add` left is removed first."""
    root = targets[0].root
    repo = root.parent if (root.parent / naming.SHARDS_FILE).is_file() else root
    with output_lock(repo.absolute()):
        return _rollout(targets, to, free_bytes, dry_run, reporter, pause)


def _rollout(targets: list[Target], to: int, free_bytes: int | None, dry_run: bool, reporter: Reporter,
             pause: Callable[[str], None] | None) -> Plan:
    for target in targets:
        target.manifest = state.load(target.root)
        if not gens.has_generations(target.manifest):
            raise UserError(f"{target.root} has one generation only: add one with `tts-deploy add` first")
        gens.generation_record(target.manifest, to)
        if not dry_run:
            state.clean_leftovers(target.root, target.manifest)
    p = plan(targets, to, free_bytes)
    if dry_run:
        return p
    check_memory(p)
    rolling = targets[0].manifest.get(gens.ROLLOUT) or {}
    live = rolling.get("from", p.live) if rolling.get("to") == to else p.live
    started = time.monotonic()

    def step(name: str, fn: Callable[[Target], None]) -> None:
        t0 = time.monotonic()
        for target in targets:
            fn(target)
        reporter.note(f"{name:<7} {time.monotonic() - t0:6.2f} s  (total {time.monotonic() - started:.2f} s)")
        if pause is not None:
            pause(name)

    reporter.note(f"check   generation {to} needs ~{p.need_bytes / 1e6:.0f} MB"
                  + ("" if p.free_bytes is None else f", {p.free_bytes / 1e6:.0f} MB free"))
    if pause is not None:
        pause("check")
    for target in targets:
        mark(target, live, to, "stage")
    step("stage", lambda t: stage(t, live, to))
    step("switch", lambda t: switch(t, to))
    step("retire", lambda t: retire(t, to))
    step("record", lambda t: record(t, to))
    return p


def status_rows(target: Target | None, manifest: dict[str, Any]) -> list[dict[str, Any]]:
    """The generations with what a running server holds of each (when a server is given)."""
    rows = state.describe(manifest)
    if target is None:
        return rows
    held = loaded(target)
    for row in rows:
        record = gens.generation_record(manifest, row["generation"])
        wanted = record["versions"].items()
        have = sum(1 for n, v in wanted if v in held.get(n, set()))
        row["loaded"] = f"{have}/{len(record['versions'])}"
    return rows


def dumps(rows: list[dict[str, Any]]) -> str:
    return json.dumps(rows, indent=1)
