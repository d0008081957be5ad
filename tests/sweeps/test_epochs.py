"""ray_app/sweeps/epochs.py alone: a trial's metric epoch by epoch from its job's metric rows."""

from __future__ import annotations

import math

import pytest

from ray_app.sweeps import epochs
from ray_app.sweeps.epochs import MISSING


def row(epoch, attempt=1, step=None, **metrics):
    out = {"attempt": attempt, "epoch": epoch, "metrics": metrics}
    if step is not None:
        out["step"] = step
    return out


# ---------------------------------------------------------------- completed


def test_no_rows_no_epochs():
    assert epochs.completed([], "acc", 10, final=False) == []
    assert epochs.completed([], "acc", None, final=True) == []
    assert epochs.history([], "acc") == []


def test_a_retried_attempt_s_epoch_replaces_the_earlier_one():
    rows = [row(2, attempt=2, acc=0.9), row(1, attempt=1, acc=0.1), row(2, attempt=1, acc=0.2),
            row(1, attempt=2, acc=0.8)]
    assert epochs.completed(rows, "acc", None, final=False) == [(1, 0.8), (2, 0.9)]
    assert epochs.history(rows, "acc") == [(1, 0.8), (2, 0.9)]


def test_an_earlier_attempt_s_later_epochs_stay_until_replaced():
    # attempt 1 got to epoch 3; attempt 2 resumed and has redone epoch 2 only
    rows = [row(1, acc=0.1), row(2, acc=0.2), row(3, acc=0.3), row(2, attempt=2, acc=0.25)]
    assert epochs.history(rows, "acc") == [(1, 0.1), (2, 0.25), (3, 0.3)]


def test_a_mid_epoch_row_is_not_complete_while_the_job_runs():
    rows = [row(1, step=100, acc=0.5), row(2, step=40, acc=0.6)]
    assert epochs.completed(rows, "acc", 100, final=False) == [(1, 0.5)]
    # the epoch's end-of-epoch heartbeat (step == total_steps) makes it complete
    rows[1] = row(2, step=100, acc=0.7)
    assert epochs.completed(rows, "acc", 100, final=False) == [(1, 0.5), (2, 0.7)]


def test_a_mid_epoch_row_is_complete_once_a_later_epoch_exists():
    rows = [row(1, step=30, acc=0.5), row(2, step=10, acc=0.6)]
    assert epochs.completed(rows, "acc", 100, final=False) == [(1, 0.5)]
    assert epochs.completed([*rows, row(3, step=1)], "acc", 100, final=False) == [(1, 0.5), (2, 0.6)]


def test_a_mid_epoch_row_is_complete_once_the_job_is_final():
    rows = [row(1, step=100, acc=0.5), row(2, step=40, acc=0.6)]
    assert epochs.completed(rows, "acc", 100, final=True) == [(1, 0.5), (2, 0.6)]


def test_a_mid_epoch_row_without_total_steps_waits():
    rows = [row(1, step=5, acc=0.5)]
    assert epochs.completed(rows, "acc", None, final=False) == []
    assert epochs.completed(rows, "acc", None, final=True) == [(1, 0.5)]


def test_a_step_past_total_steps_is_complete():
    assert epochs.completed([row(1, step=120, acc=0.5)], "acc", 100, final=False) == [(1, 0.5)]
    assert epochs.completed([row(1, step=99, acc=0.5)], "acc", 100, final=False) == []


def test_a_row_without_step_is_complete():
    assert epochs.completed([row(1, acc=0.5)], "acc", 100, final=False) == [(1, 0.5)]
    with_none = {"attempt": 1, "epoch": 1, "step": None, "metrics": {"acc": 0.5}}
    assert epochs.completed([with_none], "acc", 100, final=False) == [(1, 0.5)]


def test_a_complete_epoch_without_the_metric_is_missing():
    rows = [row(1, loss=1.0), row(2, acc=0.5), row(3, step=2, acc=0.6)]
    done = epochs.completed(rows, "acc", 10, final=False)
    assert [e for e, _ in done] == [1, 2]
    assert done[0][1] is MISSING and done[1][1] == 0.5
    # history skips an epoch without the metric; completed keeps it as MISSING
    assert epochs.history(rows, "acc") == [(2, 0.5), (3, 0.6)]


def test_metric_values_are_passed_through_as_stored():
    rows = [row(1, acc="NaN"), row(2, acc=None), row(3, acc=1)]
    assert epochs.completed(rows, "acc", None, final=False) == [(1, "NaN"), (2, None), (3, 1)]
    assert epochs.history(rows, "acc") == [(1, "NaN"), (2, None), (3, 1)]


def test_history_is_in_epoch_order_whatever_the_row_order():
    rows = [row(3, acc=0.3), row(1, acc=0.1), row(2, step=1, acc=0.2)]
    assert epochs.history(rows, "acc") == [(1, 0.1), (2, 0.2), (3, 0.3)]  # incomplete epochs too
    assert epochs.history(rows, "loss") == []


# ---------------------------------------------------------------- number, best, better


@pytest.mark.parametrize(("value", "expected"), [
    (1, 1.0), (0.5, 0.5), (-2, -2.0), (0, 0.0), ("NaN", None), ("Infinity", None), ("-Infinity", None),
    ("0.5", None), (None, None), (True, None), (False, None), (math.nan, None), (math.inf, None),
    (MISSING, None), ([1], None)])
def test_number(value, expected):
    assert epochs.number(value) == expected


def test_best_by_mode_skipping_what_is_not_a_number():
    values = [0.3, "NaN", None, 0.9, MISSING, True, "Infinity", 0.1, math.nan]
    assert epochs.best(values, "max") == 0.9
    assert epochs.best(values, "min") == 0.1
    assert epochs.best(iter([2, 1]), "min") == 1.0  # any iterable
    assert epochs.best([], "max") is None
    assert epochs.best(["NaN", None, MISSING], "min") is None


@pytest.mark.parametrize(("a", "b", "mode", "wins"), [
    (0.9, 0.5, "max", True), (0.5, 0.9, "max", False), (0.5, 0.5, "max", False),
    (0.5, 0.9, "min", True), (0.9, 0.5, "min", False), (0.5, 0.5, "min", False),
    (0.1, None, "max", True), (0.1, None, "min", True),
    (None, 0.1, "max", False), (None, 0.1, "min", False), (None, None, "max", False), (None, None, "min", False),
    (-1.0, None, "max", True), (0.0, None, "min", True),
])
def test_better(a, b, mode, wins):
    assert epochs.better(a, b, mode) is wins


def test_best_of_best_with_better_picks_the_trial():
    trials = {"a": [0.2, "NaN"], "b": [None], "c": [0.7, 0.4], "d": ["NaN"]}
    for mode, winner in (("max", "c"), ("min", "a")):
        chosen, score = None, None
        for name, values in trials.items():
            value = epochs.best(values, mode)
            if epochs.better(value, score, mode):
                chosen, score = name, value
        assert chosen == winner
