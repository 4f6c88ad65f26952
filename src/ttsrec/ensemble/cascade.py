"""Cascaded merging: members only where they change the answer.

A cascade evaluates the members in a fixed order and in stages (cumulative member counts, for example
1, 2, 4, 8, 16; the last is every member). After each stage but the last, every row whose merged logit
is *settled* stops with the merged logit so far; the others go on to the next stage. The merged logit
after k members is the (weighted) mean of those k logits, the merge weights renormalised over the
prefix.

**Threshold.** `threshold` is a *confidence* tau >= 0 (units 1/logit): a row stops after a non-final
stage when `stat * tau < 1`, i.e. when its rule's statistic is below 1/tau logits. tau = 0 stops every
row after the first stage (with a first stage of one member: exactly M=1), tau = inf runs every row
through every stage (exactly the full merge; a statistic of 0 gives 0 * inf = NaN, which is not < 1).

**Rules** (per row, after each non-final stage of k members):

- `se`: the standard error of the running (weighted) mean, sqrt(sample variance / k);
- `delta`: |z_k - z_j|, the change of the merged logit since the previous stage of j members (the
  first stage compares with its first half; a first stage of one member has no spread yet);
- `rank`: the expected remaining change to the *full* merge, |z_k - z_M|, estimated from the spread so
  far shrunk towards the validation spread (sd of z_k - z_M = sigma * sqrt(1/k - 1/M) for exchangeable
  members; `shrink` = inf: the validation spread alone), times a density weight
  1 / (1 + ((z - center) / scale)^2): AUC counts pairs, and a row in the sparse tails of the logit
  distribution can move further before it passes other rows. `fit_cascade` picks `shrink` and the
  weight's width from `RANK_VARIANTS` on validation.

Why not disagreement alone: for members that differ by seed, a row's member logits scatter about
evenly (Gaussian-like, similar spread on every row), and for Gaussian samples the sample variance is
independent of the error of the sample mean, so rows whose first members happen to agree are no
closer to the full merge than the others; stopping them only spreads members unevenly, which costs
AUC at equal average cost. Where spread really differs by row (architectures), the fitted `shrink`
lets it count.

Where a rule has no spread yet (one member), it uses the validation spread `spread` (the rms over rows
of the members' standard deviation), a constant: such a stage stops every row or none.

**Arithmetic contract.** Everything is float32, element-wise and sequential in member order, each
operation rounded on its own (`s = s + w * l`, `z = s * (1 / W)`; never a reduction whose summation
order could differ, never a fused multiply-add), with float32 constants from `stage_plans`. The ONNX graph
(`ttsrec.repository.cascade_graph`) is made of the same Add/Mul/Sub/Div/Max/Sqrt/Abs/Less steps on
the same constants, so it reproduces these numbers bit for bit. Merge weights are rescaled so the first
member's weight is exactly 1 (a prefix of one member is that member's logit, exactly).

`fit_cascade` reads the validation split only; `cascade_frontier` scores a cascade per threshold on any
split (the test split, for reporting).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np

from ttsrec.ensemble.metrics import auc, binary_metrics
from ttsrec.errors import UserError

RULES = ("se", "delta", "rank")
DEFAULT_TOLERANCE = 1e-4
"""Validation AUC a fitted cascade may give up against the full merge."""
RANK_SHRINK = 1.0
"""`rank`: prior strength of the validation spread, in members (sigma^2 estimate =
(k * v + nu * spread^2) / (k - 1 + nu)); inf: the validation spread alone."""
RANK_VARIANTS: tuple[tuple[float, float], ...] = ((1.0, 1.0), (1.0, 2.0), (math.inf, 1.0), (math.inf, 2.0),
                                                  (math.inf, 4.0))
"""(shrink, width of the density weight in validation half-IQRs) tried by `fit_cascade` for `rank`."""
SELECTIONS = ("stable", "cheapest")
"""stable (default): the cheapest threshold from which every more expensive swept threshold is within
the tolerance too; cheapest: the threshold with the fewest members whose validation AUC is within it.
Validation AUC moves by ~1e-4 from row-level luck alone, so `cheapest` tends to pick a lucky dip (16
DCNv2 seeds, 40k validation rows: 9.8 members/row but -2.0e-4 test AUC against the full mean, where
`stable` kept 12.5 and -0.6e-4)."""
SWEEP_POINTS = 120
F32 = np.float32
ONE, ZERO = F32(1), F32(0)


@dataclass(frozen=True)
class Cascade:
    """Member order, stages, rule, threshold and merge weights: everything that decides a row's output."""

    order: tuple[int, ...]
    """Member indices (rows of a logits array, positions of member sessions / graphs), evaluation order."""
    stages: tuple[int, ...]
    """Cumulative member counts, strictly increasing, the last = len(order)."""
    rule: str = "se"
    threshold: float = math.inf
    """Confidence tau: a row stops after a non-final stage when stat * tau < 1 (0: M=1 end, inf: full)."""
    weights: tuple[float, ...] | None = None
    """Merge weight per position of `order` (> 0); None: the mean."""
    spread: float = 1.0
    """Validation member spread (logits): the statistic where a rule has no spread yet."""
    center: float = 0.0
    """`rank`: centre of the validation merged-logit distribution."""
    scale: float = 1.0
    """`rank`: scale of the validation merged-logit distribution (inf: no density weight)."""
    shrink: float = RANK_SHRINK
    """`rank`: prior strength of `spread`, in members (inf: `spread` alone)."""

    def __post_init__(self) -> None:
        order, stages = tuple(int(i) for i in self.order), tuple(int(k) for k in self.stages)
        object.__setattr__(self, "order", order)
        object.__setattr__(self, "stages", stages)
        if not order or len(set(order)) != len(order) or min(order) < 0:
            raise UserError(f"a cascade needs distinct member indices, got {list(order)}")
        if not stages or stages[-1] != len(order) or stages[0] < 1 \
                or any(b <= a for a, b in itertools.pairwise(stages)):
            raise UserError(f"cascade stages must increase from >= 1 to {len(order)} members, "
                            f"got {list(stages)}")
        if self.rule not in RULES:
            raise UserError(f"unknown cascade rule {self.rule!r}; choose from {', '.join(RULES)}")
        if not (self.threshold >= 0):
            raise UserError(f"a cascade threshold is a confidence >= 0, got {self.threshold}")
        if self.weights is not None:
            w = tuple(float(x) for x in self.weights)
            if len(w) != len(order) or not all(x > 0 and math.isfinite(x) for x in w):
                raise UserError("cascade weights: one finite weight > 0 per member in the order")
            object.__setattr__(self, "weights", w)
        if not (self.spread > 0 and math.isfinite(self.spread)) or not self.scale > 0 or self.shrink < 0:
            raise UserError("cascade spread and scale must be > 0, shrink >= 0")

    @property
    def num_members(self) -> int:
        return len(self.order)

    def with_threshold(self, threshold: float) -> Cascade:
        return replace(self, threshold=float(threshold))

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (an infinite threshold, scale or shrink as the string 'inf')."""
        out = asdict(self)
        out["order"], out["stages"] = list(self.order), list(self.stages)
        out["weights"] = None if self.weights is None else list(self.weights)
        for key in ("threshold", "scale", "shrink"):
            if math.isinf(out[key]):
                out[key] = "inf"
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Cascade:
        values = dict(data)
        for key in ("threshold", "scale", "shrink", "spread", "center"):
            if key in values:
                values[key] = float(values[key])
        return cls(**values)


@dataclass(frozen=True)
class StagePlan:
    """The float32 constants of one stage: what `run_cascade`, `cascade_inprocess` and the ONNX graph
    all compute with."""

    index: int
    start: int
    """First position (in `order`) evaluated by this stage."""
    count: int
    """Members merged after this stage (k)."""
    final: bool
    weights: tuple[np.float32, ...]
    """Per position of this stage: the weight it is multiplied by (1 for the mean: no multiply)."""
    inv_weight_sum: np.float32
    """1 / (sum of the prefix's weights): the merged logit is the running sum times this (as
    onnxruntime's Mean multiplies the sequential sum by 1/M, so the full mean equals `fused_mM`'s)."""
    half: int = 0
    """`delta`, first stage of k >= 2 members: the prefix it compares with (k // 2); else 0."""
    half_inv_weight_sum: np.float32 = ONE
    var_coef: np.float32 = ZERO
    """se/rank: stat^2 = max(Q * inv_weight_sum - z^2, 0) * var_coef + var_const."""
    var_const: np.float32 = ZERO
    delta_const: np.float32 = ZERO
    """`delta` when there is nothing to compare with yet (one member): the constant statistic."""


def merge_scale(cascade: Cascade) -> list[float]:
    """Merge weights per position, rescaled so the first is exactly 1 (float64); all 1 for the mean."""
    if cascade.weights is None:
        return [1.0] * cascade.num_members
    w = np.asarray(cascade.weights, dtype=np.float64)
    return list(w / w[0])


def stage_plans(cascade: Cascade) -> list[StagePlan]:
    """The per-stage constants (float32; computed in float64, rounded once)."""
    w = np.asarray(merge_scale(cascade), dtype=np.float64)
    w32 = w.astype(F32)
    mean = cascade.weights is None
    total, total_sq = float(w.sum()), float((w * w).sum())
    sigma2 = cascade.spread ** 2
    plans: list[StagePlan] = []
    start = 0
    for s, k in enumerate(cascade.stages):
        wk, ak = float(w[:k].sum()), float((w[:k] ** 2).sum())
        n_eff = wk * wk / ak
        var_coef = var_const = delta_const = 0.0
        half, half_sum = 0, 1.0
        if cascade.rule == "se":
            if k == 1:
                var_const = sigma2
            else:
                var_coef = 1.0 / (n_eff - 1.0)
        elif cascade.rule == "rank":
            # sd(z_k - z_M) for exchangeable members of variance sigma^2: sigma * sqrt(d)
            d = (1.0 - wk / total) ** 2 * ak / (wk * wk) + (total_sq - ak) / (total * total)
            nu = cascade.shrink
            denom = n_eff - 1.0 + nu
            if math.isinf(nu) or denom <= 0:  # the validation spread alone (or one member, no prior)
                var_const = sigma2 * d
            else:
                var_coef, var_const = n_eff * d / denom, nu * sigma2 * d / denom
        elif s == 0:  # delta, first stage
            if k >= 2:
                half = k // 2
                half_sum = float(w[:half].sum())
            else:
                delta_const = cascade.spread
        plans.append(StagePlan(
            index=s, start=start, count=k, final=s == len(cascade.stages) - 1,
            weights=tuple(ONE if mean else w32[p] for p in range(start, k)), inv_weight_sum=F32(1.0 / wk),
            half=half, half_inv_weight_sum=F32(1.0 / half_sum), var_coef=F32(var_coef),
            var_const=F32(var_const), delta_const=F32(delta_const)))
        start = k
    return plans


def needs_squares(cascade: Cascade) -> bool:
    """Whether the rule reads the running sum of squares (rank with shrink = inf does not)."""
    return cascade.rule == "se" or (cascade.rule == "rank" and not math.isinf(cascade.shrink))


def threshold32(threshold: float) -> np.float32:
    """The threshold as the float32 the comparison uses (above float32's range: inf)."""
    with np.errstate(over="ignore"):
        return np.array(threshold, dtype=np.float64).astype(F32)[()]


# -- the arithmetic, one function per step; run_cascade, cascade_inprocess (and, op for op, the ONNX
# graph) use exactly these ------------------------------------------------------------------------------

def accumulate(total: np.ndarray | None, squares: np.ndarray | None, logit: np.ndarray, weight: np.float32,
               mean: bool, with_squares: bool) -> tuple[np.ndarray, np.ndarray | None]:
    """s += w * l; q += (w * l) * l (the first member starts the sums)."""
    logit = np.asarray(logit, dtype=F32)
    term = logit if mean else logit * weight
    total = term if total is None else total + term
    if with_squares:
        sq = term * logit
        squares = sq if squares is None else squares + sq
    return total, squares


def stage_statistic(plan: StagePlan, cascade: Cascade, merged: np.ndarray, squares: np.ndarray | None,
                    reference: np.ndarray | None) -> np.ndarray:
    """The rule's per-row statistic after a stage (float32, >= 0)."""
    if cascade.rule == "delta":
        if reference is None:  # nothing to compare with yet: a constant (as the graph computes it)
            return merged * F32(0) + plan.delta_const
        return np.abs(merged - reference)
    if squares is None:  # rank on the validation spread alone: a constant (as the graph computes it)
        stat = np.sqrt(merged * ZERO + plan.var_const)
    else:
        variance = np.maximum(squares * plan.inv_weight_sum - merged * merged, ZERO)
        stat = np.sqrt(variance * plan.var_coef + plan.var_const)
    if cascade.rule == "rank" and math.isfinite(cascade.scale):
        u = (merged - F32(cascade.center)) * F32(1.0 / cascade.scale)
        stat = stat / (u * u + F32(1))
    return stat


def stops(stat: np.ndarray, threshold: np.float32) -> np.ndarray:
    """Rows that stop: stat * tau < 1."""
    return stat * threshold < F32(1)


class StageTables:
    """Every stage's merged logit and statistic for every row (element-wise, so a row's numbers do not
    depend on which other rows go on): any threshold's outcome is a selection from these."""

    def __init__(self, logits: np.ndarray, cascade: Cascade):
        logits = np.asarray(logits)
        if logits.ndim != 2 or logits.dtype != F32:
            raise UserError(f"cascade logits must be float32 [M, N], got {logits.dtype} {logits.shape}")
        if max(cascade.order) >= logits.shape[0]:
            raise UserError(f"the cascade orders {max(cascade.order) + 1}+ members, the logits hold "
                            f"{logits.shape[0]}")
        self.cascade = cascade
        self.plans = stage_plans(cascade)
        self.counts = np.array([p.count for p in self.plans])
        n = logits.shape[1]
        self.merged = np.empty((len(self.plans), n), dtype=F32)
        self.stat = np.full((len(self.plans), n), np.inf, dtype=F32)
        total = squares = reference = None
        mean, with_sq = cascade.weights is None, needs_squares(cascade)
        for plan in self.plans:
            for offset, weight in enumerate(plan.weights):
                position = plan.start + offset
                logit = logits[cascade.order[position]]
                total, squares = accumulate(total, squares, logit, weight, mean, with_sq)
                if plan.half and position + 1 == plan.half:
                    reference = total * plan.half_inv_weight_sum
            merged = total * plan.inv_weight_sum
            self.merged[plan.index] = merged
            if not plan.final:
                self.stat[plan.index] = stage_statistic(plan, cascade, merged, squares, reference)
            reference = merged

    def select(self, threshold: float) -> tuple[np.ndarray, np.ndarray]:
        """(merged logit [N] float32, members used [N] int64) at a threshold."""
        tau = threshold32(threshold)
        with np.errstate(invalid="ignore"):
            stop = stops(self.stat, tau)
        stop[-1] = True
        stage = np.argmax(stop, axis=0)
        rows = np.arange(stop.shape[1])
        return self.merged[stage, rows], self.counts[stage]


def run_cascade(logits: np.ndarray, cascade: Cascade) -> tuple[np.ndarray, np.ndarray]:
    """The cascade on precomputed member logits float32 [M, N] (rows = member indices):
    (merged logit [N] float32, members used [N] int64)."""
    return StageTables(logits, cascade).select(cascade.threshold)


def prefix_merge(logits: np.ndarray, cascade: Cascade, count: int | None = None) -> np.ndarray:
    """The merged logit of the first `count` members of the order (default all) under the cascade's
    arithmetic: what every row gets at tau = inf (count = all) or tau = 0 (count = first stage)."""
    count = cascade.num_members if count is None else count
    w = np.asarray(merge_scale(cascade), dtype=np.float64)
    total = None
    for position in range(count):
        total, _ = accumulate(total, None, logits[cascade.order[position]], F32(w[position]),
                              cascade.weights is None, False)
    return total * F32(1.0 / float(w[:count].sum()))  # the constant stage_plans computes


def cascade_onnx(members: Sequence[Any], cascade: Cascade, *, name: str | None = None) -> Any:
    """The one-graph `cascade_mM` (an onnx.ModelProto) of member ONNX models indexed as `cascade.order`
    indexes members: `ttsrec.repository.cascade_graph.cascade_graph` on this cascade's constants."""
    from ttsrec.repository.cascade_graph import cascade_graph

    return cascade_graph(members, cascade.to_dict(), stage_plans(cascade), name=name)


def cascade_inprocess(sessions: Sequence[Any], feat_ids: np.ndarray, cascade: Cascade,
                      ) -> tuple[np.ndarray, np.ndarray]:
    """The cascade as the served graph runs it: a stage's members only on the rows still going.

    `sessions[i]` is member i's onnxruntime session (`ttsrec.ensemble.session.ort_session`), indexed as
    `cascade.order` indexes members. Returns (merged logit [B] float32, members used [B] int64).
    """
    from ttsrec.ensemble.session import run_session

    ids = np.ascontiguousarray(feat_ids, dtype=np.int64)
    if ids.ndim != 2:
        raise UserError(f"feat_ids must be int64 [B, F], got shape {ids.shape}")
    batch = ids.shape[0]
    out = np.zeros(batch, dtype=F32)
    used = np.zeros(batch, dtype=np.int64)
    rows = np.arange(batch)
    mean, with_sq = cascade.weights is None, needs_squares(cascade)
    tau = threshold32(cascade.threshold)
    total = squares = reference = None
    for plan in stage_plans(cascade):
        sub = ids[rows]
        for offset, weight in enumerate(plan.weights):
            position = plan.start + offset
            logit = run_session(sessions[cascade.order[position]], sub)[:, 0]
            total, squares = accumulate(total, squares, logit, weight, mean, with_sq)
            if plan.half and position + 1 == plan.half:
                reference = total * plan.half_inv_weight_sum
        merged = total * plan.inv_weight_sum
        if plan.final:
            out[rows], used[rows] = merged, plan.count
            break
        with np.errstate(invalid="ignore"):
            stop = stops(stage_statistic(plan, cascade, merged, squares, reference), tau)
        out[rows[stop]], used[rows[stop]] = merged[stop], plan.count
        go = ~stop
        if not go.any():
            break
        rows, total, merged = rows[go], total[go], merged[go]
        squares = squares[go] if squares is not None else None
        reference = merged
    return out, used


# -- fitting and sweeping ---------------------------------------------------------------------------------

def default_stages(num_members: int) -> list[int]:
    """1, 2, 4, 8, ... up to the number of members (which is always the last)."""
    stages, k = [], 1
    while k < num_members:
        stages.append(k)
        k *= 2
    return [*stages, num_members]


def member_spread(logits: np.ndarray) -> float:
    """Root mean square over rows of the members' sample standard deviation (logits [M, N])."""
    logits = np.asarray(logits, dtype=np.float64)
    if logits.shape[0] < 2:
        return 1.0
    spread = float(np.sqrt(np.mean(np.var(logits, axis=0, ddof=1))))
    return spread if spread > 0 and math.isfinite(spread) else 1.0


def make_cascade(logits: np.ndarray, *, order: Sequence[int] | None = None,
                 stages: Sequence[int] | None = None, rule: str = "se", threshold: float = math.inf,
                 weights: Sequence[float] | None = None, shrink: float = RANK_SHRINK) -> Cascade:
    """A cascade whose priors (spread, centre and scale of the merged logits) come from `logits`
    ([M, N], the validation split). `weights`: one per member index (as `fit_merge` returns), or None
    for the mean; members of weight 0 are left out of the order (they cannot change a merged logit)."""
    logits = np.asarray(logits)
    order = list(range(logits.shape[0])) if order is None else [int(i) for i in order]
    per_position = None
    if weights is not None:
        weights = np.asarray(weights, dtype=np.float64)
        if weights.shape != (logits.shape[0],) or np.any(weights < 0) or weights.sum() <= 0:
            raise UserError("cascade weights: one weight >= 0 per member, not all 0")
        order = [i for i in order if weights[i] > 0]
        per_position = tuple(float(weights[i]) for i in order)
    stages = default_stages(len(order)) if stages is None else [int(k) for k in stages]
    stages = [k for k in stages if k < len(order)] + [len(order)] if weights is not None else stages
    used = np.asarray(logits[order], dtype=np.float64)
    merged = (np.asarray(per_position) @ used / sum(per_position) if per_position is not None
              else used.mean(axis=0))
    q25, q50, q75 = np.percentile(merged, [25, 50, 75])
    scale = float(q75 - q25) / 2 or 1.0
    return Cascade(order=tuple(order), stages=tuple(stages), rule=rule, threshold=float(threshold),
                   weights=per_position, spread=member_spread(used), center=float(q50), scale=scale,
                   shrink=shrink)


def sweep_thresholds(tables: StageTables, points: int = SWEEP_POINTS) -> list[float]:
    """0, inf and thresholds at quantiles of the statistic (each a stopping fraction step)."""
    stat = tables.stat[:-1].ravel()
    stat = stat[np.isfinite(stat) & (stat > 0)]
    grid = {0.0, math.inf}
    if stat.size:
        q = np.quantile(stat.astype(np.float64), np.linspace(0.0, 1.0, points))
        grid |= {float(1.0 / v) for v in q if v > 0}
        grid.add(float(1.0 / stat.max()) * 0.5)
    return sorted(grid)


@dataclass
class RuleFit:
    """One rule's fit on the validation split."""

    @property
    def rule(self) -> str:
        return self.cascade.rule

    @property
    def threshold(self) -> float:
        return self.cascade.threshold

    cascade: Cascade
    """This rule's cascade at its fitted threshold."""
    avg_members: float
    valid_auc: float
    sweep: list[dict[str, float]] = field(default_factory=list)
    """Per threshold on validation: threshold, avg_members, auc."""


@dataclass
class CascadeFit:
    cascade: Cascade
    """The kept rule at its fitted threshold."""
    full_valid_auc: float
    tolerance: float
    rules: dict[str, RuleFit]
    reason: str


def fit_cascade(valid_logits: np.ndarray, valid_labels: np.ndarray, *, order: Sequence[int] | None = None,
                stages: Sequence[int] | None = None, weights: Sequence[float] | None = None,
                rules: Sequence[str] = RULES, tolerance: float = DEFAULT_TOLERANCE,
                selection: str = "stable", points: int = SWEEP_POINTS) -> CascadeFit:
    """Per rule, the cheapest threshold (fewest average members per row on validation) whose
    validation AUC is within `tolerance` of the full merge's validation AUC (`selection`: see
    `SELECTIONS`); `rank` also picks its variant (`RANK_VARIANTS`) so. The rule with the fewest members
    is kept (ties: higher validation AUC), with the reason. Reads the validation split only: logits
    float32 [M, N] (rows = member indices), labels [N]; `order`, `stages`, `weights` as `make_cascade`."""
    valid_logits = np.asarray(valid_logits, dtype=F32)
    valid_labels = np.asarray(valid_labels, dtype=np.float64)
    if valid_labels.shape != (valid_logits.shape[1],) or valid_labels.min() == valid_labels.max():
        raise UserError("fitting a cascade needs validation labels [N] with both clicks and non-clicks")
    if selection not in SELECTIONS:
        raise UserError(f"unknown threshold selection {selection!r}; choose from {', '.join(SELECTIONS)}")
    if not rules or any(rule not in RULES for rule in rules):
        raise UserError(f"cascade rules: choose from {', '.join(RULES)}")
    fits: dict[str, RuleFit] = {}
    full_auc = None
    for rule in rules:
        variants = RANK_VARIANTS if rule == "rank" else ((RANK_SHRINK, 1.0),)
        best_fit = None
        for shrink, width in variants:
            cascade = make_cascade(valid_logits, order=order, stages=stages, rule=rule, weights=weights,
                                   shrink=shrink)
            cascade = replace(cascade, scale=cascade.scale * width)
            tables = StageTables(valid_logits, cascade)
            if full_auc is None:
                full_auc = auc(valid_labels, tables.merged[-1])
            sweep = []
            for tau in sweep_thresholds(tables, points):
                merged, used = tables.select(tau)
                sweep.append({"threshold": tau, "avg_members": float(used.mean()),
                              "auc": full_auc if math.isinf(tau) else auc(valid_labels, merged)})
            best = pick_threshold(sweep, full_auc - tolerance, selection)
            fit = RuleFit(cascade.with_threshold(best["threshold"]), best["avg_members"], best["auc"], sweep)
            if best_fit is None or _cost(fit) < _cost(best_fit):
                best_fit = fit
        fits[rule] = best_fit
    ranked = sorted(fits.values(), key=_cost)
    kept = ranked[0]
    others = "; ".join(f"{f.rule} needs {f.avg_members:.3f} (valid AUC {f.valid_auc:.5f})"
                       for f in ranked[1:])
    variant = (f", shrink {kept.cascade.shrink:g}, density width {kept.cascade.scale:.3g}"
               if kept.rule == "rank" else "")
    reason = (f"{kept.rule}: fewest members per row on validation within {tolerance:g} AUC of the full "
              f"merge ({full_auc:.5f}): {kept.avg_members:.3f} members/row at threshold "
              f"{kept.threshold:.4g}{variant} (valid AUC {kept.valid_auc:.5f})"
              + (f"; {others}" if others else ""))
    return CascadeFit(kept.cascade, float(full_auc), tolerance, fits, reason)


def _cost(fit: RuleFit) -> tuple[float, float]:
    return fit.avg_members, -fit.valid_auc


def pick_threshold(sweep: list[dict[str, float]], floor: float, selection: str) -> dict[str, float]:
    """The swept point a fit keeps (the full merge, tau = inf, always qualifies)."""
    by_cost = sorted(sweep, key=lambda r: (r["avg_members"], -r["auc"], r["threshold"]))
    if selection == "stable":
        chosen = by_cost[-1]
        for r in reversed(by_cost):
            if r["auc"] < floor:
                break
            chosen = r
        return chosen
    return next(r for r in by_cost if r["auc"] >= floor)


def cascade_frontier(logits: np.ndarray, labels: np.ndarray, cascade: Cascade,
                     thresholds: Sequence[float] | None = None, *,
                     member_costs: Sequence[float] | None = None) -> list[dict[str, float]]:
    """Per threshold (default: a sweep of this split's statistics, plus 0 and inf) on one split:
    threshold, avg_members (members evaluated per row), auc, logloss, and with `member_costs` (one per
    member index, e.g. MACs per sample) avg_cost."""
    logits = np.asarray(logits, dtype=F32)
    tables = StageTables(logits, cascade)
    thresholds = sweep_thresholds(tables) if thresholds is None else list(thresholds)
    cumulative = None
    if member_costs is not None:
        per_position = np.asarray([member_costs[i] for i in cascade.order], dtype=np.float64)
        cumulative = np.cumsum(per_position)[tables.counts - 1]
    rows = []
    for tau in thresholds:
        merged, used = tables.select(tau)
        row = {"threshold": float(tau), "avg_members": float(used.mean()), **binary_metrics(labels, merged)}
        if cumulative is not None:
            row["avg_cost"] = float(cumulative[np.searchsorted(tables.counts, used)].mean())
        rows.append(row)
    return rows
