"""`evaluate_runs`: test-split logits once per member, then merge curves, diversity, cascades and parameter
scaling."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ttsrec.ensemble.merge import MERGE_KINDS
from ttsrec.ensemble.metrics import binary_metrics
from ttsrec.errors import UserError
from ttsrec.evaluate.cascade import MERGES as CASCADE_MERGES
from ttsrec.evaluate.cascade import evaluate_cascades
from ttsrec.evaluate.curves import Scorer, curve_rows, reference, single_metrics
from ttsrec.evaluate.diversity import js_matrix
from ttsrec.evaluate.report import write_outputs
from ttsrec.evaluate.soup import can_soup, uniform_soup
from ttsrec.evaluate.sources import MemberGroup, collect_groups, member_precision
from ttsrec.models.scaling import DEFAULT_KINDS, KINDS, match_macs
from ttsrec.train.fit import fit
from ttsrec.train.member import build_member
from ttsrec.train.metrics import predict_logits, split_labels
from ttsrec.train.options import TrainOptions
from ttsrec.train.progress import train_progress
from ttsrec.utils.atomic import atomic_dir, check_not_input, check_replaceable
from ttsrec.utils.report import SILENT, Reporter

DEFAULT_M = (1, 2, 4, 8, 16)
EVAL_FORMAT = "ttsrec.eval/1"


def evaluate_runs(sources: Sequence[Path], data_dir: Path, out: Path, *, m_list: Sequence[int] | None = None,
                  subsets: int = 10, seed: int = 0, param_scaling: bool = False,
                  scaling_m: Sequence[int] | None = None, scaling_kinds: Sequence[str] = DEFAULT_KINDS,
                  merges: Sequence[str] = MERGE_KINDS, soup: bool = True, cascade: bool = False,
                  force: bool = False, reporter: Reporter = SILENT) -> dict:
    """Evaluate run dirs / checkpoints on `data_dir`'s test split and write the report into `out`.

    Returns the content of results.json. `m_list=None` takes 1, 2, 4, 8, 16 as far as each group
    reaches; an explicit M larger than a group is an error. `merges` other than mean are fitted on the
    validation split; `soup` adds weight-averaged soups of homogeneous groups. `cascade` adds, for every
    group of two or more members (not co-trained), cascaded merging (`ttsrec.evaluate.cascade`: thresholds
    fitted on the validation split, scored on test) under results.json's "cascade", with the mean and,
    where `merges` has it, the weighted merge.
    """
    from ttsrec.data.prepared import PreparedData

    check_not_input(Path(out), [*sources, data_dir])
    check_replaceable(Path(out), force, "results.json", "tts-eval")
    merges = _checked(subsets, merges, scaling_kinds)
    data = PreparedData(Path(data_dir))
    groups = collect_groups(list(sources))
    if param_scaling:
        _check_module_kinds(groups, scaling_kinds)
    fmap = data.feature_map
    if groups[0].members[0].feature_map_hash != fmap.hash:
        raise UserError(f"the members were trained on feature map {groups[0].members[0].feature_map_hash}, "
                        f"but {data_dir} has {fmap.hash}")
    m_lists = {g.name: _m_list(m_list, g) for g in groups}
    labels = split_labels(data, "test")
    fitted = any(k != "mean" for k in merges)
    cascading = [g.name for g in groups if cascade and _can_cascade(g)]
    valid_labels = split_labels(data, "valid") if fitted or cascading else None
    cascade_merges = [k for k in CASCADE_MERGES if k == "mean" or k in merges]
    result: dict[str, Any] = {
        "format": EVAL_FORMAT,
        "data": {"dir": str(data_dir), "test_rows": len(labels), "feature_map_hash": fmap.hash,
                 "valid_rows": None if valid_labels is None else len(valid_labels)},
        "options": {"m_list": list(m_list) if m_list else None, "subsets": subsets, "seed": seed,
                    "param_scaling": param_scaling, "scaling_m": list(scaling_m) if scaling_m else None,
                    "scaling_kinds": list(scaling_kinds), "merges": merges, "soup": soup, "cascade": cascade},
        "groups": [], "rows": [],
    }
    if cascade:
        result["cascade"] = []
    with atomic_dir(Path(out), force=force, marker="results.json", tool="tts-eval",
                    inputs=[*sources, data_dir]) as tmp:
        for g in groups:
            rows, cascade_rows, group = _evaluate_group(
                g, data, labels, valid_labels, m_lists[g.name], subsets=subsets, seed=seed, merges=merges,
                soup=soup, fitted=fitted, cascading=g.name in cascading, cascade_merges=cascade_merges,
                reporter=reporter)
            result["rows"] += rows
            if g.name in cascading:
                result["cascade"] += cascade_rows
            result["groups"].append(group)
        if param_scaling:
            result["rows"] += _param_rows(groups, result, data, labels, m_lists, scaling_m, scaling_kinds,
                                          tmp, reporter)
        write_outputs(tmp, result)
    return result


def _checked(subsets: int, merges: Sequence[str], scaling_kinds: Sequence[str]) -> list[str]:
    """Refuse bad options before any work; the merges in their canonical order."""
    if subsets < 1:
        raise UserError(f"--subsets must be >= 1, got {subsets}")
    bad_merges = sorted(set(merges) - set(MERGE_KINDS))
    if bad_merges or not merges:
        raise UserError(f"unknown merge(s) {', '.join(bad_merges) or '(none given)'}; "
                        f"choose from {', '.join(MERGE_KINDS)}")
    bad_kinds = sorted(set(scaling_kinds) - set(KINDS))
    if bad_kinds:
        raise UserError(f"unknown scaling kind(s) {', '.join(bad_kinds)}; choose from {', '.join(KINDS)}")
    return [k for k in MERGE_KINDS if k in merges]


def _evaluate_group(g: MemberGroup, data, labels: np.ndarray, valid_labels: np.ndarray | None,
                    m_list: list[int], *, subsets: int, seed: int, merges: list[str], soup: bool,
                    fitted: bool, cascading: bool,
                    cascade_merges: list[str], reporter: Reporter) -> tuple[list, list, dict[str, Any]]:
    """One group's curve (and soup) rows, its cascade rows and its results.json "groups" entry."""
    from ttsrec.models import model_cost

    logits = _member_logits(g, data, "test", reporter)
    needs_valid = len(g.members) > 1 and (fitted or cascading)
    valid = _member_logits(g, data, "valid", reporter) if needs_valid else None
    singles = single_metrics(logits, labels)
    on_valid: list[dict[str, float]] = [{} for _ in g.members] if valid is None else [
        {"valid_auc": v["auc"], "valid_logloss": v["logloss"]}
        for v in single_metrics(valid, valid_labels)]
    js = js_matrix(logits)
    costs = [model_cost(m.model) for m in g.members]
    macs = [int(c.macs_per_sample) for c in costs]
    ref = reference(g, singles)
    scorer = Scorer(logits, labels, valid, valid_labels)
    rows = curve_rows(g, scorer, m_list, subsets=subsets, seed=seed, js=js, macs=macs, ref=ref, merges=merges)
    if soup and not g.joint and can_soup([m.model for m in g.members]):
        rows += _soup_rows(g, data, labels, m_list, subsets, seed, macs, ref)
    precisions = [member_precision(m, g.run) for m in g.members]
    precision = "+".join(dict.fromkeys(precisions))  # "fp32+bf16" for a mixed group
    for r in rows:
        r["precision"] = precision
    plain = ("tts", "tts_balanced", "group")
    top = max((r for r in rows if r["kind"] in plain and r["merge"] == "mean"), key=lambda r: r["M"])
    cascade_rows = (_cascade_rows(g, valid, valid_labels, logits, labels, macs, cascade_merges, precision,
                                  reporter) if cascading else [])
    group = {
        "name": g.name, "homogeneous": g.homogeneous, "joint": g.joint, "series": g.series,
        "precision": precision, "distilled": _distilled(g),
        "m_list": m_list,
        "members": [{"name": m.name, "path": str(m.path), "backbone": m.backbone, "seed": m.seed,
                     "hparams": m.hparams, "precision": p, "params": int(c.params),
                     "macs_per_sample": int(c.macs_per_sample), **s, **v}
                    for m, c, s, v, p in zip(g.members, costs, singles, on_valid, precisions, strict=True)],
        "reference": {k: v for k, v in ref.items() if k != "members"},
        "js_matrix": js.round(6).tolist(), "js_mean": _mean_offdiag(js),
        "gain": {"M": top["M"], "auc": top["auc_gain"], "logloss": top["logloss_gain"]},
    }
    return rows, cascade_rows, group


