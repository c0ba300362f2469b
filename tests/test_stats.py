"""The verdict statistics (vgtune.analysis.stats): t intervals pinned to scipy, Holm and BH by hand, MDEs."""

import math

import numpy as np
import pytest
from scipy import stats as sps

from vgtune.analysis import stats


def test_paired_interval_and_p_are_scipys_ttest_rel():
    mitigated, baseline = np.array([0.61, 0.72, 0.55, 0.68, 0.70]), np.array([0.50, 0.52, 0.57, 0.49, 0.60])
    test = stats.Test(diffs=mitigated - baseline)
    ref = sps.ttest_rel(mitigated, baseline)
    assert test.p_value() == pytest.approx(ref.pvalue, rel=1e-12)
    for alpha in (0.05, 0.01):
        low, high = test.interval(alpha)
        ci = ref.confidence_interval(confidence_level=1 - alpha)
        assert (low, high) == pytest.approx((ci.low, ci.high), rel=1e-12)


def test_two_seeds_give_the_honest_wide_interval_not_their_range():
    low, high = stats.Test(diffs=np.array([0.03, 0.07])).interval()
    assert low == pytest.approx(-0.204, abs=1e-3) and high == pytest.approx(0.304, abs=1e-3)


def test_unpaired_interval_is_welchs():
    a, b = np.array([0.8, 0.9, 0.85, 0.95]), np.array([0.1, 0.2, 0.15])
    ci = sps.ttest_ind(a, b, equal_var=False).confidence_interval()
    assert stats.Test(a=a, b=b).interval() == pytest.approx((ci.low, ci.high))


@pytest.mark.parametrize("test", [stats.Test(diffs=np.array([0.4])),
                                  stats.Test(a=np.array([1.0, 2.0]), b=np.array([0.5]))])
def test_one_seed_is_untestable(test):
    assert math.isnan(test.p_value()) and all(math.isnan(v) for v in test.interval()) and math.isnan(test.mde())


def test_identical_differences_get_the_exact_sign_test_not_a_t_test():
    same = stats.Test(diffs=np.full(10, 0.3))
    assert same.p_value() == pytest.approx(2 ** -9)  # 10 equal signs under no effect: 2 * 2^-10
    assert same.interval(0.01) == (0.3, 0.3)  # 2^-9 < 0.01: the median is 0.3 at that level
    assert same.interval(0.001) == (-math.inf, math.inf)  # 2^-9 > 0.001: no interval that sure
    assert stats.Test(diffs=np.full(5, 0.0)).p_value() == 1.0
    # One ulp of noise no longer turns the same data from "nothing" into p = 1e-141: both are decided alike.
    jitter = stats.Test(diffs=np.full(10, 0.3) + np.r_[1e-12, np.zeros(9)])
    assert jitter.interval(0.01)[0] > 0 and same.interval(0.01)[0] > 0


def test_holm_by_hand():
    # m = 4, sorted p 0.001 < 0.010 < 0.020 < 0.300: steps test at 0.0125, 0.0167, 0.025, 0.05.
    # Adjusted: 4*0.001 = 0.004, max(0.004, 3*0.010) = 0.03, max(0.03, 2*0.020) = 0.04, max(0.04, 0.3) = 0.3.
    p = np.array([0.020, 0.001, 0.300, 0.010])
    adjusted, levels = stats.adjust(p, "holm")
    assert adjusted == pytest.approx([0.04, 0.004, 0.3, 0.03])
    assert levels == pytest.approx([0.025, 0.0125, 0.05, 0.05 / 3])


def test_holm_levels_after_the_first_kept_hypothesis_are_that_steps():
    # 0.001 < 0.0125 rejected; 0.02 > 0.05/3 kept: it and every later one are drawn at 0.05/3.
    adjusted, levels = stats.adjust(np.array([0.001, 0.02, 0.021, 0.9]), "holm")
    assert levels == pytest.approx([0.0125, 0.05 / 3, 0.05 / 3, 0.05 / 3])
    assert (adjusted < 0.05).tolist() == [True, False, False, False]


def test_bh_by_hand():
    # m = 4: p_(k) <= k * 0.05 / 4 holds up to k* = 3 (0.03 <= 0.0375); the rest at (k* + 1) * 0.0125 = 0.05.
    p = np.array([0.001, 0.02, 0.03, 0.5])
    adjusted, levels = stats.adjust(p, "bh")
    assert adjusted == pytest.approx([0.004, 0.04, 0.04, 0.5])
    assert levels == pytest.approx([0.0375, 0.0375, 0.0375, 0.05])


def test_nan_p_values_stay_out_of_the_family():
    adjusted, levels = stats.adjust(np.array([0.01, np.nan, 0.04]), "holm")
    assert adjusted[0] == pytest.approx(0.02) and math.isnan(adjusted[1]) and math.isnan(levels[1])


def test_unknown_correction_names_the_valid_ones():
    with pytest.raises(ValueError, match="holm, bh, none"):
        stats.adjust(np.array([0.1]), "bonferroni")


@pytest.mark.parametrize("correction", ["holm", "bh", "none"])
def test_an_interval_excludes_zero_exactly_when_the_verdict_is_helps_or_hurts(correction):
    rng = np.random.default_rng(4)
    tests = [stats.Test(diffs=rng.normal(effect, 0.05, 5)) for effect in np.linspace(-0.12, 0.12, 25)]
    adjusted, levels = stats.adjust(np.array([t.p_value() for t in tests]), correction)
    for test, p, level in zip(tests, adjusted, levels):
        low, high = test.interval(level)
        assert (p < 0.05) == (low > 0 or high < 0)


@pytest.mark.parametrize("n,alpha,d", [(3, 0.0025, 14.66), (5, 0.001, 4.78), (10, 0.05, 0.996)])
def test_detectable_effect_has_the_stated_power(n, alpha, d):
    # d by a direct search over scipy's noncentral t (statsmodels' solver returns 5.5 and 3.81 for the first two).
    found = stats._standard_mde(n, 0, alpha, 0.8)
    assert found == pytest.approx(d, rel=2e-3) and stats.t_power(found, n, 0, alpha) == pytest.approx(0.8, abs=1e-6)
    diffs = np.random.default_rng(1).normal(0.1, 0.05, n)
    assert stats.Test(diffs=diffs).mde(alpha) == pytest.approx(found * np.std(diffs, ddof=1))


def test_detectable_effect_shrinks_with_seeds_and_grows_with_the_adjustment():
    rng = np.random.default_rng(0)
    noise = rng.normal(0, 0.05, 20)
    few, many = stats.Test(diffs=noise[:3]), stats.Test(diffs=noise)
    assert many.mde() < few.mde()
    assert few.mde(alpha=0.05 / 28) > few.mde()
