"""The reporter's memory stays bounded over a long run while its summary and ETA keep the exact
numbers of the former keep-everything history; the slowest rank reaches the line and TensorBoard;
the per-rank work clock."""

from __future__ import annotations

import tracemalloc

import pytest

from lumos_megatron.training import rank_timing
from lumos_megatron.training.rank_timing import RankWorkClock
from lumos_megatron.training.report_reduction import slowest_rank
from lumos_megatron.training.reporting import ETA_WINDOW, IterationStats, Reporter, format_log_line

from conftest import read_scalars

ITERATIONS = 5000
WINDOW = 50


def _stats(i: int) -> IterationStats:
    # Irregular times and losses, so that a sum in another order or an off-by-one would show.
    return IterationStats(iteration=i, consumed_samples=8 * i, elapsed_ms=100.0 + (i * 7919 % 101) / 7.0,
                          lr=1e-4, lm_loss=11.0 / (1.0 + 0.001 * i) + (i % 13) * 1e-3, loss_tokens=900,
                          grad_norm=1.0, extra={f"loss/frame_{k}": 0.1 * k for k in range(7)})


def _old_eta_s(history, train_iters):
    """The former formula over the full history list."""
    recent = history[1:][-ETA_WINDOW:] or history
    return (train_iters - history[-1].iteration) * sum(s.elapsed_ms for s in recent) / len(recent) / 1e3


def _old_summary(history):
    first, last = history[0], history[-1]
    mean_ms = sum(s.elapsed_ms for s in history) / len(history)
    return (f"training summary: {len(history)} iterations, lm loss {first.lm_loss:.4f} -> "
            f"{last.lm_loss:.4f}, {mean_ms:.1f} ms/iteration")


def test_window_is_bounded_and_totals_are_exact(capsys):
    reporter = Reporter(active=True, train_iters=ITERATIONS + 10, global_batch_size=8,
                        log_interval=10**9, history_window=WINDOW)
    full = []
    for i in range(1, ITERATIONS + 1):
        stats = _stats(i)
        full.append(stats)
        eta = reporter.record(stats)
        if i in (1, 2, 3, ETA_WINDOW, ETA_WINDOW + 1, ETA_WINDOW + 2, ITERATIONS):
            assert eta == _old_eta_s(full, ITERATIONS + 10), i  # bit for bit
    assert len(reporter.history) == WINDOW
    assert list(reporter.history) == full[-WINDOW:]
    assert reporter.count == ITERATIONS
    assert reporter.total_elapsed_ms == sum(s.elapsed_ms for s in full)  # same order: exact
    assert (reporter.first_loss, reporter.last_loss) == (full[0].lm_loss, full[-1].lm_loss)
    assert reporter.summary_line() == _old_summary(full)
    reporter.close()
    assert _old_summary(full) in capsys.readouterr().out


def test_memory_does_not_grow_with_iterations():
    tracemalloc.start()  # before the reporter exists: its whole footprint is traced
    try:
        reporter = Reporter(active=True, train_iters=10**9, global_batch_size=8, log_interval=10**9,
                            history_window=WINDOW)
        for i in range(1, 2 * WINDOW + 1):  # fill the window first
            reporter.record(_stats(i))
        before = tracemalloc.get_traced_memory()[0]
        for i in range(2 * WINDOW + 1, 2 * WINDOW + ITERATIONS + 1):
            reporter.record(_stats(i))
        grown = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    # Keeping every iteration would hold ITERATIONS x ~1 KB (megabytes); the window holds a fixed set.
    assert grown < 20_000, grown
    assert len(reporter.history) == WINDOW


def test_inactive_reporter_records_nothing():
    reporter = Reporter(active=False, train_iters=10, global_batch_size=8)
    reporter.log(_stats(1))
    assert reporter.count == 0 and not reporter.history and reporter.summary_line() is None


def test_log_iterations():
    reporter = Reporter(active=False, train_iters=25, global_batch_size=8, log_interval=10)
    assert [i for i in range(1, 26) if reporter.is_log_iteration(i)] == [10, 20, 25]


def test_slowest_rank_in_line_and_tensorboard(tmp_path, capsys):
    reporter = Reporter(active=True, train_iters=4, global_batch_size=8, log_interval=2,
                        tensorboard_dir=str(tmp_path))
    for i in range(1, 5):
        stats = _stats(i)
        if reporter.is_log_iteration(i):
            stats.slowest_rank, stats.slowest_rank_ms = 3, 40.0 + i
        reporter.log(stats)
    reporter.close()
    lines = [line for line in capsys.readouterr().out.splitlines() if " iteration " in line]
    assert len(lines) == 2 and "slowest rank 3 (42.0 ms) |" in lines[0] and "slowest rank 3 (44.0 ms) |" in lines[1]
    assert read_scalars(tmp_path, "time/slowest-rank-ms") == [(2, 42.0), (4, 44.0)]
    assert read_scalars(tmp_path, "time/slowest-rank") == [(2, 3.0), (4, 3.0)]
    assert "slowest rank" not in format_log_line(_stats(1), 4, 8)


def test_slowest_rank_needs_several_processes():
    assert slowest_rank(12.0) is None  # no process group (or a single process): nothing to gather


def test_rank_work_clock_stops_at_the_gradient_finalisation(monkeypatch):
    class Config:
        def __init__(self):
            self.calls = []
            self.finalize_model_grads_func = lambda *a, **k: self.calls.append((a, k))

    now = [100.0]  # a fake perf_counter: the bounds hold however loaded the machine is
    monkeypatch.setattr(rank_timing.time, "perf_counter", lambda: now[0])
    config = Config()
    clock = RankWorkClock(use_cuda=False)
    clock.attach(config)
    for work_s in (0.05, 0.07):
        clock.start()
        now[0] += work_s  # data loading, forward and backward
        config.finalize_model_grads_func(["model"], None, force_all_reduce=False)
        now[0] += 0.2  # waiting for the other ranks: not this rank's work
        assert clock.stop() == pytest.approx(1000 * work_s)
    assert len(config.calls) == 2 and config.calls[0] == ((["model"], None), {"force_all_reduce": False})
    assert clock.take_window_mean_ms() == pytest.approx(60.0)
    assert clock.take_window_mean_ms() == 0.0  # the window restarts
    clock.start()
    now[0] += 0.02
    assert clock.stop() == pytest.approx(20.0)  # no finalisation: the whole step
