"""Each scoring rule against values computed by hand, including the edge cases."""

from __future__ import annotations

import math

import pytest

from agent.actions import Click, DoubleClick, Done, Drag, Key, Move, RightClick, Scroll, Type, Wait
from eval.metrics import (
    TargetAction,
    aggregate,
    android_control_correct,
    distance_score,
    edit_distance,
    keys_score,
    point_in_box,
    point_score,
    score_step,
    status_score,
    write_score,
)

TOLERANCE = 0.01 * math.sqrt(2)  # 0.0141421356...
# A box with binary-exact edges: x in [0.25, 0.375], y in [0.5, 0.75].
BOX = (0.25, 0.5, 0.125, 0.25)


# Points and boxes ------------------------------------------------------------------------------

def test_box_edges_count_as_inside():
    assert point_in_box((0.25, 0.5), BOX)  # top-left corner
    assert point_in_box((0.375, 0.75), BOX)  # bottom-right corner
    assert point_in_box((0.3, 0.75), BOX)  # on the bottom edge


def test_box_edge_with_decimal_rounding():
    # 0.2 + 0.1 is 0.30000000000000004 in binary; the right edge must still include 0.3.
    assert point_in_box((0.3, 0.35), (0.2, 0.3, 0.1, 0.05))


def test_point_just_outside_box():
    assert not point_in_box((0.376, 0.6), BOX)
    assert not point_in_box((0.3, 0.4999), BOX)


def test_point_in_box_scores_one_however_far():
    # (0.26, 0.74) is 0.23 from the target point but inside the box.
    assert point_score((0.26, 0.74), (0.3, 0.51), [BOX]) == 1.0


def test_point_inside_any_of_several_boxes():
    assert point_score((0.9, 0.9), (0.3, 0.6), [BOX, (0.85, 0.85, 0.1, 0.1)]) == 1.0


def test_distance_exactly_at_threshold_scores_one():
    assert distance_score(TOLERANCE) == 1.0
    assert distance_score(0.0) == 1.0


def test_distance_beyond_threshold_decays():
    # d = tolerance + 0.01: exp(-120 * 0.01) = exp(-1.2) = 0.3011942119...
    assert distance_score(TOLERANCE + 0.01) == pytest.approx(0.3011942119, rel=1e-9)


def test_point_score_by_distance_without_box():
    # d = 0.03 along x: exp(-120 * (0.03 - 0.0141421356)) = exp(-1.9029437252) = 0.1491289777...
    assert point_score((0.53, 0.5), (0.5, 0.5)) == pytest.approx(0.1491289777, rel=1e-9)


def test_point_within_tolerance_outside_box():
    # 0.01 right of the box, 0.01 from the target point on the edge: within the tolerance.
    assert point_score((0.385, 0.6), (0.375, 0.6), [BOX]) == 1.0


# Text -------------------------------------------------------------------------------------------

def test_edit_distance_by_hand():
    assert edit_distance("fix", "polish") == 5  # p,o,l for f (1 sub + 2 ins), keep i, s for x, insert h
    assert edit_distance("", "abc") == 3
    assert edit_distance("kitten", "sitting") == 3


def test_write_exact_after_case_and_strip():
    assert write_score("  Hello World ", "hello world") == 1.0


def test_write_both_empty_scores_one():
    assert write_score("", "") == 1.0
    assert write_score("   ", "") == 1.0


def test_write_one_side_empty_scores_zero():
    assert write_score("", "abc") == 0.0
    assert write_score("abc", "") == 0.0


def test_write_small_typo_reaches_threshold():
    # One deletion in 13 characters: similarity 12/13 = 0.923 >= 0.8, so 1.
    assert write_score("CardPhotForm", "CardPhotoForm") == 1.0


def test_write_below_threshold_scales():
    # "help me fix this:" vs "help me polish this:": distance 5 over 20 characters,
    # similarity 0.75, score 0.75 / 0.8 = 0.9375.
    assert write_score("help me fix this:", "help me polish this: ") == pytest.approx(0.9375)


def test_write_exactly_at_threshold():
    # 2 substitutions in 10 characters: similarity exactly 0.8, which scores 1.
    assert write_score("abcdefghXY", "abcdefghij") == 1.0


