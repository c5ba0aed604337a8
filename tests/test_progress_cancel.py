"""Cooperative cancel: the first SIGTERM/SIGINT cancels the token, a second one interrupts at once."""

from __future__ import annotations

import os
import signal

import pytest

from clinseg.errors import Cancelled
from clinseg.progress import cancel_on_signals


def test_first_signal_cancels_the_token_second_interrupts_and_handlers_are_restored():
    before = signal.getsignal(signal.SIGTERM)
    with cancel_on_signals() as token:
        token.check()  # nothing yet
        os.kill(os.getpid(), signal.SIGTERM)
        assert token.cancelled
        with pytest.raises(Cancelled, match="airway: cancelled by the user"):
            token.check("airway")
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)
    assert signal.getsignal(signal.SIGTERM) is before


def test_cli_passes_the_token_to_the_command(monkeypatch):
    from clinseg import cli

    seen = {}

    def command(args):
        os.kill(os.getpid(), signal.SIGTERM)
        seen["cancelled"] = args.cancel.cancelled
        args.cancel.check("demo")

    parser = cli.build_parser()
    monkeypatch.setattr(cli, "build_parser", lambda: parser)
    args = parser.parse_args(["info", "x"])
    monkeypatch.setattr(parser, "parse_args", lambda argv=None: args)
    args.func = command
    assert cli.main([]) == 130 and seen == {"cancelled": True}
