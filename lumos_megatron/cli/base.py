"""The one argument-parser style of every ``lumos-*`` command.

* usage errors are one line on stderr, ``<prog>: error: ...``, exit status 2 (argparse prints its
  whole usage block first);
* ``--version`` prints the package version;
* ``--help`` ends with worked examples (``examples``), shown verbatim.

Commands report their own bad input the same way with :func:`fail`.
"""

from __future__ import annotations

import argparse
import sys
from typing import Optional, Sequence


def package_version() -> str:
    """The installed ``lumos_megatron`` version."""
    from lumos_megatron import __version__

    return __version__


class CommandParser(argparse.ArgumentParser):
    """``argparse.ArgumentParser`` with one-line errors, ``--version`` and an examples epilog."""

    def __init__(self, prog: Optional[str] = None, description: Optional[str] = None,
                 examples: Sequence[str] = (), **kwargs):
        epilog = "examples:\n" + "\n".join(f"  {line}" for line in examples) if examples else None
        kwargs.setdefault("formatter_class", argparse.RawDescriptionHelpFormatter)
        super().__init__(prog=prog, description=description, epilog=epilog, **kwargs)
        self.add_argument("--version", action="version", version=f"%(prog)s {package_version()}")

    def error(self, message: str):
        """One line on stderr, exit status 2 (no usage block)."""
        self.exit(2, f"{self.prog}: error: {message}\n")


def fail(prog: str, message: object, status: int = 2) -> int:
    """Print ``<prog>: error: <message>`` on stderr and return ``status`` (for ``return fail(...)``)."""
    print(f"{prog}: error: {message}", file=sys.stderr)
    return status


def run(main, argv: Optional[Sequence[str]] = None) -> None:
    """``sys.exit(main(argv))``: what a console script or a ``tools/`` wrapper calls."""
    sys.exit(main(argv))
