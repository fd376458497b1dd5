"""ROC, EER, TAR at FAR and the threshold τ against brute-force definitions on hand-made distance sets."""

import numpy as np
import pytest

from retrieval.errors import RetrievalError
from retrieval.verification import (
    NoThresholdError,
    PairDistances,
    Verdict,
    distance_and_threshold,
    equal_error_rate,
    far_levels,
    pair_distances,
    rates_at,
    roc_curve,
    summarise,
    threshold_at_far,
)


def brute_rates(tau, positive, negative):
    """FAR = share of different-class pairs with d ≤ τ; FRR = share of same-class pairs with d > τ."""
    far = sum(1 for d in negative if d <= tau) / len(negative)
    frr = sum(1 for d in positive if d > tau) / len(positive)
    return far, frr


def candidates(positive, negative):
    values = sorted(set(positive) | set(negative))
    mids = [(a + b) / 2 for a, b in zip(values, values[1:])]
    return [values[0] - 1, *values, *mids, values[-1] + 1]


def test_eer_where_far_meets_frr_at_an_observed_threshold():
    positive, negative = [0.1, 0.2, 0.3, 0.4], [0.35, 0.5, 0.6, 0.7]
    assert brute_rates(0.35, positive, negative) == (0.25, 0.25)
    assert equal_error_rate(positive, negative) == pytest.approx(0.25)


def test_eer_of_separable_sets_is_zero_and_of_identical_sets_is_one_half():
    assert equal_error_rate([0.1, 0.2], [0.5, 0.9]) == 0.0
    assert equal_error_rate([0.5, 0.5], [0.5, 0.5]) == pytest.approx(0.5)
    assert equal_error_rate([0.3, 0.6], [0.3, 0.6]) == pytest.approx(0.5)


def test_eer_interpolates_between_roc_points():
    # thresholds 0.2: FAR 0, FRR 1/2; 0.4: FAR 1/2, FRR 1/2 ... gap goes -1/2 -> 0 exactly at 0.4? build a crossing
    positive, negative = [0.2, 0.8], [0.4, 0.6]
    # points: (-inf: 0,1) (0.2: 0, .5) (0.4: .5,.5) -> crossing exactly at 0.4: EER 0.5
    assert equal_error_rate(positive, negative) == pytest.approx(0.5)
    positive, negative = [0.2, 0.3, 0.9], [0.25, 0.5]
    # (0.2: 0, 2/3) (0.25: 1/2, 2/3) (0.3: 1/2, 1/3): gap -2/3 -> -1/6 -> +1/6: cross half-way, FAR 1/2
    assert equal_error_rate(positive, negative) == pytest.approx(0.5)


def test_roc_matches_brute_force_counts_with_ties():
    rng = np.random.default_rng(0)
    positive = np.round(rng.uniform(0, 1, 30), 1)
    negative = np.round(rng.uniform(0.3, 1.5, 40), 1)  # rounding makes ties within and across the sets
    roc = roc_curve(positive, negative)
    assert roc["far"][0] == 0 and roc["tar"][0] == 0 and roc["far"][-1] == 1 and roc["tar"][-1] == 1
    for tau, far, tar in zip(roc["threshold"][1:], roc["far"][1:], roc["tar"][1:]):
        b_far, b_frr = brute_rates(tau, positive, negative)
        assert far == pytest.approx(b_far) and tar == pytest.approx(1 - b_frr)
        assert rates_at(tau, positive, negative) == pytest.approx((b_far, b_frr))


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("target", [0.01, 0.1, 0.25])
def test_threshold_is_the_best_tar_whose_far_stays_within_the_target(seed, target):
    rng = np.random.default_rng(seed)
    positive = np.round(rng.normal(0.5, 0.2, 50), 2)
    negative = np.round(rng.normal(1.0, 0.2, 120), 2)
    chosen = threshold_at_far(positive, negative, target)
    far, frr = brute_rates(chosen.threshold, positive, negative)
    assert far <= target and chosen.far == pytest.approx(far) and chosen.tar == pytest.approx(1 - frr)
    best = max(1 - brute_rates(t, positive, negative)[1] for t in candidates(positive, negative)
               if brute_rates(t, positive, negative)[0] <= target)
    assert chosen.tar == pytest.approx(best)
    assert (chosen.n_positive_pairs, chosen.n_negative_pairs) == (50, 120)


