"""Helpers shared by the command modules: one-line errors and exit codes."""

from __future__ import annotations

import sys
from typing import NoReturn

EXIT_OK = 0
EXIT_BAD_INPUT = 2
EXIT_INFEASIBLE = 3


def fail(message: str, code: int = EXIT_BAD_INPUT) -> NoReturn:
    """Print ``loladeft: <message>`` as one line on stderr and exit with ``code``."""
    sys.stderr.write(f"loladeft: {' '.join(message.split())}\n")
    raise SystemExit(code)
