"""Every file harness keeps is written whole or not at all, so a crash or kill -9 never leaves half a file."""

from __future__ import annotations

import errno
import hashlib
import os
import re
import signal
import socket
import stat
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from fnmatch import fnmatch
from pathlib import Path

from harness.errors import HarnessError

# Test hook for fault injection: HARNESS_KILL_AT='before:*.onnx' (or 'after:...') makes the process SIGKILL itself
# when it is about to commit (or has just committed) a file whose name matches, as a kill -9 from outside would.
KILL_AT = "HARNESS_KILL_AT"
# atomic_write's temp files of this host: <name>.<host>.<pid>.<thread>.tmp (another host's pids mean nothing here)
_TEMP = re.compile(rf"\.{re.escape(socket.gethostname())}\.(?P<pid>\d+)\.\d+\.tmp$")


def _kill_point(path: Path, when: str) -> None:
    hook = os.environ.get(KILL_AT)
    if hook and ":" in hook:
        at, pattern = hook.split(":", 1)
        if at == when and fnmatch(path.name, pattern):
            os.kill(os.getpid(), signal.SIGKILL)


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
        _kill_point(path, "before")
        os.replace(tmp, path)
        _kill_point(path, "after")
    finally:
        tmp.unlink(missing_ok=True)
    return path


def read_user_text(path: Path, what: str, fix: str) -> str:
    """A text file the user names (`what`: the option or role, e.g. "--skip-from"), read or refused in one
    line: missing or unreadable, not a regular file (a FIFO nobody writes would hang), or not UTF-8."""
    path = expect_file(Path(path), what)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise HarnessError(f"{what} {path}: cannot read it ({exc.strerror}); {fix}") from exc
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise HarnessError(f"{what} {path}: not UTF-8 text (byte 0x{data[exc.start]:02x} at offset {exc.start}); "
                           "save it as UTF-8") from exc


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


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


def clean_stale_temps(folder: Path) -> list[Path]:
    """Remove atomic_write's temp files whose writer (a process of this host) is dead: what a kill -9 left."""
    removed = []
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return removed
    for entry in entries:
        match = _TEMP.search(entry.name)
        if match and entry.is_file(follow_symlinks=False) and not _alive(int(match["pid"])):
            try:
                os.unlink(entry.path)
                removed.append(Path(entry.path))
            except OSError:
                pass
    return removed


def expect_file(path: Path, what: str) -> Path:
    """Refuse a path that exists but is not a regular file (a FIFO nobody writes would hang the read)."""
    path = Path(path)
    try:
        mode = path.stat().st_mode
    except OSError:
        return path  # missing: the reader's own error names the fix
    if not stat.S_ISREG(mode):
        kind = "a folder" if stat.S_ISDIR(mode) else "a FIFO" if stat.S_ISFIFO(mode) else "not a regular file"
        raise HarnessError(f"{what} {path}: is {kind}; give a regular file")
    return path


# Failures of the machine, not of the work: a cell that meets one has no result, and the run stops.
MACHINE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.EIO}
MACHINE_TEXT = ("No space left on device", "Disk quota exceeded", "Read-only file system", "file write failed")


def machine_fault(exc: BaseException) -> str | None:
    """The machine's failure behind `exc` (no space, no permission, I/O error), else None.

    Walks the cause chain, since libraries wrap OSError (torch.save reports a full disk as RuntimeError).
    """
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, OSError) and exc.errno in MACHINE_ERRNOS:
            where = f": {exc.filename}" if exc.filename else ""
            return f"{exc.strerror or os.strerror(exc.errno)}{where}"
        text = str(exc)
        for marker in MACHINE_TEXT:
            if marker in text:
                return text.strip().splitlines()[0] if text.strip() else marker
        exc = exc.__cause__ or exc.__context__
    return None
