"""The one error type for bad user input: its message is a single line naming the file."""
from __future__ import annotations

from pathlib import Path
from typing import Optional, Union


class InputError(ValueError):
    """Bad input. ``str(err)`` is one line: ``<source>: <problem>``."""

    def __init__(self, problem: str, source: Optional[Union[str, Path]] = None) -> None:
        self.problem = " ".join(str(problem).split())
        self.source = str(source) if source is not None else None
        super().__init__(f"{self.source}: {self.problem}" if self.source else self.problem)

    def with_source(self, source: Union[str, Path]) -> "InputError":
        """The same problem, attributed to ``source`` (keeps an existing source)."""
        return self if self.source else InputError(self.problem, source)


class Cancelled(Exception):
    """An operation stopped by its caller (a progress callback raised it); the operation changed nothing."""
