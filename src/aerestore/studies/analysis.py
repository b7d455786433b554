"""The claims report's statistics: each measure's effect, interval, p-value and verdict.

For each measure of a claim (:class:`aerestore.studies.claims.Measure`):

* the **effect** is a contrast of the arms' per-item values (``sum_k w_k * value[arm_k]``,
  e.g. ``psnr[conv_ae.multi] - psnr[conv_ae.single]``, or for claim 6 the second difference
  ``(psnr[2000] - psnr[1000]) - (psnr[1000] - psnr[500])``), averaged over the items of each
  seed, then over the seeds;
* its **95 % confidence interval** is a Student-t interval over the per-seed means
  (:func:`aerestore.stats.t_interval`): the seeds are the independent units (one training run
  each), and the spread of their means holds both the training noise and the choice of test
  images. Its error rate is known: on simulated claims with no true effect
  (:func:`null_verdict_rates`, tested in ``tests/test_report.py``) it says "holds" and "does
  not hold" about 2.5 % of the time each. It replaced (issue 23) a two-level bootstrap over 3
  seeds (:func:`aerestore.stats.bootstrap_ci`), which said each 13-15 % of the time;
* the **p-value** is a paired two-sided Wilcoxon signed-rank test on the per-item values
  pooled over the seeds (:func:`aerestore.stats.wilcoxon_paired`, the test ``aerestore
  seeds`` uses). Items of one seed share a training run, so this p-value overstates the
  evidence (it ignores the seed-to-seed spread); the verdict uses the t interval, not the
  p-value;
* the **verdict** (:func:`verdict`): a directional claim (``sign`` +1 or -1) *holds* when the
  interval lies entirely on the claimed side of 0; it *does not hold* when the interval lies
  entirely on the other side, or (for a claim with a size, ``size > 0``) entirely below the
  claimed size in the claimed direction; otherwise it is *inconclusive*. A "does not help"
  claim (``kind="none"``) holds when the interval's upper end (in the direction of "helps")
  is below the margin ``size``, does not hold when its lower end is above 0 (it helps), else
  inconclusive. A claim with two measures (claim 5: blurrier *and* colour shifts) holds when
  both hold and does not hold when either does not.

The per-item comparison of the pooled arms (p-value, share of items in the claimed direction)
is :func:`aerestore.stats.paired_comparison`, the one the evaluate stage and ``aerestore
seeds`` use.
"""

from __future__ import annotations

import math

import numpy as np

from .. import stats as S
from .claims import ARMS, LEVEL, Claim, Measure


def verdict(lo: float, hi: float, sign: int, size: float = 0.0, kind: str = "direction") -> str:
    """``holds`` / ``does not hold`` / ``inconclusive`` from the interval [lo, hi] of the effect
    (module docstring)."""
    if not (np.isfinite(lo) and np.isfinite(hi)):
        return "inconclusive"
    a, b = sorted((sign * lo, sign * hi))  # the interval in the claimed direction
    if kind == "none":
        if b < size:
            return "holds"
        if a > 0:
            return "does not hold"
        return "inconclusive"
    if b < 0 or (size > 0 and b < size):
        return "does not hold"
    if a > 0:
        return "holds"
    return "inconclusive"


def combine(verdicts: list[str]) -> str:
    """A claim of several measures: holds if all hold, does not hold if any does not."""
    if any(v == "does not hold" for v in verdicts):
        return "does not hold"
    if verdicts and all(v == "holds" for v in verdicts):
        return "holds"
    return "inconclusive"