def _can_cascade(group: MemberGroup) -> bool:
    """Two or more members that make sense on their own (co-trained members are merged only as a whole)."""
    return len(group.members) > 1 and not group.joint


def _cascade_rows(g: MemberGroup, valid: np.ndarray, valid_labels: np.ndarray, test: np.ndarray,
                  labels: np.ndarray, macs: list[int], merges: Sequence[str], precision: str,
                  reporter: Reporter) -> list[dict[str, Any]]:
    """`evaluate_cascades` on the group's cached logits, JSON-ready (an infinite threshold as 'inf')."""
    with reporter.progress(transient=True) as board:
        task = board.task(f"cascade {g.name}", None)
        rows = evaluate_cascades(valid, valid_labels, test, labels, group=g.name, backbones=g.backbones,
                                 merges=merges, member_macs=macs)
        task.update(completed=1)
    for r in rows:
        if r["threshold"] is not None and math.isinf(r["threshold"]):
            r["threshold"] = "inf"
        r["precision"] = precision
    return rows


def _distilled(group: MemberGroup) -> dict[str, Any] | None:
    """What a distilled student was distilled from (`tts-train --distill-from`): its run.json's record,
    else (loose checkpoints) the first member's checkpoint's; None for members trained on labels."""
    record = group.run.get("distilled_from")
    if record is None and not group.run:
        import torch

        payload = torch.load(group.members[0].path, map_location="cpu", weights_only=True, mmap=True)
        record = (payload.get("train") or {}).get("distilled_from")
    if not record:
        return None
    return {k: record.get(k) for k in ("run", "m", "width_mult", "alpha", "temperature")}


