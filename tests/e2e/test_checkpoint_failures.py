"""Checkpoint failure modes with real training processes: two runs on one save directory (the
second refuses, a killed owner is taken over on requeue), a full disk during a save (exit 4, the
partial save gone, the previous checkpoint loads), a transient save error (training goes on) and
repeated ones (exit 5), and a same-size corrupted shard (found by the checksums, the fallback
loads the previous checkpoint, ``inspect --verify`` names the file)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from conftest import REPO, TINY_RECIPE, run_train, train_command
from lumos_megatron.checkpoint.directory import leftover_dirs, list_checkpoints, read_latest
from lumos_megatron.checkpoint.owner import OWNER_FILE, read_owner

# Runs lumos_megatron.train with megatron's checkpoint save failing on chosen calls (FAIL_CALLS,
# comma-separated call numbers; FAIL_ERRNO the errno) after writing part of the shard directory.
_FAULTY_SAVE = '''
import os, runpy, sys

sys.path.insert(0, os.environ["LUMOS_REPO"])  # the package under test, installed or not

def _install():
    import megatron.core.dist_checkpointing as dc
    real, calls = dc.save, {"n": 0}
    failing = {int(n) for n in os.environ["FAIL_CALLS"].split(",")}

    def save(state, path, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] in failing:
            with open(os.path.join(path, "__0_0.distcp"), "wb") as f:
                f.write(b"x" * 4096)
            code = int(os.environ["FAIL_ERRNO"])
            raise OSError(code, os.strerror(code))
        return real(state, path, *args, **kwargs)

    dc.save = save

if __name__ == "__main__":  # the checkpoint writer's spawned helper re-imports this file
    _install()
    sys.argv = ["lumos_megatron.train", *sys.argv[1:]]
    runpy.run_module("lumos_megatron.train", run_name="__main__")
'''


def _faulty_train(tmp_path: Path, args, fail_calls: str, code: int) -> subprocess.CompletedProcess:
    script = tmp_path / "faulty_save.py"
    script.write_text(_FAULTY_SAVE)
    _, env = train_command([])
    env.update({"FAIL_CALLS": fail_calls, "FAIL_ERRNO": str(code), "LUMOS_REPO": str(REPO)})
    return subprocess.run([sys.executable, str(script), "--config", str(TINY_RECIPE), *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=600)


def _errors(proc) -> list:
    return [line for line in proc.stderr.splitlines() if line.startswith("lumos_megatron.train: error")]


def test_a_second_run_on_the_same_save_directory_refuses_and_a_killed_owner_is_taken_over(tmp_path):
    save = tmp_path / "ckpt"
    cmd, env = train_command(["--config", str(TINY_RECIPE), "--train-iters", "1000", "--save", str(save),
                              "--save-interval", "2"])
    # Its own process group: the kill below takes any child it forked too (a checkpoint writer).
    first = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                             start_new_session=True)
    try:
        deadline = time.time() + 240
        while read_latest(save) is None and time.time() < deadline and first.poll() is None:
            time.sleep(0.5)
        assert read_latest(save) is not None and first.poll() is None
        owner = read_owner(save)
        assert owner is not None and owner.pid == first.pid
        second = run_train(["--config", str(TINY_RECIPE), "--train-iters", "4", "--save", str(save)])
        assert second.returncode == 2, second.stderr[-3000:]
        (line,) = _errors(second)
        assert f"{save} is the save directory of another live run (PID {first.pid} on host" in line
    finally:
        os.killpg(first.pid, signal.SIGKILL)  # a node failure: no clean exit, the record stays
        first.wait()
    assert read_owner(save).pid == first.pid
    latest = read_latest(save)
    requeued = run_train(["--config", str(TINY_RECIPE), "--train-iters", str(latest + 2), "--load", str(save),
                          "--save", str(save)])
    assert requeued.returncode == 0, requeued.stderr[-3000:]
    assert f"taking over the save directory {save} from PID {first.pid}" in requeued.stdout
    assert f"its process {first.pid}" in requeued.stdout
    assert read_latest(save) == latest + 2 and not (save / OWNER_FILE).exists()
    assert leftover_dirs(save) == []  # the killed run's temporaries went with the takeover


def test_a_full_disk_during_a_save_exits_4_and_leaves_the_previous_checkpoint(tmp_path):
    save = tmp_path / "ckpt"
    proc = _faulty_train(tmp_path, ["--train-iters", "4", "--save", str(save), "--save-interval", "2"], "2",
                         28)  # ENOSPC at the second save
    assert proc.returncode == 4, proc.stderr[-3000:]
    (line,) = _errors(proc)
    assert f"no space left on {save}: need about " in line and "GB free" in line
    assert "the partial save was removed and the previous checkpoint is intact" in line
    assert list_checkpoints(save) == [2] and read_latest(save) == 2 and leftover_dirs(save) == []
    resumed = run_train(["--config", str(TINY_RECIPE), "--train-iters", "3", "--load", str(save)])
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"loaded checkpoint {save / 'iter_0000002'} at iteration 2" in resumed.stdout


def test_transient_save_errors_do_not_stop_training_until_they_repeat(tmp_path):
    save = tmp_path / "ckpt"
    args = ["--train-iters", "6", "--save", str(save), "--save-interval", "2"]
    proc = _faulty_train(tmp_path, args, "2", 5)  # EIO once, at iteration 4
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "WARNING: checkpoint save at iteration 4 failed" in proc.stdout and "retries at the next interval" in proc.stdout
    assert list_checkpoints(save) == [2, 6] and read_latest(save) == 6

    again = tmp_path / "again"
    proc = _faulty_train(tmp_path, ["--train-iters", "6", "--save", str(again), "--save-interval", "2",
                                    "checkpoint.max_save_failures=2"], "2,3", 5)
    assert proc.returncode == 5, proc.stderr[-3000:]
    (line,) = _errors(proc)
    assert "2 checkpoint saves in a row failed" in line
    assert list_checkpoints(again) == [2]


def test_a_same_size_corrupted_shard_is_found_and_the_previous_checkpoint_loads(tmp_path):
    save = tmp_path / "ckpt"
    assert run_train(["--config", str(TINY_RECIPE), "--train-iters", "4", "--save", str(save),
                      "--save-interval", "2"]).returncode == 0
    shard = max((save / "iter_0000004").glob("*.distcp"), key=lambda p: p.stat().st_size)
    size = shard.stat().st_size
    with open(shard, "r+b") as f:
        f.seek(1024)
        f.write(os.urandom(4 << 20))
    assert shard.stat().st_size == size
    strict = run_train(["--config", str(TINY_RECIPE), "--train-iters", "5", "--load", str(save),
                        "checkpoint.fallback=false"])
    assert strict.returncode == 2
    (line,) = _errors(strict)
    assert f"{shard} does not match its checksum" in line and line.endswith("pick another iteration with --ckpt-step N")
    fallback = run_train(["--config", str(TINY_RECIPE), "--train-iters", "5", "--load", str(save)])
    assert fallback.returncode == 0, fallback.stderr[-3000:]
    assert f"WARNING: loading the newest checkpoint that passes instead: {save / 'iter_0000002'}" in fallback.stdout
    inspect = subprocess.run([sys.executable, "tools/checkpoint/inspect.py", str(save), "--verify"], cwd=REPO,
                             capture_output=True, text=True, timeout=300)
    assert inspect.returncode == 2 and f"{shard} does not match its checksum" in inspect.stderr
    assert inspect.stderr.strip().endswith("pick another iteration with --iteration N")
    good = subprocess.run([sys.executable, "tools/checkpoint/inspect.py", str(save), "--iteration", "2", "--verify"],
                          cwd=REPO, capture_output=True, text=True, timeout=300)
    assert good.returncode == 0 and "every file matches its manifest" in good.stdout
