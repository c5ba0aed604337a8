"""Running the ``clinseg`` command line in-process from tests."""

from __future__ import annotations

import json

from clinseg.cli import main


def cli_result(capsys, *argv: str) -> dict:
    """The ``result`` event of ``clinseg ARGV --progress jsonl`` run in this process (the run must succeed)."""
    capsys.readouterr()
    assert main(list(argv)) == 0
    events = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.strip()]
    [result] = [e for e in events if e["event"] == "result"]
    return result