def _check_module_kinds(groups: list[MemberGroup], kinds: Sequence[str]) -> None:
    """The paper's scaling needs an interaction module: say so before any work is done."""
    from ttsrec.models import backbone_class

    if not {"module_depth", "module_width"} & set(kinds):
        return
    for g in groups:
        bare = sorted({b for b in g.backbones if backbone_class(b).module_width_knob is None})
        if bare:
            raise UserError(f"{g.name}: {', '.join(bare)} has no interaction module to scale by "
                            f"module_depth/module_width (the paper's scaling needs dcn, dcnv2, wukong or "
                            f"rankmixer)")


def _m_list(m_list: Sequence[int] | None, group: MemberGroup) -> list[int]:
    n = len(group.members)
    if group.joint:
        return [n]  # co-trained members are only meaningful together
    if m_list is None:
        return [m for m in DEFAULT_M if m <= n] + ([n] if n not in DEFAULT_M and n > 1 else [])
    bad = [m for m in m_list if m < 1]
    if bad:
        raise UserError(f"M must be >= 1, got {bad[0]}")
    too_big = [m for m in m_list if m > n]
    if too_big:
        raise UserError(f"M={too_big[0]} is larger than the {n} members of {group.name}")
    return sorted(set(m_list))


def _soup_rows(g: MemberGroup, data, labels: np.ndarray, m_list: list[int], subsets: int, seed: int,
               macs: list[int], ref: dict[str, Any]) -> list[dict[str, Any]]:
    """One uniform weight-averaged soup per M > 1 (the first of that M's member subsets): costs one member."""
    from ttsrec.evaluate.subsets import choose_subsets

    rows = []
    for m in (m for m in m_list if m > 1):
        subset = choose_subsets(len(g.members), m, subsets, seed + m)[0]
        soup = uniform_soup([g.members[i].model for i in subset])
        metrics = binary_metrics(labels, predict_logits([soup], data, "test")[0])
        rows.append({"group": g.name, "kind": "soup", "merge": "weights", "backbone": g.backbones[0], "M": m,
                     "subsets": 1, "auc": metrics["auc"], "auc_std": 0.0, "logloss": metrics["logloss"],
                     "logloss_std": 0.0, "auc_gain": metrics["auc"] - ref["auc"],
                     "logloss_gain": metrics["logloss"] - ref["logloss"],
                     "macs_per_sample": float(macs[subset[0]]), "js_mean": None})
    return rows


