"""A missing optional dependency is one line naming the extra, exit status 2, before any work."""

import importlib.util
import sys

from conftest import REPO

from lumos_megatron.platform import optional_deps


def test_extra_problem_names_the_missing_package_and_the_extra():
    assert optional_deps.extra_problem("quickstart", {"json": "json"}, "x") is None
    line = optional_deps.extra_problem("quickstart", {"no_such_module_xyz": "no-such-pkg"}, "the quickstart")
    assert "no-such-pkg" in line and ".[quickstart]" in line and "\n" not in line


def test_quickstart_without_its_extra_exits_2_with_one_line(tmp_path, monkeypatch, capsys):
    real = importlib.util.find_spec
    monkeypatch.setattr(optional_deps.importlib.util, "find_spec",
                        lambda name, *a: None if name == "skvideo" else real(name, *a))
    folder = str(REPO / "examples" / "quickstart")
    monkeypatch.syspath_prepend(folder)
    spec = importlib.util.spec_from_file_location("run_quickstart", f"{folder}/run_quickstart.py")
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "run_quickstart", module)  # its dataclasses look themselves up
    spec.loader.exec_module(module)
    assert module.main([str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("quickstart: error:") and ".[quickstart]" in err[0]
    assert not (tmp_path / "out").exists()  # checked before any stage
    sys.modules.pop("quickstart_report", None)


def test_building_a_model_from_python_prints_no_megatron_warnings():
    """The Python API is as quiet as the commands: no Apex / norm-fallback / cuda_graph_scope
    warnings when the model stack is imported and a model built (a fresh interpreter, so the
    import-time warnings are seen)."""
    import subprocess

    code = (
        "from lumos_megatron.config import LumosConfig, parse_cli\n"
        "from lumos_megatron.platform.distributed import DistributedEnv, init_distributed\n"
        "from lumos_megatron.platform.parallel import initialize_parallel_state, resolve_layout\n"
        f"cfg = parse_cli(['--config', r'{REPO / 'examples' / 'recipes' / 'tiny_cpu.yaml'}'])\n"
        "env = init_distributed(DistributedEnv(0, 1, 0, '127.0.0.1', 0, 'single'))\n"
        "initialize_parallel_state(cfg, resolve_layout(cfg, 1))\n"
        "from lumos_megatron.models.lumos_model import build_model_chunks\n"
        "build_model_chunks(cfg)\n"
        "print('built')\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0 and "built" in proc.stdout, proc.stderr[-3000:]
    for noise in ("Apex", "full scope is deprecated", "Transformer Engine"):
        assert noise not in proc.stderr, proc.stderr[-3000:]