def test_write_newline_on_one_side():
    # Same text, only the target ends with a newline: 1.0 * 0.9 >= 0.8, so 1.
    assert write_score("george orwell", "george orwell\n") == 1.0
    # 3 substitutions in 20 characters: 0.85 * 0.9 = 0.765 < 0.8, score 0.765 / 0.8 = 0.95625.
    assert write_score("abcdefghijklmnopqXYZ", "abcdefghijklmnopqrst\n") == pytest.approx(0.95625)
    # Without the newline mismatch the same texts reach the threshold.
    assert write_score("abcdefghijklmnopqXYZ", "abcdefghijklmnopqrst") == 1.0


# Keys and statuses ------------------------------------------------------------------------------

def test_keys_in_another_order_and_case():
    assert keys_score(["C", "CTRL"], ["ctrl", "c"]) == 1.0


def test_keys_different_sets():
    assert keys_score(["ctrl", "v"], ["ctrl", "c"]) == 0.0
    assert keys_score(["ctrl", "shift", "t"], ["ctrl", "t"]) == 0.0


def test_status_must_match():
    assert status_score("success", "success") == 1.0
    assert status_score("failure", "success") == 0.0


# AndroidControl ---------------------------------------------------------------------------------

def test_android_control_at_radius():
    # A 3-4-5 triangle: offsets 0.084 and 0.112 are exactly 0.14 apart.
    assert android_control_correct((0.334, 0.612), (0.25, 0.5))


def test_android_control_uses_euclidean_distance():
    # 0.1 on both axes is within 0.14 per axis but 0.1414 Euclidean, so incorrect.
    assert not android_control_correct((0.6, 0.6), (0.5, 0.5))
    assert android_control_correct((0.63, 0.5), (0.5, 0.5))


# Steps ------------------------------------------------------------------------------------------

def step(predicted, truth):
    return score_step(predicted, [t if isinstance(t, TargetAction) else TargetAction(t) for t in truth])


def test_step_type_mismatch_scores_zero():
    result = step([Click(x=0.5, y=0.5)], [Type(text="abc")])
    assert result.score == 0.0
    assert result.action_scores == [("type", 0.0)]


def test_step_empty_prediction_scores_zero():
    assert step([], [Click(x=0.5, y=0.5)]).score == 0.0


def test_step_click_kinds_are_distinct():
    assert step([DoubleClick(x=0.5, y=0.5)], [Click(x=0.5, y=0.5)]).score == 0.0
    assert step([RightClick(x=0.5, y=0.5)], [Click(x=0.5, y=0.5, button="right")]).score == 1.0


def test_step_type_then_enter_merged_in_truth():
    truth = [Type(text="george orwell"), Key(keys=["enter"])]
    assert step([Type(text="george orwell\n")], truth).score == 1.0


def test_step_type_then_enter_merged_in_prediction():
    predicted = [Type(text="george orwell"), Key(keys=["Return"])]
    assert step(predicted, [Type(text="george orwell\n")]).score == 1.0


def test_step_type_then_enter_merged_on_both_sides():
    predicted = [Type(text="abc"), Key(keys=["enter"])]
    assert step(predicted, [Type(text="abc"), Key(keys=["enter"])]).score == 1.0


def test_step_enter_in_a_hotkey_is_not_merged():
    truth = [Type(text="abc"), Key(keys=["ctrl", "enter"])]
    # Type scores 1, the missing hotkey 0; mean over the two types is 0.5.
    assert step([Type(text="abc")], truth).score == 0.5


def test_step_extra_predicted_actions_scale_down():
    # One right action and one extra: 1 * len(truth) / len(predicted) = 0.5.
    assert step([Click(x=0.5, y=0.5), Wait(seconds=1.0)], [Click(x=0.5, y=0.5)]).score == 0.5


def test_step_first_predicted_type_must_be_in_truth():
    truth = [Type(text="abc"), Click(x=0.5, y=0.5)]
    assert step([Wait(seconds=1.0), Type(text="abc"), Click(x=0.5, y=0.5)], truth).score == 0.0