def _mean_offdiag(js: np.ndarray) -> float:
    n = len(js)
    return float(js.sum() / (n * (n - 1))) if n > 1 else 0.0


def _member_logits(group: MemberGroup, data, split: str, reporter: Reporter) -> np.ndarray:
    """float32 [M, N]: each member's logits on a split, one member at a time (one bar)."""
    rows = []
    with reporter.progress(transient=True) as board:
        task = board.task(f"{split} logits {group.name}", len(group.members))
        for member in group.members:
            rows.append(predict_logits([member.model], data, split)[0])
            task.update(advance=1)
    return np.stack(rows)


def _param_rows(groups: list[MemberGroup], result: dict[str, Any], data, labels: np.ndarray,
                m_lists: dict[str, list[int]], scaling_m: Sequence[int] | None, kinds: Sequence[str],
                out: Path, reporter: Reporter) -> list[dict[str, Any]]:
    """Train one deeper and one wider model per M (cached across groups that share a base)."""
    plans = []
    for g, info in zip(groups, result["groups"], strict=True):
        wanted = [m for m in m_lists[g.name] if m > 1] if scaling_m is None else list(scaling_m)
        missing = [m for m in wanted if m not in m_lists[g.name]]
        if missing:
            raise UserError(f"--scaling-m {missing[0]} is not among the evaluated M of {g.name}")
        best = info["reference"]["backbone"]
        ref_index = next(i for i, m in enumerate(info["members"]) if m["backbone"] == best)
        base = g.members[ref_index]
        options = TrainOptions(**g.run["options"]) if g.run.get("options") else TrainOptions()
        base_macs = info["members"][ref_index]["macs_per_sample"]
        for m in wanted:
            for kind in kinds:
                plans.append((g, info, base, options, m, kind, base_macs))
    cache: dict[str, dict[str, Any]] = {}
    rows = []
    num_fields = data.feature_map.num_fields
    with train_progress(reporter, len(plans)) as progress:
        for key, (g, info, base, options, m, kind, base_macs) in enumerate(plans):
            hparams, macs = match_macs(base.backbone, base.hparams, num_fields, kind, m * base_macs)
            cache_key = json.dumps([base.backbone, hparams, options.to_dict(), base.seed], sort_keys=True)
            if cache_key not in cache:
                progress.label(key, f"{kind} x{m} {base.backbone}")
                cache[cache_key] = _train_scaled(base, hparams, options, data, labels, out,
                                                 f"{base.backbone}_{kind}_x{m}", progress.callback(key))
            progress.member_done(key)
            trained = cache[cache_key]
            ref = info["reference"]
            rows.append({
                "group": g.name, "kind": f"param_{kind}", "merge": "none", "backbone": base.backbone, "M": m,
                "subsets": 1, "precision": options.precision,
                "auc": trained["auc"], "auc_std": 0.0, "logloss": trained["logloss"], "logloss_std": 0.0,
                "auc_gain": trained["auc"] - ref["auc"], "logloss_gain": trained["logloss"] - ref["logloss"],
                "macs_per_sample": float(macs), "js_mean": None, "params": trained["params"],
                "embedding_params": trained["embedding_params"],
                "hparams": hparams,
            })
    return rows


def _train_scaled(base, hparams: dict[str, Any], options: TrainOptions, data, labels: np.ndarray, out: Path,
                  name: str, on_event) -> dict[str, Any]:
    from ttsrec.models import model_cost
    from ttsrec.models.checkpoint import save_member

    fmap = data.feature_map
    model = build_member(base.backbone, fmap, base.seed, hparams)
    result = fit([model], data, options, seed=base.seed, on_event=on_event)
    metrics = binary_metrics(labels, predict_logits([model], data, "test")[0])
    save_member(out / "param_scaling" / f"{name}.pt", model, backbone=base.backbone, hparams=model.hparams,
                seed=base.seed, vocab_sizes=fmap.vocab_sizes, feature_map_hash=fmap.hash,
                metrics={"test": metrics}, train={"options": options.to_dict(), **result.to_dict()})
    cost = model_cost(model)
    return {**metrics, "params": int(cost.params), "embedding_params": int(cost.embedding_params)}