def contrast(measure: Measure, results: dict[tuple[str, int], dict], seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-item effect of one seed, and the two sides (positive and negative terms) for the
    paired test."""
    pos = neg = 0.0
    for w, arm, row in measure.terms:
        values = results[(arm, seed)]["items"][row].get(measure.metric)
        if values is None:
            raise KeyError(f"{arm} seed {seed}: row {row!r} has no measure {measure.metric!r}")
        v = np.asarray([math.nan if x is None else x for x in values], dtype=np.float64)
        if measure.absolute:
            v = np.abs(v)
        if w > 0:
            pos = pos + w * v
        else:
            neg = neg - w * v
    return pos - neg, np.asarray(pos, dtype=np.float64), np.asarray(neg, dtype=np.float64)


def analyse_measure(measure: Measure, per_seed: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]]) -> dict:
    """Effect, t interval over the seeds, pooled Wilcoxon p-value, share of items in the
    claimed direction, per-seed means, sample sizes (``n_seeds`` with a finite mean, and the
    finite ``items_per_seed``), verdict of one measure from ``{seed: (effect, pos, neg)}``."""
    seeds = sorted(per_seed)
    diffs = [per_seed[s][0] for s in seeds]
    means = [float(np.nanmean(d)) if np.isfinite(d).any() else math.nan for d in diffs]
    effect = float(np.nanmean(means)) if np.isfinite(means).any() else math.nan
    lo, hi = S.t_interval(diffs, level=LEVEL)
    items_per_seed = {str(s): int(np.isfinite(d).sum()) for s, d in zip(seeds, diffs)}
    pos = np.concatenate([per_seed[s][1] for s in seeds])
    neg = np.concatenate([per_seed[s][2] for s in seeds])
    c = S.paired_comparison(pos, neg, higher_is_better=measure.sign > 0)  # share: in the claimed direction
    return {
        "metric": measure.metric, "label": measure.label, "unit": measure.unit,
        "sign": measure.sign, "size": measure.size, "kind": measure.kind,
        "effect": effect, "ci": [lo, hi], "p_value": float(c["p_value"]),
        "share_claimed_direction": c["share_better"], "n_items": int(sum(np.isfinite(d).sum() for d in diffs)),
        "n_seeds": int(np.isfinite(means).sum()), "items_per_seed": items_per_seed,
        "absolute": measure.absolute,
        "per_seed": {str(s): m for s, m in zip(seeds, means)},
        "verdict": verdict(lo, hi, measure.sign, measure.size, measure.kind),
    }


def analyse(claims: list[Claim], results: dict[tuple[str, int], dict], seeds: list[int]) -> list[dict]:
    rows = []
    for c in claims:
        measures = [analyse_measure(m, {s: contrast(m, results, s) for s in seeds}) for m in c.measures]
        rows.append({
            "claim": c.number, "text": c.text, "study": c.study, "source": c.source, "setting": c.setting,
            "arms": {a: ARMS[a].overrides for a in c.arms}, "seeds": list(seeds), "measures": measures,
            "verdict": combine([m["verdict"] for m in measures]),
            "train_seconds": round(sum(results[(a, s)].get("seconds", 0) for a in c.arms for s in seeds), 1),
        })
    return rows


# ------------------------------------------------------------------------ calibration
def null_verdict_rates(n_claims: int = 300, n_seeds: int = 3, n_items: int = 50, seed_sd: float = 1.0,
                       item_sd: float = 1.0, interval=None, sign: int = +1, size: float = 0.0,
                       kind: str = "direction", effect: float = 0.0, rng_seed: int = 0) -> dict[str, float]:
    """Share of each verdict on ``n_claims`` simulated claims whose true effect is ``effect``
    (0: no effect): per seed a training offset ``N(0, seed_sd)``, per item ``N(0, item_sd)``.
    ``interval(per_seed) -> (lo, hi)`` is the rule under test (default
    :func:`aerestore.stats.t_interval`). With no true effect, "holds" and "does not hold" are
    both false verdicts; a calibrated 95 % rule gives each about 2.5 %."""
    interval = interval or (lambda groups: S.t_interval(groups, level=LEVEL))
    rng = np.random.default_rng(rng_seed)
    counts = {"holds": 0, "does not hold": 0, "inconclusive": 0}
    for _ in range(n_claims):
        groups = [effect + rng.normal(0.0, seed_sd) + rng.normal(0.0, item_sd, n_items) for _ in range(n_seeds)]
        counts[verdict(*interval(groups), sign, size, kind)] += 1
    return {k: v / n_claims for k, v in counts.items()}
