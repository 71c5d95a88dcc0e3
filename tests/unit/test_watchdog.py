"""The hang watchdog's timing logic on a fake clock (no thread), its config checks, and one real
firing in a child process (stacks dumped, exit status 6)."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from lumos_megatron.config import ConfigError, parse_cli, validate_config
from lumos_megatron.training import exit_codes
from lumos_megatron.training.watchdog import MEDIAN_MIN_STEPS, MEDIAN_WINDOW, HangWatchdog

from conftest import REPO, TINY_RECIPE


class FakeClock:
    """Seconds that move only when the test says so."""

    def __init__(self):
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _watchdog(factor=10.0, timeout_s=300.0, min_timeout_s=1.0):
    clock = FakeClock()
    return HangWatchdog(factor, timeout_s, min_timeout_s, rank=3, clock=clock), clock


def _steps(dog, clock, durations, first_iteration=1):
    for i, seconds in enumerate(durations):
        dog.step_started(first_iteration + i)
        clock.now += seconds
        assert dog.overdue() is None
        dog.step_finished()


def test_fixed_limit_until_enough_steps_for_a_median():
    dog, clock = _watchdog()
    # A long first step (compilation) is within the generous fixed limit.
    dog.step_started(1)
    clock.now += 299.0
    assert dog.overdue() is None
    dog.step_finished()
    _steps(dog, clock, [0.5] * (MEDIAN_MIN_STEPS - 2), first_iteration=2)
    assert dog.limit_s() == 300.0  # one step short of a median
    dog.step_started(MEDIAN_MIN_STEPS)
    clock.now += 300.5
    reason = dog.overdue()
    assert reason is not None and f"iteration {MEDIAN_MIN_STEPS} has run for 300.50 s" in reason
    assert "train.hang_timeout_s" in reason


def test_median_limit_ignores_outliers_and_fires_past_factor_times_median():
    dog, clock = _watchdog(factor=10.0, min_timeout_s=1.0)
    _steps(dog, clock, [120.0, 2.0, 2.0, 2.5, 1.5, 2.0])  # a compile-slow first step
    assert dog.limit_s() == pytest.approx(20.0)  # 10 x median 2.0; the 120 s step does not count
    dog.step_started(7)
    clock.now += 19.9
    assert dog.overdue() is None
    clock.now += 0.2
    reason = dog.overdue()
    assert reason is not None and "iteration 7 has run for 20.10 s, over its limit of 20.00 s" in reason
    assert "10 x the median step time 2.000 s" in reason
    assert dog.overdue(now=clock.now - 0.2) is None  # an explicit time is honoured


def test_median_window_follows_recent_steps():
    dog, clock = _watchdog(factor=4.0, min_timeout_s=0.0)
    _steps(dog, clock, [1.0] * MEDIAN_WINDOW)
    assert dog.limit_s() == pytest.approx(4.0)
    # The steps get slower (longer sequences): once they fill the window the limit follows.
    _steps(dog, clock, [3.0] * (MEDIAN_WINDOW // 2 + 1))
    assert dog.limit_s() == pytest.approx(12.0)


def test_minimum_limit_for_short_steps():
    dog, clock = _watchdog(factor=10.0, min_timeout_s=60.0)
    _steps(dog, clock, [0.05] * 10)
    assert dog.limit_s() == 60.0  # not 0.5 s: a short pause must not end the run
    dog.step_started(11)
    clock.now += 59.0
    assert dog.overdue() is None
    clock.now += 2.0
    assert "at least 60 s" in dog.overdue()


def test_phases_use_the_fixed_limit_and_stay_out_of_the_median():
    dog, clock = _watchdog(factor=10.0, timeout_s=300.0)
    _steps(dog, clock, [1.0] * 6)
    with dog.watching("the checkpoint save at iteration 6"):
        clock.now += 250.0  # far over 10 x median, within the fixed limit
        assert dog.overdue() is None
        clock.now += 51.0
        assert dog.overdue().startswith("the checkpoint save at iteration 6 has run for 301.00 s")
    assert dog.overdue() is None  # disarmed
    assert dog.limit_s() == pytest.approx(10.0)  # the save's time is not a step time


def test_nothing_armed_between_steps():
    dog, clock = _watchdog()
    _steps(dog, clock, [1.0] * 6)
    clock.now += 10_000.0
    assert dog.overdue() is None


def test_factor_zero_disables():
    dog, clock = _watchdog(factor=0.0)
    assert not dog.enabled
    dog.step_started(1)
    clock.now += 1e9
    assert dog.overdue() is None
    dog.step_finished()
    assert dog.start()._thread is None  # no thread either
    dog.stop()


@pytest.mark.parametrize("override, fragment", [
    ("train.hang_timeout_factor=1", "train.hang_timeout_factor must be 0 (off) or > 1"),
    ("train.hang_timeout_factor=-2", "train.hang_timeout_factor must be 0 (off) or > 1"),
    ("train.hang_timeout_s=0", "train.hang_timeout_s must be > 0"),
    ("train.hang_timeout_min_s=-1", "train.hang_timeout_min_s must be >= 0"),
])
def test_bad_watchdog_settings_are_rejected(override, fragment):
    cfg = parse_cli(["--config", str(TINY_RECIPE), override], validate=False)
    with pytest.raises(ConfigError, match="invalid configuration") as err:
        validate_config(cfg)
    assert fragment in str(err.value)


def test_defaults_and_off_switch_validate():
    cfg = parse_cli(["--config", str(TINY_RECIPE), "train.hang_timeout_factor=0"], validate=False)
    validate_config(cfg)
    t = parse_cli(["--config", str(TINY_RECIPE)]).train
    assert (t.hang_timeout_factor, t.hang_timeout_s, t.hang_timeout_min_s) == (10.0, 1800.0, 60.0)


def test_firing_dumps_every_thread_and_exits_with_hung():
    """The real thread: a main thread blocked (as in a collective) past the fixed limit."""
    script = textwrap.dedent("""
        import threading
        from lumos_megatron.training.watchdog import HangWatchdog

        def blocked_in_a_collective():
            threading.Event().wait()

        dog = HangWatchdog(10.0, 0.5, 0.0, rank=7, exit_grace_s=0.1).start()
        try:
            dog.step_started(1)
            blocked_in_a_collective()
        finally:
            dog.stop()
    """)
    proc = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == exit_codes.HUNG, proc.stderr
    assert "hang watchdog on rank 7: iteration 1 has run for" in proc.stderr
    assert f"exiting with status {exit_codes.HUNG}" in proc.stderr
    assert "blocked_in_a_collective" in proc.stderr  # the main thread's stack
    assert proc.stderr.count("(most recent call first)") >= 2  # the watchdog thread too
