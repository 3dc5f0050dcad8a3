"""Every file harness keeps is written whole or not at all, so a crash or kill -9 never leaves half a file."""

from __future__ import annotations

import os
import socket
import stat
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from harness.errors import HarnessError


def atomic_write(path: Path, data: bytes | str | Callable[[Path], object]) -> Path:
    """Write `data` (bytes, text, or a function that writes the temp path it is given), then rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # Host, process and thread in the temp name: writers on several nodes of a shared disk never share one.
    tmp = path.with_name(f"{path.name}.{socket.gethostname()}.{os.getpid()}.{threading.get_ident()}.tmp")
    try:
        if callable(data):
            data(tmp)
        elif isinstance(data, str):
            tmp.write_text(data)
        else:
            tmp.write_bytes(data)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def read_user_text(path: Path, what: str, fix: str) -> str:
    """A text file the user names (`what`: the option or role, e.g. "--skip-from skip.txt"), read or refused in
    one line: missing or unreadable, not a regular file (a FIFO nobody writes would hang), or not UTF-8."""
    path = Path(path)
    try:
        if not stat.S_ISREG(path.stat().st_mode):
            raise HarnessError(f"{what}: not a regular file; {fix}")
        data = path.read_bytes()
    except OSError as exc:
        raise HarnessError(f"{what}: cannot read it ({exc.strerror}); {fix}") from exc
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise HarnessError(f"{what}: not UTF-8 text (byte 0x{data[exc.start]:02x} at offset {exc.start}); save it "
                           f"as UTF-8") from exc


@contextmanager
def locked(path: Path) -> Iterator[None]:
    """Hold an exclusive lock on `path`.lock while making `path`, so workers that want the same cache entry make it
    once: the second waits, then finds it made. flock covers processes on one host and, through the NFS lock
    manager, hosts sharing an NFS folder."""
    import fcntl

    lock = Path(f"{path}.lock")
    lock.parent.mkdir(parents=True, exist_ok=True)
    with open(lock, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
