"""One direction of "better" per metric, one paired comparison: the evaluate stage, `aerestore
seeds` and the claims report compare the same per-image values the same way."""

from __future__ import annotations

import ast
from pathlib import Path

import numpy as np
import pytest

from aerestore import evaluate as E
from aerestore import metrics as M
from aerestore import stats as S
from aerestore.studies import analysis as A
from aerestore.studies import claims as C
from aerestore.studies import seeds as SD

SRC = Path(__file__).resolve().parents[1] / "src" / "aerestore"
DIRECTION_NAMES = {"HIGHER_IS_BETTER", "CLOSER_TO_ZERO_IS_BETTER", "ABSOLUTE", "base_metric", "direction",
                   "_base_metric", "compared_values"}


def test_the_direction_of_a_metric_is_defined_in_metrics_only():
    """No other module of the library keeps a table of directions or its own base-metric rule."""
    found = {}
    for path in SRC.rglob("*.py"):
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
                names = {node.name}
            elif isinstance(node, (ast.Assign, ast.AnnAssign)):
                targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                names = {t.id for t in targets if isinstance(t, ast.Name)}
            else:
                continue
            for name in names & DIRECTION_NAMES:
                found.setdefault(name, []).append(path.relative_to(SRC).as_posix())
    assert found == {name: ["metrics.py"] for name in ("HIGHER_IS_BETTER", "CLOSER_TO_ZERO_IS_BETTER",
                                                       "base_metric", "direction", "compared_values")}


def test_every_compared_metric_has_a_direction_from_the_one_table():
    # the evaluate stage's summary (multi vs single, the ensemble control) and `aerestore seeds`
    for key in (*E.COMPARED, *E.REGION_KEYS, *SD.HEADLINE, SD.Targets().blur_metric, SD.Targets().clean_metric):
        assert M.direction(key) is not None, key
        assert M.base_metric(key) in M.HIGHER_IS_BETTER
    # the claims report: a measure that is one of the image metrics is one of the table's, and
    # |value| is taken exactly where the table says closer to 0 is better (claim 5's signed
    # blur % aside: "blurrier" has a direction of its own)
    for claim in C.CLAIMS:
        for m in claim.measures:
            if m.metric in M.METRICS:
                assert M.direction(m.metric) is not None, (claim.number, m.metric)
            if m.absolute:
                assert m.metric in M.CLOSER_TO_ZERO_IS_BETTER, (claim.number, m.metric)
    assert M.direction("blur_percent") is False and M.CLOSER_TO_ZERO_IS_BETTER == ("blur_percent",)
    assert M.direction("laplacian_var") is None and M.direction("hf_share_blur") is None


def _arrays(seed: int, n: int = 40) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    a, b = rng.normal(20, 3, n), rng.normal(20, 3, n)
    a[3], b[7] = np.nan, np.nan  # an image without the region
    a[5] = b[5]  # a tie
    return a, b


@pytest.mark.parametrize("metric", ["psnr", "ssim_clean", "blur_percent"])
def test_seeds_report_and_evaluate_compare_alike(metric):
    multi, single = _arrays(1)
    if metric == "blur_percent":
        multi, single = multi - 20, single - 20  # signed blur %: both sides of 0
    c = S.paired_comparison(M.compared_values(metric, multi), M.compared_values(metric, single),
                            higher_is_better=bool(M.direction(metric)))
    evaluated = E.compare({k: multi for k in E.COMPARED + E.REGION_KEYS},
                          {k: single for k in E.COMPARED + E.REGION_KEYS})[metric]
    seeds = SD.compare_metric(metric, multi, single)
    # the report: multi vs single as one seed's arms, claimed direction = better
    better = +1 if M.direction(metric) else -1
    measure = C.Measure(metric, ((1.0, "x", "multi"), (-1.0, "x", "single")), better, "", metric,
                        absolute=metric in M.CLOSER_TO_ZERO_IS_BETTER)
    results = {("x", 1): {"items": {"multi": {metric: list(multi)}, "single": {metric: list(single)}}}}
    reported = A.analyse_measure(measure, {1: A.contrast(measure, results, 1)})
    assert evaluated["share"] == seeds["share"] == reported["share_claimed_direction"] == c["share_better"]
    assert evaluated["p_value"] == seeds["p_value"] == reported["p_value"] == c["p_value"]
    assert seeds["mean_diff"] == c["mean_difference"]
    assert reported["effect"] == pytest.approx(c["mean_difference"])
    if metric == "blur_percent":  # compared as |blur %|: the signed values would rank otherwise
        assert seeds["share"] != S.share_better(multi, single, higher_is_better=False)
