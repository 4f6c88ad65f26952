"""One repository folder: members (exported, gated, configured), merge steps, ensembles, fused
graphs, the job's artefacts (raw-record models, cascades), feature map and manifest.
`writer.export_repository` calls it once, or once per shard."""

from __future__ import annotations

from datetime import datetime, timezone
from importlib import resources
from pathlib import Path

from ttsrec.export import gate
from ttsrec.export.job import Draft, Job, Member, Record
from ttsrec.export.members import write_member
from ttsrec.export.merges import fit_merges, write_ensemble, write_fused
from ttsrec.repository import naming
from ttsrec.repository.graphs import MergeKind
from ttsrec.repository.manifest import FORMAT, file_hashes, library_versions
from ttsrec.utils.atomic import write_json

REPOSITORY_README = resources.files("ttsrec.repository") / "repository_readme.md"
"""Every repository explains its own layout (and the source tree's model_repository/README.md is it)."""


def write_repository(root: Path, members: list[Member], ms: list[int], job: Job, common: Record) -> None:
    """Members, then per M a merge + ensemble (+ fused graph) and the job's artefacts; a shard gets one
    `shard_sum` instead (and no artefacts)."""
    root.mkdir(parents=True, exist_ok=True)
    job.feature_map.save(root / naming.FEATURE_MAP_FILE)
    (root / "README.md").write_text(REPOSITORY_README.read_text())
    for member in members:
        write_member(root, member, job)
    if job.gate is not None:
        gate.check([(m.name, m.gate_figures or {}) for m in members], job.gate, job.precision)
    draft = Draft(root=root, job=job, members=members, ms=ms,
                  fits=fit_merges(root, members, ms, job) if job.merge != "mean" else {})
    shard = common.get("shard")
    _write_merged(draft, shard)
    sections = {a.manifest_key: a.write(draft) for a in job.artefacts} if shard is None else {}
    write_json(root / naming.MANIFEST_FILE, _manifest(draft, common, sections))


def _write_merged(draft: Draft, shard: object) -> None:
    """Per M (a shard: once, over all its members) the merge step, the ensemble and the fused graph."""
    job, members = draft.job, draft.members
    plans: list[tuple[list[Member], MergeKind, str, str, str, list[float] | None]]
    if shard is not None:
        k = len(members)
        plans = [(members, "sum", naming.SHARD_ENSEMBLE, naming.merge_sum_name(k), naming.FUSED_SUM, None)]
    else:
        plans = [(members[:m], "mean", naming.ensemble_name(m), naming.merge_name(m, job.merge),
                  naming.fused_name(m), draft.weights(m)) for m in draft.ms]
    for group, kind, ensemble, merge, fused_name, weights in plans:
        job.step(ensemble)
        params = job.parameters(group)
        if isinstance(shard, dict):
            params.update(shard_index=shard["index"], shard_count=shard["count"])
        draft.ensembles.append(write_ensemble(draft.root, group, kind, ensemble, merge, job, params, weights))
        job.done()
        if job.fused:
            job.step(fused_name)
            draft.fused.append(write_fused(draft.root, group, kind, fused_name, job, params, weights))
            job.done()


def _manifest(draft: Draft, common: Record, sections: dict[str, object]) -> Record:
    job, fits = draft.job, draft.fits
    merge_fit = {}
    if fits and job.validation:
        merge_fit = {"merge_fit": {"kind": job.merge, "split": "valid", "rows": len(job.validation[1]),
                                   "per_m": {str(m): f for m, f in fits.items()}}}
    return {
        "format": FORMAT, "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "export_id": job.export_id, "precision": job.precision, "merge": job.merge, **common,
        "num_fields": job.feature_map.num_fields, "feature_map_hash": job.feature_map.hash,
        **({"feat_ids_width": job.feature_map.width, "feat_ids_layout": job.feature_map.layout()}
           if job.feature_map.has_lists else {}),
        "dataset_id": job.feature_map.dataset_id, "m_list": draft.ms,
        "members": [m.record for m in draft.members], "ensembles": draft.ensembles, "fused": draft.fused,
        "versions": library_versions(), **merge_fit,
        **{key: section for key, section in sections.items() if section},
        "files": file_hashes(draft.root, skip=(naming.MANIFEST_FILE, "README.md")),
    }
