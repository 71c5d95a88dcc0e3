"""Early-stop decisions (signals, wall-time budget, NaN/Inf) and the flags that drive them."""

import math
import os
import signal
import time

import pytest

from lumos_megatron.config import ConfigError, parse_cli, resolved_train_iters
from lumos_megatron.training.signals import StopMonitor
from conftest import TINY_RECIPE


def test_stop_signal_is_noted_not_fatal_and_handlers_are_restored():
    before = signal.getsignal(signal.SIGUSR1)
    monitor = StopMonitor().install()
    try:
        assert not monitor.decide(1.0, 1.0).stop
        os.kill(os.getpid(), signal.SIGUSR1)  # would kill the process without the handler
        decision = monitor.decide(1.0, 1.0)
        assert decision.signal_received and decision.stop and not decision.nonfinite
        assert monitor.signal_name() == "SIGUSR1"
    finally:
        monitor.uninstall()
    assert signal.getsignal(signal.SIGUSR1) == before


def test_exit_duration_and_nonfinite_loss():
    monitor = StopMonitor(exit_duration_in_mins=1.0, start_time=time.time() - 61.0)
    assert monitor.decide(2.0, None).time_exceeded
    assert not StopMonitor(exit_duration_in_mins=1.0).decide(2.0, None).stop
    assert not StopMonitor().decide(None, None).stop  # not the last stage: no loss to judge
    for loss, grad in ((math.nan, 1.0), (math.inf, 1.0), (1.0, math.nan)):
        decision = StopMonitor().decide(loss, grad)
        assert decision.nonfinite and not decision.signal_received


def test_train_samples_exit_duration_and_ckpt_step_flags():
    cfg = parse_cli(["--config", str(TINY_RECIPE), "--train-samples", "20", "--exit-duration-in-mins", "0.5",
                     "--load", "/ckpt", "--ckpt-step", "100", "--save-interval", "50", "checkpoint.keep_last=0"])
    assert cfg.train.train_samples == 20 and resolved_train_iters(cfg) == 3  # ceil(20 / 8)
    assert cfg.train.exit_duration_in_mins == 0.5
    assert cfg.checkpoint.load_step == 100 and cfg.checkpoint.keep_last == 0
    assert resolved_train_iters(parse_cli(["--config", str(TINY_RECIPE)])) == 5


@pytest.mark.parametrize("argv, fragment", [
    (["--train-samples", "0"], "train.train_samples must be >= 1"),
    (["--exit-duration-in-mins", "0"], "train.exit_duration_in_mins must be > 0"),
    (["checkpoint.keep_last=-1"], "checkpoint.keep_last must be >= 0"),
    (["--ckpt-step", "3"], "checkpoint.load_step needs checkpoint.load"),
])
def test_bad_values_are_rejected(argv, fragment):
    with pytest.raises(ConfigError) as err:
        parse_cli(["--config", str(TINY_RECIPE), *argv])
    assert fragment in str(err.value)
