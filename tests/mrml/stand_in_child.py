"""A stand-in for the ``clinseg <task>`` child process, for module tests that check the Slicer side alone.

``WritingChild(args)`` has ``ProcessRunner``'s interface: it writes a real output folder with ``write_result``
(the ``Result`` its subclass's ``result()`` makes from the arguments) when waited on, and honours cancel the way
the real child does (exit 130, nothing written).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path

from clinseg.errors import Cancelled
from clinseg.output import write_result
from clinseg.result import Result


class WritingChild(ABC):
    def __init__(self, args) -> None:
        self.args, self.cancelled, self.finished, self.returncode = list(args), False, False, None

    def option(self, name: str) -> str | None:
        return self.args[self.args.index(name) + 1] if name in self.args else None

    @property
    def inputs(self) -> list[str]:
        return self.args[1 : self.args.index("-o")]

    @abstractmethod
    def result(self) -> Result:
        """The task's result for ``self.args`` (each module test's stand-in makes its own)."""

    def start(self) -> None:
        """Nothing to launch: the output is written when waited on."""
        return None

    def poll(self) -> list[dict]:
        return []

    def cancel(self) -> None:
        self.cancelled = True

    def wait(self, timeout=None, on_event=None) -> dict:
        self.finished = True
        if self.cancelled:
            self.returncode = 130
            raise Cancelled()
        out = Path(self.option("-o"))
        if not out.exists():
            write_result(self.result(), out)
        self.returncode = 0
        return {"event": "result", "out": str(out)}