def test_threshold_falls_half_way_between_observed_distances():
    chosen = threshold_at_far([0.1, 0.2], [0.3, 0.5, 0.7, 0.9], 0.25)  # one false accept of four allowed
    assert chosen.threshold == pytest.approx(0.4) and chosen.far == 0.25 and chosen.tar == 1.0
    chosen = threshold_at_far([0.1, 0.2], [0.3, 0.5, 0.7, 0.9], 0.1)  # none allowed
    assert chosen.threshold == pytest.approx(0.25) and chosen.far == 0.0


def test_no_threshold_meets_a_far_below_the_share_of_different_class_pairs_at_distance_zero():
    positive, negative = [0.0, 0.2], [0.0, 0.5, 0.7, 0.9]  # one different-class pair at 0: the same image twice
    with pytest.raises(NoThresholdError, match="1 of the 4 different-class pairs lie at distance 0"):
        threshold_at_far(positive, negative, 0.1)
    chosen = threshold_at_far(positive, negative, 0.25)  # that one pair is allowed: τ may be ≥ 0
    assert chosen.threshold == pytest.approx(0.35) and chosen.far == 0.25
    summary = summarise(PairDistances(np.array(positive * 60), np.array(negative * 250)), target_far=0.1)
    assert summary.threshold is None and "distance 0" in summary.no_threshold
    assert summary.tar_at_far == {"0.1": 0.0, "0.01": 0.0}  # only accepting nothing keeps within those FARs


def test_far_levels_need_ten_over_f_negative_pairs():
    assert far_levels(99) == [] and far_levels(100) == [0.1]
    assert far_levels(1000) == [0.1, 0.01] and far_levels(10_000) == [0.1, 0.01, 0.001]


def test_summary_reports_measurable_rates_and_none_for_the_rest():
    rng = np.random.default_rng(1)
    pairs = PairDistances(rng.normal(0.5, 0.1, 200), rng.normal(1.0, 0.1, 500))
    summary = summarise(pairs, target_far=0.1)
    assert set(summary.tar_at_far) == {"0.1", "0.01"} and summary.tar_at_far["0.01"] is None
    assert summary.tar_at_far["0.1"] == pytest.approx(threshold_at_far(pairs.positive, pairs.negative, 0.1).tar)
    assert summary.threshold.far <= 0.1 and 0 <= summary.eer < 0.1
    assert summary.metrics()["n_negative_pairs"] == 500
    empty = summarise(PairDistances(np.array([]), np.array([0.3])))
    assert empty.eer is None and empty.threshold is None and empty.tar_at_far == {"0.1": None, "0.01": None}


def test_pair_distances_match_a_loop_over_pairs_leave_one_out_and_cross_set():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(7, 4)).astype(np.float32)
    y = np.array([0, 0, 1, 1, 1, 2, 0])
    unit = x / np.linalg.norm(x, axis=1, keepdims=True)
    pairs = pair_distances(x, y)
    pos = [np.linalg.norm(unit[i] - unit[j]) for i in range(7) for j in range(i + 1, 7) if y[i] == y[j]]
    neg = [np.linalg.norm(unit[i] - unit[j]) for i in range(7) for j in range(i + 1, 7) if y[i] != y[j]]
    np.testing.assert_allclose(sorted(pairs.positive), sorted(pos), atol=1e-5)
    np.testing.assert_allclose(sorted(pairs.negative), sorted(neg), atol=1e-5)
    g, gy = x[:3], y[:3]
    cross = pair_distances(x, y, g, gy)
    assert cross.n_positive + cross.n_negative == 7 * 3
    assert cross.n_positive == sum(int(y[i] == gy[j]) for i in range(7) for j in range(3))
    sampled = pair_distances(x, y, max_pairs=10)
    assert sampled.sampled and sampled.n_positive + sampled.n_negative == 10


def test_bad_inputs_are_one_line_errors():
    with pytest.raises(RetrievalError, match="same-class and different-class"):
        equal_error_rate([], [0.5])
    with pytest.raises(RetrievalError, match="finite"):
        roc_curve([0.1, np.nan], [0.5])
    with pytest.raises(RetrievalError, match="target-far"):
        threshold_at_far([0.1], [0.5], 1.5)


