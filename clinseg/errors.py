"""Errors that reach the user as one line: which input, what is wrong."""

from __future__ import annotations


class ClinsegError(Exception):
    """Base class: the message is shown to the user as is, on one line."""

    def __init__(self, subject: str, problem: str) -> None:
        self.subject = str(subject)
        self.problem = problem
        super().__init__(f"{self.subject}: {problem}")


class InputError(ClinsegError):
    """An input file, volume or argument cannot be used (corrupt, 2-D, NaN, wrong modality...)."""


class ModelError(ClinsegError):
    """A model is unknown, not installed, or its files fail verification."""


class ResourceError(ClinsegError):
    """A run would exceed a memory or size limit."""


class Cancelled(ClinsegError):
    """The user cancelled a run."""

    def __init__(self, subject: str = "run") -> None:
        super().__init__(subject, "cancelled by the user")
