"""Cascaded merging: the threshold's two ends are exactly M=1 and exactly the full merge; the fitted
threshold reads the validation split only; the one-graph `cascade_mM` equals the in-process cascade
(members of later stages on the surviving rows only) bit for bit, on tiny members of six backbones and
on the small trained run, for every rule, the mean and a weighted merge, batches where every row stops
early, none does, and batch 1."""

from __future__ import annotations

import inspect
import json
import math
from pathlib import Path

import numpy as np
import onnx
import pytest

from models_fixtures import small_model, valid_ids
from ttsrec.ensemble.cascade import (
    RULES,
    SELECTIONS,
    Cascade,
    StageTables,
    cascade_frontier,
    cascade_inprocess,
    cascade_onnx,
    default_stages,
    fit_cascade,
    make_cascade,
    pick_threshold,
    prefix_merge,
    run_cascade,
    stage_plans,
    sweep_thresholds,
)
from ttsrec.ensemble.metrics import auc
from ttsrec.ensemble.order import balanced_order
from ttsrec.ensemble.session import ort_session, run_session
from ttsrec.errors import UserError
from ttsrec.evaluate.cascade import evaluate_cascades, fitted_rows, member_order, plot_cascade_frontier
from ttsrec.export.onnx_member import export_member_onnx
from ttsrec.repository import naming
from ttsrec.repository.cascade_graph import (
    all_weight_bytes,
    cascade_graph,
    read_cascade_metadata,
)
from ttsrec.repository.graphs import fused_graph, weight_bytes

BACKBONES = ("fnn", "dcnv2", "fnn", "rankmixer", "wukong", "fnn")
WEIGHTS = [0.2, 0.05, 0.15, 0.1, 0.0, 0.2]
"""One member of weight 0: a weighted cascade leaves it out."""
RULE_CASES = [("se", 1.0), ("delta", 1.0), ("rank", 1.0), ("rank", math.inf)]


