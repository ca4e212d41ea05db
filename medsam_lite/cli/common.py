"""Helpers shared by the subcommand modules."""
from __future__ import annotations

import sys
from typing import Iterable, Optional


def report_failures(command: str, messages: Iterable[str], total: Optional[int] = None) -> int:
    """Print ``medsam-lite COMMAND: N of M case(s) failed:`` and one indented line per failure on stderr.

    Returns the exit code: 1 when there were failures, else 0.
    """
    messages = list(messages)
    if not messages:
        return 0
    of = f" of {total}" if total is not None else ""
    print(f"medsam-lite {command}: {len(messages)}{of} case(s) failed:", file=sys.stderr)
    for message in messages:
        print(f"  {message}", file=sys.stderr)
    return 1
