"""Paired statistics (aerestore.stats)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as sstats

from aerestore import stats as S


def test_share_better_ties_count_half():
    a = [1.0, 2.0, 3.0, 4.0, 5.0]
    b = [0.0, 2.0, 2.0, math.nan, 9.0]  # win, tie, win, (dropped), loss
    assert S.share_better(a, b) == pytest.approx(2.5 / 4)
    assert S.share_better(a, b, higher_is_better=False) == pytest.approx(1.5 / 4)
    # inf compares as a number: a perfect PSNR beats a finite one, two perfect ones tie
    assert S.share_better([math.inf, math.inf], [30.0, math.inf]) == pytest.approx(0.75)
    assert math.isnan(S.share_better([math.nan], [1.0]))
    with pytest.raises(ValueError, match="pair up"):
        S.share_better([1.0, 2.0], [1.0])


def test_wilcoxon_clearly_different():
    rng = np.random.default_rng(0)
    b = rng.normal(30, 2, 40)
    a = b + 1.0 + rng.normal(0, 0.1, 40)
    res = S.wilcoxon_paired(a, b)
    assert res["n"] == 40 and res["n_zero"] == 0
    assert res["p_value"] < 1e-6
    assert res["median_difference"] == pytest.approx(1.0, abs=0.1)


def test_wilcoxon_identical_samples_give_p_one():
    a = np.linspace(20, 30, 12)
    res = S.wilcoxon_paired(a, a.copy())
    assert res["p_value"] == 1.0 and res["n"] == 12 and res["n_zero"] == 12
    assert res["statistic"] == pytest.approx(12 * 13 / 4)


def test_wilcoxon_drops_non_finite_and_matches_scipy():
    rng = np.random.default_rng(1)
    b = rng.normal(0, 1, 25)
    a = b + rng.normal(0.3, 1, 25)
    a[3] = b[3]  # a zero difference: kept (zsplit)
    a_ext = np.concatenate([a, [math.inf, 1.0, math.nan]])
    b_ext = np.concatenate([b, [30.0, math.inf, 2.0]])
    res = S.wilcoxon_paired(a_ext, b_ext)
    ref = sstats.wilcoxon(a - b, zero_method="zsplit")
    assert res["n"] == 25 and res["n_zero"] == 1
    assert res["p_value"] == pytest.approx(ref.pvalue)
    assert res["statistic"] == pytest.approx(ref.statistic)


def test_wilcoxon_no_pairs():
    res = S.wilcoxon_paired([math.inf], [1.0])
    assert res["n"] == 0 and math.isnan(res["p_value"])


def test_mean_finite_and_summary():
    v = [1.0, math.inf, math.nan, 3.0, -math.inf]
    assert S.mean_finite(v) == 2.0
    assert math.isnan(S.mean_finite([math.inf, math.nan]))
    s = S.summary(v)
    assert (s["n"], s["n_finite"], s["n_inf"], s["n_neg_inf"], s["n_nan"]) == (5, 2, 1, 1, 1)
    assert (s["mean"], s["median"], s["min"], s["max"], s["std"]) == (2.0, 2.0, 1.0, 3.0, 1.0)
    assert math.isnan(S.summary([])["mean"])


def test_holm_by_hand():
    # sorted 0.01, 0.03, 0.04 with m = 3: 0.03, 0.06, max(0.06, 0.04) = 0.06
    out = S.holm([0.01, 0.04, 0.03, math.nan])
    np.testing.assert_allclose(out[:3], [0.03, 0.06, 0.06])
    assert math.isnan(out[3])
    np.testing.assert_allclose(S.holm([0.5, 0.9]), [1.0, 1.0])


def test_paired_comparison_combines():
    a, b = [3.0, 2.0, 5.0, 7.0], [1.0, 2.0, 4.0, 8.0]
    res = S.paired_comparison(a, b)
    assert res["share_better"] == pytest.approx(2.5 / 4)
    assert res["mean_a"] == pytest.approx(4.25) and res["mean_b"] == pytest.approx(3.75)
    assert res["n"] == 4
