"""The stopping rule: a cell is timed until its median is known to the target, and no cell is called stable
whose repeats disagree. Fed generated latencies, so the machine's load cannot change the outcome."""

import numpy as np
import pytest

from harness.backends.base import Timing
from harness.errors import HarnessError
from harness.measure.stability import StopRule, interval, median_interval, time_until_stable


def repeats(values_per_repeat):
    """A repeat callable handing out the given arrays in turn, and the log of calls."""
    calls = []

    def run(key):
        def once():
            calls.append(key)
            return Timing(np.asarray(values_per_repeat[key][len([c for c in calls if c == key]) - 1]), 0.1, 1, "x")
        return once

    return run, calls


def test_median_interval_covers_the_true_median_about_95_percent_of_the_time():
    rng = np.random.default_rng(0)
    hits = 0
    for _ in range(400):
        lo, hi = median_interval(rng.lognormal(0.0, 0.3, 200))
        hits += lo <= 1.0 <= hi  # the median of lognormal(0, s) is exactly 1
    assert 0.92 <= hits / 400 <= 0.99


def test_a_quiet_cell_stops_at_the_minimum_and_a_drifting_one_runs_to_its_budget_as_unstable():
    rng = np.random.default_rng(1)
    quiet = [rng.normal(1.0, 0.01, 100) for _ in range(20)]
    drifting = [rng.normal(1.0 + 0.15 * (i % 2), 0.01, 100) for i in range(20)]  # load toggles between repeats
    run, calls = repeats({"quiet": quiet, "drifting": drifting})
    rule = StopRule(min_repeats=3, max_s=1e9, target_pct=5.0)
    budget = {"quiet": rule, "drifting": StopRule(min_repeats=3, max_s=0.0, target_pct=5.0)}
    runs = time_until_stable({"quiet": run("quiet"), "drifting": run("drifting")}, budget)
    assert len(runs["quiet"]) == 3 and interval([t.latency_ms for t in runs["quiet"]]).half_width_pct < 1
    # Each repeat alone is tight (1 % noise), yet the repeats' medians disagree by 15 %: the interval says so.
    drift = interval([t.latency_ms for t in runs["drifting"]])
    assert drift.half_width_pct > 5 and drift.lo_ms < 1.0 and drift.hi_ms > 1.1
    # Interleaved: the two keys alternate in rounds while both run.
    assert calls[:6] == ["quiet", "drifting"] * 3


def test_repeats_continue_until_the_interval_meets_the_target():
    rng = np.random.default_rng(2)
    # 8 repeats with 3 % noise between their medians: 3 repeats cannot pin the median to ±2 %, more can.
    noisy = [rng.normal(1.0 + rng.normal(0, 0.03), 0.005, 200) for _ in range(40)]
    run, _ = repeats({"a": noisy})
    runs = time_until_stable({"a": run("a")}, {"a": StopRule(3, 1e9, 2.0)})
    assert len(runs["a"]) > 3 and interval([t.latency_ms for t in runs["a"]]).half_width_pct <= 2.0


@pytest.mark.parametrize("timing, message", [
    ("{max_s: -1}", "timing.max_s: -1 must be a number >= 0"),
    ("{interleave: yes please}", "timing.interleave: 'yes please' must be true or false"),
    ("{ci_target_pct: none}", "timing.ci_target_pct: 'none' must be a number >= 0"),
])
def test_bad_timing_keys_are_one_line_errors(tmp_path, timing, message):
    from harness.sweep.experiment import load_experiment

    path = tmp_path / "e.yaml"
    path.write_text(f"models: [digits-resnet]\nprecisions: [fp32]\ntiming: {timing}\n")
    with pytest.raises(HarnessError, match=message.replace("'", ".")):
        load_experiment(path)
