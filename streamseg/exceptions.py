"""Errors raised by streamseg.

The tree::

    StreamsegError
    ├── ConfigError     a setting is unknown, ill-typed or out of range
    ├── SourceError     a source cannot be opened or decoded
    ├── ModelError      a checkpoint cannot be found, loaded or run
    └── SinkError       an output cannot be written

Errors from PyAV, torch and transformers are translated at the boundary of the module that calls
them, so callers only ever need to catch these. Only the CLI turns them into exit codes.
"""

from __future__ import annotations

__all__ = ["StreamsegError", "ConfigError", "SourceError", "ModelError", "SinkError", "Aborted"]


class StreamsegError(Exception):
    """Base class of every error streamseg raises on purpose."""


class ConfigError(StreamsegError, ValueError):
    """A configuration value is unknown, of the wrong type or out of range."""


class SourceError(StreamsegError):
    """A video source cannot be opened or read."""


class ModelError(StreamsegError):
    """A model cannot be found, loaded or run."""


class SinkError(StreamsegError):
    """An output cannot be opened or written."""


class Aborted(KeyboardInterrupt):
    """A run aborted by a second stop signal (Ctrl-C, SIGTERM, SIGHUP), its outputs closed; ``signum`` is the
    signal, for an exit code of 128 + it as shells give. A KeyboardInterrupt, as a second Ctrl-C always was."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum
