"""`harness eval ENGINE | head -1`: when the reader of stdout (or stderr) goes away, the command carries on to its
end with that stream silenced, so its results files are still written and it exits with the status it would have
had (not click's 1 for a broken pipe, which a CI script would read as "a check failed")."""

from __future__ import annotations

import os
import sys


class QuietWhenClosed:
    """A text stream that, on its first broken pipe, points its file descriptor at /dev/null and goes on."""

    def __init__(self, stream):
        self._stream = stream

    def _silence(self) -> None:
        devnull = os.open(os.devnull, os.O_WRONLY)
        try:
            os.dup2(devnull, self._stream.fileno())
        finally:
            os.close(devnull)

    def write(self, text: str) -> int:
        try:
            return self._stream.write(text)
        except BrokenPipeError:
            self._silence()
            return len(text)

    def flush(self) -> None:
        try:
            self._stream.flush()
        except BrokenPipeError:
            self._silence()
            self._stream.flush()  # what was buffered goes to /dev/null

    def __getattr__(self, name):
        return getattr(self._stream, name)


def quiet_when_closed() -> None:
    for name in ("stdout", "stderr"):
        stream = getattr(sys, name)
        if stream is not None and not isinstance(stream, QuietWhenClosed):
            setattr(sys, name, QuietWhenClosed(stream))