def synthetic_logits(m: int = 6, n: int = 5000, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Members = a shared signal + member noise whose size varies by row (some rows settle early)."""
    rng = np.random.default_rng(seed)
    signal = rng.normal(-1.0, 1.0, n)
    labels = (rng.random(n) < 1 / (1 + np.exp(-signal))).astype(np.float64)
    noise = rng.gamma(2.0, 0.15, n)
    logits = signal + noise * rng.normal(size=(m, n))
    return logits.astype(np.float32), labels


def sequential(logits: np.ndarray, order: list[int], weights: list[float] | None = None) -> np.ndarray:
    """The full merge written out: s += w * l in member order (float32), times 1 / sum(w)."""
    w = [1.0] * len(order) if weights is None else [x / weights[0] for x in weights]
    total = None
    for position, member in enumerate(order):
        term = logits[member] if weights is None else logits[member] * np.float32(w[position])
        total = term if total is None else total + term
    return total * np.float32(1.0 / sum(w))


# -- the threshold's ends, the arithmetic -------------------------------------------------------------------

@pytest.mark.parametrize(("rule", "shrink"), RULE_CASES)
@pytest.mark.parametrize("weighted", [False, True])
def test_threshold_zero_is_m1_and_infinity_is_the_full_merge_exactly(rule: str, shrink: float,
                                                                     weighted: bool) -> None:
    logits, _ = synthetic_logits()
    order = [3, 1, 4, 0, 5, 2]
    weights = WEIGHTS if weighted else None
    cascade = make_cascade(logits, order=order, rule=rule, weights=weights, shrink=shrink)
    assert cascade.stages[0] == 1 and cascade.stages[-1] == cascade.num_members
    kept = list(cascade.order)
    assert kept == ([i for i in order if WEIGHTS[i] > 0] if weighted else order)

    merged, used = run_cascade(logits, cascade.with_threshold(0.0))
    assert np.array_equal(merged, logits[kept[0]]) and np.all(used == 1)

    merged, used = run_cascade(logits, cascade.with_threshold(math.inf))
    expected = sequential(logits, kept, None if not weighted else [WEIGHTS[i] for i in kept])
    assert np.array_equal(merged, expected) and np.all(used == len(kept))
    assert np.array_equal(merged, prefix_merge(logits, cascade))
    if not weighted:  # onnxruntime's Mean (what fused_mM serves) is the same sequential sum times 1/M
        assert np.array_equal(merged, sequential(logits, kept))


def test_full_mean_equals_onnxruntime_mean_for_any_m() -> None:
    from ttsrec.repository.graphs import merge_graph

    logits, _ = synthetic_logits(m=7)
    for m in (2, 3, 5, 7):
        cascade = make_cascade(logits[:m], threshold=math.inf)
        session = ort_session(merge_graph(m).SerializeToString())
        served = session.run([naming.LOGIT], {naming.merge_input(k): logits[k][:, None] for k in range(m)})[0]
        assert np.array_equal(run_cascade(logits[:m], cascade)[0], served[:, 0]), m


def test_stopping_follows_the_threshold_and_the_stages() -> None:
    logits, _ = synthetic_logits()
    cascade = make_cascade(logits, rule="se")
    tables = StageTables(logits, cascade)
    previous = 0.0
    for tau in sweep_thresholds(tables, 20):
        merged, used = tables.select(tau)
        assert set(np.unique(used)) <= set(cascade.stages)
        assert used.mean() >= previous - 1e-12  # a larger confidence never uses fewer members
        previous = used.mean()
        for k in cascade.stages:  # a row that stopped after k members holds the first-k merge
            rows = used == k
            assert np.array_equal(merged[rows], prefix_merge(logits, cascade, k)[rows])
    assert default_stages(16) == [1, 2, 4, 8, 16] and default_stages(6) == [1, 2, 4, 6]
    assert default_stages(1) == [1]


def test_a_cascade_is_refused_when_malformed() -> None:
    with pytest.raises(UserError):
        Cascade(order=(0, 1, 2), stages=(1, 2))
    with pytest.raises(UserError):
        Cascade(order=(0, 0), stages=(1, 2))
    with pytest.raises(UserError):
        Cascade(order=(0, 1), stages=(2, 1, 2))
    with pytest.raises(UserError):
        Cascade(order=(0, 1), stages=(1, 2), rule="magic")
    with pytest.raises(UserError):
        Cascade(order=(0, 1), stages=(1, 2), threshold=-1.0)
    with pytest.raises(UserError):
        run_cascade(np.zeros((2, 3), dtype=np.float64), Cascade(order=(0, 1), stages=(1, 2)))
    cascade = Cascade(order=(1, 0), stages=(1, 2), rule="rank", threshold=math.inf, weights=(0.7, 0.3),
                      spread=0.2, center=-1.0, scale=0.5, shrink=math.inf)
    assert Cascade.from_dict(json.loads(json.dumps(cascade.to_dict()))) == cascade


# -- fitting: validation only --------------------------------------------------------------------------

def test_fit_takes_only_the_validation_split() -> None:
    params = set(inspect.signature(fit_cascade).parameters)
    assert not any("test" in p for p in params)
    logits, labels = synthetic_logits(n=6000)
    fit = fit_cascade(logits, labels, tolerance=1e-3)
    assert set(fit.rules) == set(RULES) and fit.cascade.rule in RULES and fit.cascade.rule in fit.reason
    for rule_fit in fit.rules.values():
        assert rule_fit.valid_auc >= fit.full_valid_auc - 1e-3
        assert rule_fit.avg_members <= fit.cascade.num_members
    assert fit.rules[fit.cascade.rule].avg_members == min(f.avg_members for f in fit.rules.values())
    assert fit.cascade == fit.rules[fit.cascade.rule].cascade
    for selection in SELECTIONS:  # the fitted cascade gives the validation figures it was picked by
        fitted = fit_cascade(logits, labels, tolerance=1e-3, selection=selection)
        for rule_fit in fitted.rules.values():
            merged, used = run_cascade(logits, rule_fit.cascade)
            assert used.mean() == pytest.approx(rule_fit.avg_members, abs=1e-12)
            assert auc(labels, merged) == pytest.approx(rule_fit.valid_auc, abs=1e-12)


def test_stable_selection_skips_a_lucky_dip() -> None:
    sweep = [{"threshold": t, "avg_members": m, "auc": a}
             for t, m, a in [(0.0, 1.0, 0.70), (1.0, 2.0, 0.7502), (2.0, 3.0, 0.7490), (3.0, 4.0, 0.7500),
                             (math.inf, 8.0, 0.7501)]]
    assert pick_threshold(sweep, 0.7501 - 1e-4, "cheapest")["avg_members"] == 2.0
    assert pick_threshold(sweep, 0.7501 - 1e-4, "stable")["avg_members"] == 4.0
    assert auc(np.array([0, 1, 0, 1.0]), np.array([0.1, 0.4, 0.4, 0.9])) == 0.875


def test_evaluation_fits_the_same_whatever_the_test_split_holds() -> None:
    logits, labels = synthetic_logits(n=8000)
    valid, valid_labels, test, test_labels = logits[:, :4000], labels[:4000], logits[:, 4000:], labels[4000:]
    rng = np.random.default_rng(5)
    scrambled = rng.permutation(test.ravel()).reshape(test.shape).astype(np.float32)
    kwargs = {"orders": ("export", "best"), "merges": ("mean", "weighted"), "tolerance": 1e-3, "points": 30}
    # the fit never looks at the test split: a scrambled one with flipped labels changes no fitted number
    one = evaluate_cascades(valid, valid_labels, test, test_labels, **kwargs)
    two = evaluate_cascades(valid, valid_labels, scrambled, 1 - test_labels, **kwargs)

    def fitted(rows):
        return [(r["order"], r["merge"], r["rule"], r["threshold"], r["valid_auc"], r["kept"])
                for r in rows if r["fitted"]]

    assert fitted(one) == fitted(two) and len(fitted(one)) == 2 * 2 * len(RULES)
    assert [r["auc"] for r in fitted_rows(one)] != [r["auc"] for r in fitted_rows(two)]  # test was scored


def test_evaluation_rows_and_plot(tmp_path: Path) -> None:
    logits, labels = synthetic_logits(n=6000)
    backbones = ["a", "a", "b", "b", "c", "a"]
    rows = evaluate_cascades(logits[:, :3000], labels[:3000], logits[:, 3000:], labels[3000:], group="g",
                             backbones=backbones, member_macs=[1.0] * 6, points=40)
    assert member_order("export", logits, labels, backbones) == balanced_order(backbones)
    best = member_order("best", logits[:, :3000], labels[:3000])
    assert sorted(best) == list(range(6))
    kept = fitted_rows(rows)
    assert len(kept) == 4 and all(r["reason"] for r in kept)  # (export, best) x (mean, weighted)
    full = [r for r in rows if r["kind"] == "full"]
    assert {(r["order"], r["merge"]) for r in full} == {(o, m) for o in ("export", "best")
                                                         for m in ("mean", "weighted")}
    for r in rows:
        assert 1 <= r["avg_members"] <= 6 and 0.5 < r["auc"] < 1
        assert r["avg_macs"] == pytest.approx(r["avg_members"])
    ends = [r for r in rows if r["kind"] == "cascade" and r["merge"] == "mean" and r["order"] == "export"
            and math.isinf(r["threshold"])]
    full_mean = next(r for r in full if r["merge"] == "mean" and r["order"] == "export")
    assert ends and all(r["auc"] == full_mean["auc"] and r["avg_members"] == 6 for r in ends)
    path = plot_cascade_frontier(rows, tmp_path / "cascade.png")
    assert path.stat().st_size > 10_000


# -- the graph equals the in-process cascade ---------------------------------------------------------------

@pytest.fixture(scope="module")
def tiny_members(tmp_path_factory: pytest.TempPathFactory) -> tuple[list[onnx.ModelProto], list]:
    """Six members of four backbones (untrained, small), as ONNX models and sessions."""
    folder = tmp_path_factory.mktemp("cascade_members")
    files = [export_member_onnx(small_model(b, seed=i), folder / f"m{i}.onnx")
             for i, b in enumerate(BACKBONES)]
    return [onnx.load(f) for f in files], [ort_session(f) for f in files]


def run_graph(model: onnx.ModelProto, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    session = ort_session(model.SerializeToString())
    logit, prob, used = session.run([naming.LOGIT, naming.PROB, naming.MEMBERS_USED], {naming.FEAT_IDS: ids})
    assert logit.shape == prob.shape == used.shape == (len(ids), 1)
    assert logit.dtype == prob.dtype == used.dtype == np.float32
    return logit[:, 0], prob[:, 0], used[:, 0]


def check_graph_equals_inprocess(models, sessions, cascade: Cascade, ids: np.ndarray) -> np.ndarray:
    graph = cascade_graph(models, cascade.to_dict(), stage_plans(cascade))
    assert Cascade.from_dict(read_cascade_metadata(graph)) == cascade
    logit, prob, used = run_graph(graph, ids)
    expected, expected_used = cascade_inprocess(sessions, ids, cascade)
    assert np.array_equal(logit, expected), np.abs(logit - expected).max()
    assert np.array_equal(used, expected_used.astype(np.float32))
    np.testing.assert_allclose(prob, 1 / (1 + np.exp(-expected.astype(np.float64))), rtol=1e-6, atol=1e-7)
    return expected_used


@pytest.mark.parametrize(("rule", "shrink"), RULE_CASES)
@pytest.mark.parametrize("weighted", [False, True], ids=["mean", "weighted"])
@pytest.mark.parametrize("homogeneous", [False, True], ids=["mix", "fnn"])
def test_graph_equals_inprocess_exactly(tiny_members, rule: str, shrink: float, weighted: bool,
                                        homogeneous: bool) -> None:
    models, sessions = tiny_members
    ids = valid_ids(3000, seed=1).numpy()
    logits = np.stack([run_session(s, ids)[:, 0] for s in sessions])
    if homogeneous:
        order, stages = [i for i, b in enumerate(BACKBONES) if b == "fnn"], None
    else:
        order, stages = balanced_order(BACKBONES), [2, 3, 6]
    weights = WEIGHTS if weighted else None
    cascade = make_cascade(logits, order=order, stages=stages, rule=rule, weights=weights, shrink=shrink)
    grid = sweep_thresholds(StageTables(logits, cascade), 8)
    partial = False
    for tau in [0.0, grid[len(grid) // 3], grid[2 * len(grid) // 3], math.inf]:
        used = check_graph_equals_inprocess(models, sessions, cascade.with_threshold(tau), ids)
        partial |= len(np.unique(used)) > 1
        if tau == 0.0:
            assert np.all(used == cascade.stages[0])  # every row stops after the first stage
        if math.isinf(tau):
            assert np.all(used == cascade.num_members)  # no row stops early
    assert partial  # some batch had rows stopping at different stages


def test_graph_batch_of_one_and_a_single_stage(tiny_members) -> None:
    models, sessions = tiny_members
    ids = valid_ids(40, seed=2).numpy()
    logits = np.stack([run_session(s, ids)[:, 0] for s in sessions])
    cascade = make_cascade(logits, order=balanced_order(BACKBONES), rule="se")
    tau = sweep_thresholds(StageTables(logits, cascade), 6)[3]
    graph = ort_session(cascade_graph(models, cascade.with_threshold(tau).to_dict(),
                                      stage_plans(cascade.with_threshold(tau))).SerializeToString())
    counts = set()
    for row in range(len(ids)):
        one = ids[row:row + 1]
        logit, used = graph.run([naming.LOGIT, naming.MEMBERS_USED], {naming.FEAT_IDS: one})
        expected, expected_used = cascade_inprocess(sessions, one, cascade.with_threshold(tau))
        assert np.array_equal(logit[:, 0], expected) and used[0, 0] == expected_used[0]
        counts.add(int(expected_used[0]))
    assert len(counts) >= 2
    single = Cascade(order=(4,), stages=(1,), threshold=0.0)  # one member, one stage: that member
    logit, _, used = run_graph(cascade_graph(models, single.to_dict(), stage_plans(single)), ids)
    assert np.array_equal(logit, run_session(sessions[4], ids)[:, 0]) and np.all(used == 1)


@pytest.mark.parametrize(("rule", "shrink"), RULE_CASES)
def test_precomputed_logits_give_the_inprocess_cascade_unless_a_stage_runs_one_row(tiny_members, rule: str,
                                                                                   shrink: float) -> None:
    """A member's logit for a row does not depend on which other rows share its batch, except in a batch
    of one row for fm, deepfm and rankmixer (an activation x activation MatMul has no pre-packed operand,
    and MLAS sums an M=1 product in another order). So the cascade on full-batch logits (what `tts-eval`
    scores) equals the served one wherever no stage runs a single row; the in-process cascade is the
    reference for "served equals in-process"."""
    _, sessions = tiny_members
    ids = valid_ids(3000, seed=5).numpy()
    logits = np.stack([run_session(s, ids)[:, 0] for s in sessions])
    cascade = make_cascade(logits, order=balanced_order(BACKBONES), rule=rule, shrink=shrink)
    grid = sweep_thresholds(StageTables(logits, cascade), 8)
    for tau in grid[1:-1:2]:
        c = cascade.with_threshold(tau)
        merged, used = run_cascade(logits, c)
        going = [int((used > k).sum()) for k in c.stages[:-1]]
        assert 1 not in going
        served, served_used = cascade_inprocess(sessions, ids, c)
        assert np.array_equal(used, served_used) and np.array_equal(merged, served)


def test_cascade_at_infinity_serves_what_fused_serves(tiny_members) -> None:
    models, _ = tiny_members
    ids = valid_ids(2000, seed=3).numpy()
    order = balanced_order(BACKBONES)
    cascade = Cascade(order=tuple(order), stages=tuple(default_stages(len(order))), threshold=math.inf)
    graph = cascade_onnx(models, cascade)
    assert graph == cascade_graph(models, cascade.to_dict(), stage_plans(cascade))
    onnx.checker.check_model(graph, full_check=True)
    members_bytes = sum(weight_bytes(m) for m in models)
    assert members_bytes <= all_weight_bytes(graph) <= members_bytes + 4096  # later stages sit in If branches
    assert weight_bytes(graph) < members_bytes
    logit, _, used = run_graph(graph, ids)
    fused = ort_session(fused_graph([models[i] for i in order]).SerializeToString())
    assert np.array_equal(logit, fused.run([naming.LOGIT], {naming.FEAT_IDS: ids})[0][:, 0])
    assert np.all(used == len(order))


# -- the small trained run ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def trained(member_checkpoints: list[Path], prepared_dir: Path, tmp_path_factory: pytest.TempPathFactory):
    from ttsrec.data.prepared import PreparedData
    from ttsrec.models.checkpoint import load_member

    folder = tmp_path_factory.mktemp("cascade_trained")
    members = [load_member(p) for p in member_checkpoints]
    files = [export_member_onnx(m.model, folder / f"m{i}.onnx") for i, m in enumerate(members)]
    sessions = [ort_session(f) for f in files]
    data = PreparedData(prepared_dir)
    split = {}
    for name in ("valid", "test"):
        ids = np.ascontiguousarray(data.ids(name), dtype=np.int64)
        split[name] = (ids, np.stack([run_session(s, ids)[:, 0] for s in sessions]),
                       np.asarray(data.labels(name), dtype=np.float64))
    return [onnx.load(f) for f in files], sessions, [m.backbone for m in members], split


@pytest.mark.slow
@pytest.mark.parametrize("merge", ["mean", "weighted"])
def test_trained_cascade_graph_equals_inprocess(trained, merge: str) -> None:
    from ttsrec.ensemble.merge import fit_merge

    models, sessions, backbones, split = trained
    _, valid_logits, valid_labels = split["valid"]
    test_ids = split["test"][0]
    ids = np.concatenate([split["valid"][0], test_ids])[:4000]
    for group in ([i for i, b in enumerate(backbones) if b == "fnn"], balanced_order(backbones)):
        weights = None
        if merge == "weighted":
            fitted = fit_merge("weighted", valid_logits[group], valid_labels) + 1e-3  # keep every member
            weights = np.zeros(len(backbones))
            weights[group] = fitted
        fit = fit_cascade(valid_logits, valid_labels, order=group, weights=weights, tolerance=1e-3)
        for rule_fit in fit.rules.values():
            used = check_graph_equals_inprocess(models, sessions, rule_fit.cascade, ids)
            assert used.min() >= 1 and used.max() <= len(group)


@pytest.mark.slow
def test_trained_precomputed_logits_give_the_inprocess_cascade(trained) -> None:
    """On these members a row's logit does not depend on the batch it runs in, so the cascade on full-batch
    precomputed logits (what tts-eval scores) equals the served one."""
    _, sessions, backbones, split = trained
    test_ids, test_logits, test_labels = split["test"]
    fit = fit_cascade(split["valid"][1], split["valid"][2], order=balanced_order(backbones), tolerance=1e-3)
    for rule_fit in fit.rules.values():
        merged, used = run_cascade(test_logits, rule_fit.cascade)
        served, served_used = cascade_inprocess(sessions, test_ids, rule_fit.cascade)
        assert np.array_equal(used, served_used) and np.array_equal(merged, served)
    rows = cascade_frontier(test_logits, test_labels, fit.cascade, [0.0, fit.cascade.threshold, math.inf])
    assert rows[0]["avg_members"] == 1 and rows[-1]["avg_members"] == len(backbones)
