"""The planner's step audit on a real CPU step: live bytes, host syncs with file:line, phases.

These run in-process on the real CPU (``trace_rank(fake=False)`` is the same code path the fake
trace runs, with the audit counting CPU tensors), so they are quick; the fake-CUDA traces are
checked against the same real runs in tests/distributed/test_plan_validation.py.
"""

from __future__ import annotations

import inspect

import pytest
import torch

from lumos_megatron.plan.step_audit import StepAudit, call_site

from conftest import TINY_RECIPE

HERE = "tests/unit/test_plan_audit.py"


class _ToyWithItem(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.linear = torch.nn.Linear(8, 8)

    def forward(self, x):
        y = self.linear(x)
        if float(y.abs().max().item()) > 1e9:  # the deliberate host sync
            y = y * 0
        return y


def _line_of(fragment: str, obj) -> int:
    lines, start = inspect.getsourcelines(obj)
    return start + next(i for i, text in enumerate(lines) if fragment in text)


def test_toy_item_is_found_with_its_file_and_line():
    model = _ToyWithItem()
    with StepAudit("cpu") as audit:
        audit.record = True
        for _ in range(3):
            model(torch.randn(4, 8)).sum().backward()
    syncs = audit.findings("syncs")
    where = f"{HERE}:{_line_of('.item()', _ToyWithItem.forward)}"
    assert [(f.where, f.op, f.count) for f in syncs] == [(where, "item()/tolist()", 3)]


def test_boolean_mask_indexing_and_nonzero_are_syncs_and_cpu_reads_of_another_device_are_not():
    x = torch.randn(16)
    with StepAudit("cpu") as audit:
        audit.record = True
        x[x > 0].sum()
        (x > 0).nonzero()
    ops = sorted(f.op for f in audit.findings("syncs"))
    assert ops == ["aten.index (boolean mask)", "aten.nonzero"]
    # Counting a different device type, the same CPU reads are not host syncs.
    with StepAudit("cuda") as other:
        other.record = True
        x[x > 0].sum()
        float(x.sum().item())
    assert other.findings("syncs") == []


def test_live_bytes_and_phase_peak():
    with StepAudit("cpu") as audit:
        audit.begin("phase")
        a = torch.empty(1000, dtype=torch.float32)
        b = torch.empty(500, dtype=torch.float32)
        del a
        stats = audit.end("phase")
        assert stats.peak_bytes - stats.start_bytes == 6000
        assert stats.end_bytes - stats.start_bytes == 2000
        del b


def test_call_site_names_the_caller():
    assert call_site() == f"{HERE}:{_line_of('assert call_site()', test_call_site_names_the_caller)}"


def test_real_step_lists_a_deliberate_item_in_the_model(megatron_single_process, monkeypatch):
    """A real training step of the tiny recipe with an ``.item()`` added to every RMSNorm: the
    audit names this file and line, once per norm call of the step (4 micro-batches)."""
    from lumos_megatron.config import parse_cli
    from lumos_megatron.models import norms
    from lumos_megatron.plan.step_trace import trace_rank

    calls = {"n": 0}
    original = norms.RMSNorm.forward

    def forward_with_item(self, x):
        out = original(self, x)
        calls["n"] += 1
        if out.float().abs().sum().item() < 0:  # the deliberate host sync
            out = out * 0
        return out

    monkeypatch.setattr(norms.RMSNorm, "forward", forward_with_item)
    cfg = parse_cli(["--config", str(TINY_RECIPE)])
    report = trace_rank(cfg, 1, 0, "toy", fake=False)
    where = f"{HERE}:{_line_of('.item() < 0', test_real_step_lists_a_deliberate_item_in_the_model)}"
    found = {(s["where"], s["op"]): s["count"] for s in report.host_syncs}
    # The step runs 4 micro-batches; the trace runs 1 and scales (no pipeline: every micro-batch is
    # the same); forward norms only (recompute is off), so calls per micro-batch = calls seen.
    assert found[(where, "item()/tolist()")] == 4 * calls["n"]
    assert report.peak_bytes > report.parameter_bytes + report.gradient_bytes
    megatron_lines = [s["where"] for s in report.host_syncs if s["where"].startswith("megatron/")]
    assert any(w.startswith("megatron/core/optimizer/") for w in megatron_lines)


def test_blocking_copies_to_the_host_are_syncs_and_leave_the_device():
    from lumos_megatron.plan.fake_mode import fake_mode

    with fake_mode(), StepAudit("meta") as audit:
        audit.record = True
        x = torch.empty(8, device="meta")
        x.to("cpu")
        x.to("cpu", non_blocking=True)
    syncs = [(f.op, f.count) for f in audit.findings("syncs")]
    leaves = sum(f.count for f in audit.findings("leaves_device") if f.op == "copy to cpu")
    assert syncs == [("copy to cpu", 1)] and leaves == 2  # the non-blocking copy is no sync
