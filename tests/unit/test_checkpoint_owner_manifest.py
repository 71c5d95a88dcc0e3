"""Save-directory ownership (claim, conflict, stale takeover, fencing, heartbeat), the checkpoint
manifest (sizes and checksums, same-size corruption), only-own leftovers, and the full-disk check."""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
import time
from dataclasses import replace

import pytest

from lumos_megatron.checkpoint.directory import leftover_dirs, prepare_temporary, prune
from lumos_megatron.checkpoint.manifest import hash_share, read_manifest, verify, write_manifest
from lumos_megatron.checkpoint.owner import (
    OWNER_FILE,
    Heartbeat,
    Owner,
    OwnerConflict,
    claim,
    ensure_owner,
    heartbeat_path,
    read_owner,
    release,
)
from lumos_megatron.checkpoint import owner as owner_module
from lumos_megatron.platform.disk_space import is_no_space, no_space_message


def _other(me: Owner, **changes) -> Owner:
    return replace(Owner.this_process(), **{"slurm_job_id": "", **changes})


def test_claim_then_a_second_live_run_is_refused(tmp_path):
    me, previous = claim(tmp_path)
    assert previous is None and read_owner(tmp_path) == me
    live = _other(me, pid=os.getppid())  # a live process on this host, fresh heartbeat
    with pytest.raises(OwnerConflict) as err:
        claim(tmp_path, me=live)
    message = str(err.value)
    assert "\n" not in message and f"PID {me.pid} on host {me.host}" in message and "checkpoint.save" in message
    assert read_owner(tmp_path) == me


@pytest.mark.parametrize("how", ["dead_pid", "old_heartbeat", "same_slurm_job"])
def test_a_stale_owner_is_taken_over_with_a_warning(tmp_path, how):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True, check=True).stdout.strip()
    stale = _other(None, pid=int(dead) if how == "dead_pid" else os.getppid(),
                   heartbeat=time.time() - (10_000 if how == "old_heartbeat" else 0),
                   slurm_job_id="42" if how == "same_slurm_job" else "")
    (tmp_path / OWNER_FILE).write_text(json.dumps(stale.__dict__))
    me = _other(None, slurm_job_id="42" if how == "same_slurm_job" else "")
    warnings = []
    got, previous = claim(tmp_path, stale_after_s=600, me=me, warn=warnings.append)
    assert got == me and previous == stale and read_owner(tmp_path) == me
    assert len(warnings) == 1 and "taking over" in warnings[0]
    with pytest.raises(OwnerConflict, match="no longer owns"):  # fencing: the old owner may not publish
        ensure_owner(tmp_path, stale)
    ensure_owner(tmp_path, me)
    release(tmp_path, stale)  # not its record any more: untouched
    assert read_owner(tmp_path) == me
    release(tmp_path, me)
    assert read_owner(tmp_path) is None


def test_heartbeat_refreshes_and_stops_once_taken_over(tmp_path):
    me, _ = claim(tmp_path)
    beat = Heartbeat(tmp_path, me, interval_s=0.05).start()
    time.sleep(0.3)
    assert read_owner(tmp_path).heartbeat > me.heartbeat
    successor = _other(me)
    (tmp_path / OWNER_FILE).write_text(json.dumps(successor.__dict__))
    beat._thread.join(timeout=5)
    assert not beat._thread.is_alive()  # it saw the takeover and stopped on its own
    assert read_owner(tmp_path) == successor and not heartbeat_path(tmp_path, me.run_id).exists()
    beat.stop()


def test_a_beat_racing_a_takeover_leaves_the_successor_in_place(tmp_path, monkeypatch):
    """The beat checks ownership, then the successor takes over, then the beat writes: the
    successor's record and heartbeat must survive (the beat only writes its own file)."""
    me, _ = claim(tmp_path)
    successor = _other(me)
    real_read_owner = read_owner

    def check_then_take_over(root):
        seen = real_read_owner(root)
        (tmp_path / OWNER_FILE).write_text(json.dumps(successor.__dict__))  # lands between check and write
        return seen

    monkeypatch.setattr(owner_module, "read_owner", check_then_take_over)
    assert Heartbeat(tmp_path, me).beat()
    monkeypatch.undo()
    assert read_owner(tmp_path) == successor
    with pytest.raises(OwnerConflict):
        ensure_owner(tmp_path, me)
    assert not Heartbeat(tmp_path, me).beat() and not heartbeat_path(tmp_path, me.run_id).exists()


def test_the_heartbeat_file_is_read_with_the_record_and_cleaned_up(tmp_path):
    old = _other(None, pid=os.getppid(), heartbeat=time.time() - 10_000, slurm_job_id="42")
    (tmp_path / OWNER_FILE).write_text(json.dumps(old.__dict__))
    heartbeat_path(tmp_path, old.run_id).write_text(f"{time.time()}\n")  # alive after all
    assert read_owner(tmp_path).heartbeat > old.heartbeat + 9_000
    with pytest.raises(OwnerConflict):
        claim(tmp_path, stale_after_s=600)
    me, previous = claim(tmp_path, me=_other(None, slurm_job_id="42"), warn=lambda _: None)  # requeue of job 42
    assert previous.run_id == old.run_id and not heartbeat_path(tmp_path, old.run_id).exists()
    assert Heartbeat(tmp_path, me).beat() and heartbeat_path(tmp_path, me.run_id).exists()
    release(tmp_path, me)
    assert read_owner(tmp_path) is None and not heartbeat_path(tmp_path, me.run_id).exists()


