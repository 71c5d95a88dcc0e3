"""Every console script: importable, ``--help`` with examples and ``--version`` (exit 0), and usage
errors as one line with exit status 2."""

import importlib
import re

import pytest

from conftest import REPO

import lumos_megatron


def _console_scripts():
    text = (REPO / "setup.py").read_text()
    return re.findall(r'"(lumos-[a-z-]+)=([\w.]+):(\w+)"', text)


SCRIPTS = _console_scripts()
EXPECTED = {"lumos-train", "lumos-generate", "lumos-convert", "lumos-inspect", "lumos-pretokenize",
            "lumos-train-video-tokenizer", "lumos-plan", "lumos-ladder", "lumos-collect", "lumos-fit",
            "lumos-evaluate"}


def _call(module, function, argv):
    main = getattr(importlib.import_module(module), function)
    try:
        return main(argv)
    except SystemExit as exit_:
        return exit_.code


def test_every_command_is_a_console_script():
    assert {name for name, _, _ in SCRIPTS} == EXPECTED


@pytest.mark.parametrize("name, module, function", SCRIPTS, ids=[s[0] for s in SCRIPTS])
def test_help_has_examples_and_version_is_the_package_version(capsys, name, module, function):
    assert _call(module, function, ["--help"]) in (0, None)
    out = capsys.readouterr().out
    assert "xamples:" in out and name in out, out[-800:]
    assert _call(module, function, ["--version"]) in (0, None)
    assert capsys.readouterr().out.strip().endswith(lumos_megatron.__version__)


@pytest.mark.parametrize("name, module, function",
                         [s for s in SCRIPTS if s[0] != "lumos-train"], ids=[s[0] for s in SCRIPTS if s[0] != "lumos-train"])
def test_an_unknown_option_is_one_line_with_status_2(capsys, name, module, function):
    assert _call(module, function, ["--no-such-option"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and ": error: " in err[0], err