def test_step_averages_per_type():
    # Truth: two clicks and one typed text. Clicks score 1 and 0 (type mismatch), text 1.
    # Per type: click 0.5, type 1.0; step score (0.5 + 1.0) / 2 = 0.75.
    truth = [Click(x=0.5, y=0.5), Click(x=0.2, y=0.2), Type(text="x")]
    predicted = [Click(x=0.5, y=0.5), Move(x=0.2, y=0.2), Type(text="x")]
    assert step(predicted, truth).score == pytest.approx(0.75)


def test_step_drag_scores_both_ends():
    # Start inside its box (1.0); end 0.03 right of the target, no box: 0.1491289777.
    target = TargetAction(Drag(x=0.3, y=0.6, to_x=0.5, to_y=0.5), boxes=(BOX,))
    result = step([Drag(x=0.26, y=0.74, to_x=0.53, to_y=0.5)], [target])
    assert result.score == pytest.approx((1.0 + 0.1491289777) / 2, rel=1e-9)


def test_step_scroll_direction_and_amount():
    truth = [Scroll(x=0.5, y=0.5, direction="down", amount=3)]
    assert step([Scroll(x=0.5, y=0.5, direction="up", amount=3)], truth).score == 0.5
    # Amount 1 of 3 at the right point: (1 + 1/3) / 2.
    assert step([Scroll(x=0.5, y=0.5, direction="down", amount=1)], truth).score == pytest.approx(2 / 3)


def test_step_done_status():
    assert step([Done(status="failure")], [Done(status="success")]).score == 0.0
    assert step([Done(status="success")], [Done(status="success")]).score == 1.0


def test_step_uses_recorded_point_over_rounded_one():
    # The Holdfast action keeps 0.163; the recorded target 0.1631 is 0.0169 from the
    # prediction: exp(-120 * (0.0169 - 0.0141421356)) = 0.7182455871.
    target = TargetAction(Click(x=0.979, y=0.1631), point=(0.979, 0.1631))
    assert step([Click(x=0.979, y=0.18)], [target]).score == pytest.approx(0.7182455871, rel=1e-7)


def test_step_android_control_flags():
    truth = [Click(x=0.5, y=0.5)]
    assert step([Click(x=0.6, y=0.6)], truth).android_control == [False]
    assert step([Click(x=0.6, y=0.5)], truth).android_control == [True]
    assert step([Type(text="a")], [Type(text="a")]).android_control == []


# Aggregation ------------------------------------------------------------------------------------

def record(trajectory_id, score, kind="click", latency=0.5, state=100, clicks=(True,)):
    return {
        "trajectory_id": trajectory_id, "score": score, "action_scores": [{"type": kind, "score": score}],
        "android_control": list(clicks), "latency_s": latency, "state_bytes": state,
    }


def test_aggregate_by_hand():
    records = [
        record("a", 1.0), record("a", 1.0, kind="type", clicks=()),
        record("b", 1.0, latency=1.5, state=300), record("b", 0.25, clicks=(False,)),
    ]
    summary = aggregate(records)
    assert summary["steps"] == 4
    assert summary["step_score_mean"] == pytest.approx(3.25 / 4)
    assert summary["step_success_rate"] == 0.75
    assert summary["episode_success_rate"] == 0.5  # a succeeds, b does not
    assert summary["android_control_click_accuracy"] == pytest.approx(2 / 3)
    assert summary["per_action_type"]["click"] == {"count": 3, "score_mean": 0.75, "success_rate": pytest.approx(2 / 3)}
    assert summary["per_action_type"]["type"]["count"] == 1
    assert summary["per_trajectory"]["b"]["step_score_mean"] == 0.625
    assert summary["per_trajectory"]["b"]["state_bytes_max"] == 300
    assert summary["latency_s"]["mean"] == 0.75
    assert summary["latency_s"]["max"] == 1.5


def test_aggregate_without_latency():
    summary = aggregate([record("a", 1.0, latency=None)])
    assert summary["latency_s"] is None
    assert summary["per_trajectory"]["a"]["latency_s_mean"] is None


def test_aggregate_empty():
    summary = aggregate([])
    assert summary["step_score_mean"] is None
    assert summary["episode_success_rate"] is None