def test_roc_points_keep_the_best_tar_on_a_log_far_grid_and_match_counting():
    from retrieval.verification import roc_points

    rng = np.random.default_rng(3)
    positive, negative = rng.normal(0.5, 0.2, 300), rng.normal(1.0, 0.2, 3000)
    points = roc_points(positive, negative, max_points=50)
    assert len(points) <= 52 and points[0] == {"threshold": None, "far": 0.0, "tar": 0.0, "frr": 1.0}
    assert points[-1]["far"] == 1.0 and points[-1]["tar"] == 1.0
    for p in points[1:]:
        far, frr = brute_rates(p["threshold"], positive, negative)
        assert p["far"] == pytest.approx(far) and p["tar"] == pytest.approx(1 - frr) and p["frr"] == pytest.approx(frr)
    full = roc_curve(positive, negative)
    for g in np.logspace(np.log10(1 / 3000), 0, 50):  # at each grid FAR, the thinned curve has the full ROC's best TAR
        best = full["tar"][full["far"] <= g].max()
        assert max(p["tar"] for p in points if p["far"] <= g) == pytest.approx(best)


def test_verdicts_and_stored_thresholds_read_as_one_line():
    from retrieval.verification import Verdict, describe_threshold, percent

    assert [percent(f) for f in (0.01, 0.001, 0.1, 0.125)] == ["1 %", "0.1 %", "10 %", "12.5 %"]
    assert Verdict(True, "anna", 0.31, 0.52).describe(0.01) == "match: anna, d = 0.310 ≤ τ = 0.520 at FAR 1 %"
    assert Verdict(False, None, 0.8, 0.52).describe(0.01) == "no match in the gallery: the nearest is at d = 0.800 > τ = 0.520 at FAR 1 %"
    assert "retrieval calibrate" in Verdict(None, None, 0.8, None).describe()
    # a gallery without labels: a match is named by its nearest item when the caller gives it
    assert Verdict(True, None, 0.31, 0.52).describe(0.01, nearest="party/003.jpg · face 2") == \
        "match: party/003.jpg · face 2, d = 0.310 ≤ τ = 0.520 at FAR 1 %"
    assert Verdict(True, None, 0.31, 0.52).describe() == "match: (unlabelled), d = 0.310 ≤ τ = 0.520"
    assert Verdict(True, "anna", 0.31, 0.52).describe(nearest="x.jpg").startswith("match: anna,")
    assert Verdict(False, None, 0.8, 0.52).describe(nearest="x.jpg").startswith("no match in the gallery")
    stored = {"threshold": 0.52, "target_far": 0.01, "far": 0.0098, "tar": 0.81, "eer": 0.06, "n_positive_pairs": 40,
              "n_negative_pairs": 1200, "pairs": "validation classes, epoch 3"}
    assert describe_threshold(stored) == ("threshold τ = 0.5200 at FAR 0.0098 (target 0.01), TAR 0.8100, EER 0.0600 on 40 "
                                          "same-class and 1200 different-class pairs (validation classes, epoch 3)")


def test_the_tar_at_a_threshold_is_a_count_over_the_pairs_without_float_noise():
    """TAR was 1 − FRR, which printed 0.11250000000000004 for 9 of 80."""
    from retrieval.verification import threshold_at_far

    rng = np.random.default_rng(0)
    positive, negative = rng.random(80), rng.random(1000) + 0.3
    chosen = threshold_at_far(positive, negative, 0.01)
    assert chosen.tar == int((positive <= chosen.threshold).sum()) / 80


@pytest.mark.parametrize("distance, threshold, shown", [
    (0.274415, 0.274236, ("0.2744", "0.2742")),  # alike at 3 decimals: one more tells them apart
    (0.274057, 0.274236, ("0.2741", "0.2742")),
    (0.31, 0.52, ("0.310", "0.520")),
    (0.5, 0.5, ("0.500", "0.500")),  # equal values stay at 3
    (0.1234561, 0.1234562, ("0.123456", "0.123456")),  # at most 6
])
def test_a_distance_and_threshold_are_shown_with_enough_decimals_to_tell_them_apart(distance, threshold, shown):
    assert distance_and_threshold(distance, threshold) == shown


def test_a_verdict_line_never_prints_the_distance_and_threshold_alike_when_they_differ():
    assert Verdict(False, None, 0.274415, 0.274236).describe(0.01) == (
        "no match in the gallery: the nearest is at d = 0.2744 > τ = 0.2742 at FAR 1 %")
    assert Verdict(True, "Asparagus", 0.274057, 0.274236).describe(0.01) == "match: Asparagus, d = 0.2741 ≤ τ = 0.2742 at FAR 1 %"


def test_a_verdict_without_a_threshold_names_the_calibrate_command_for_its_run():
    line = Verdict(None, None, 0.3, None).describe(None, run_dir="models/demo")
    assert line == "no threshold is set for this run, so no verdict (set one with `retrieval calibrate models/demo DATA_DIR`)"