def test_prune_removes_only_this_runs_leftovers(tmp_path):
    mine, theirs = prepare_temporary(tmp_path, 4, "aaa111"), prepare_temporary(tmp_path, 4, "bbb222")
    assert mine != theirs and {p.name for p in leftover_dirs(tmp_path)} == {mine.name, theirs.name}
    prune(tmp_path, keep_last=0, tokens=("aaa111",))
    assert [p.name for p in leftover_dirs(tmp_path)] == [theirs.name]
    assert prepare_temporary(tmp_path, 4, "aaa111").exists() and theirs.exists()  # its own only


def _checkpoint(tmp_path):
    ckpt = tmp_path / "iter_0000004"
    ckpt.mkdir()
    (ckpt / "__0_0.distcp").write_bytes(os.urandom(3 << 20))
    (ckpt / "__0_1.distcp").write_bytes(os.urandom(1 << 20))
    (ckpt / "common.pt").write_bytes(b"common")
    names = sorted(p.name for p in ckpt.iterdir())
    files = {}
    for rank in range(2):  # two ranks, each hashing its share
        files.update(hash_share(ckpt, names, rank, 2))
    write_manifest(ckpt, files, "run1", 4)
    return ckpt


def test_manifest_finds_same_size_corruption_missing_and_resized_files(tmp_path):
    ckpt = _checkpoint(tmp_path)
    manifest = read_manifest(ckpt)
    assert manifest["run_id"] == "run1" and set(manifest["files"]) == {"__0_0.distcp", "__0_1.distcp", "common.pt"}
    assert verify(ckpt, "full") == [] and verify(ckpt, "size") == []
    shard = ckpt / "__0_0.distcp"
    with open(shard, "r+b") as f:  # garbage of the same length: only the checksum sees it
        f.seek(1000)
        f.write(os.urandom(1 << 20))
    assert verify(ckpt, "size") == [] and verify(ckpt, "none") == []
    assert verify(ckpt, "full") == [f"{shard} does not match its checksum in manifest.json (corrupt)"]
    # Split over two ranks, exactly one rank finds it.
    assert sum(len(verify(ckpt, "full", rank, 2)) for rank in range(2)) == 1
    (ckpt / "common.pt").unlink()
    (ckpt / "__0_1.distcp").write_bytes(b"short")
    problems = verify(ckpt, "size")
    assert f"{ckpt / 'common.pt'} is missing" in problems
    assert f"{ckpt / '__0_1.distcp'} has 5 bytes, the manifest says {1 << 20}" in problems
    (ckpt / "manifest.json").write_text("{not json")
    assert "cannot be read" in verify(ckpt, "size")[0]
    (ckpt / "manifest.json").unlink()
    assert verify(ckpt, "full") == []  # nothing to check against (older or imported checkpoints)


def test_a_full_disk_is_recognised_through_wrappers_and_reported_in_one_line(tmp_path):
    inner = OSError(errno.ENOSPC, "No space left on device")
    try:
        try:
            raise inner
        except OSError as err:
            raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 704 vs 598") from err
    except RuntimeError as wrapped:
        assert is_no_space(wrapped)

    class DcpLike(BaseException):
        failures = {3: (OSError(errno.EDQUOT, "Disk quota exceeded"), None)}

    assert is_no_space(DcpLike())
    assert not is_no_space(ValueError("something else"))
    assert not is_no_space(ValueError("x"), tmp_path, need=1)  # plenty of space here
    assert is_no_space(ValueError("x"), tmp_path, need=1 << 62)
    message = no_space_message(tmp_path, 2_500_000_000)
    assert message.startswith(f"no space left on {tmp_path}: need about 2.50 GB, ") and message.endswith(" GB free")


def test_a_rank0_step_shares_its_value_and_its_error_class(megatron_single_process, tmp_path):
    from lumos_megatron.checkpoint.directory import CheckpointError
    from lumos_megatron.checkpoint.save import on_rank0

    assert on_rank0(lambda: 7, "count") == 7
    me, previous = on_rank0(lambda: claim(tmp_path), "claim")
    assert previous is None and read_owner(tmp_path) == me

    def conflict():
        raise OwnerConflict("taken")

    with pytest.raises(OwnerConflict, match="^taken$"):  # publish refusals keep their class
        on_rank0(conflict, "publish")
    with pytest.raises(CheckpointError, match="^cannot write x: .*No space"):
        on_rank0(lambda: (_ for _ in ()).throw(OSError(errno.ENOSPC, "No space left on device")), "write x")
