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
    """Write `data` (bytes, text, or a function that writes the temp path it is given), then rename.

    A failure to write (a missing or read-only folder, a full disk, a file too large) raises WriteFailed, one line
    naming `path` and the cause; other exceptions of a writing function (a build that fails) pass through.
    """
    path = Path(path)
    make_folder(path.parent, path)
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
    except Exception as exc:
        if _write_error(exc, tmp, path):
            raise WriteFailed(path, exc) from exc
        raise
    finally:
        try:
            tmp.unlink(missing_ok=True)
        except OSError:
            pass
    return path


def _write_error(exc: BaseException, *paths: Path) -> bool:
    """Whether `exc` is a failure to write one of `paths` or of the machine (full disk, quota, read-only ...)."""
    if isinstance(exc, WriteFailed):
        return False  # already names its file
    if isinstance(exc, OSError):  # of this file, or of the disk whichever file (not a build reading its input)
        return exc.filename is None or str(exc.filename) in {str(p) for p in paths} or exc.errno in DISK_ERRNOS
    return machine_fault(exc) is not None  # a library's wrapper (torch.save: "file write failed")


def make_folder(folder: Path, for_path: Path | None = None) -> Path:
    """mkdir -p, or WriteFailed naming what was to be written there (`for_path`, else the folder) and why."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise WriteFailed(for_path or folder, exc) from exc
    return folder


def write_reason(path: Path, exc: BaseException) -> str:
    """Why `path` could not be written, in words: the cause a user can act on, with its fix."""
    if isinstance(exc, OSError) and exc.errno in (errno.EEXIST, errno.ENOTDIR):
        blocker = next((p for p in [*reversed(Path(path).parents)] if p.exists() and not p.is_dir()), None)
        if blocker is not None:
            return f"{blocker} is a file, not a folder; choose another path"
    if isinstance(exc, OSError) and exc.errno is not None:
        text = exc.strerror or os.strerror(exc.errno)
        fix = MACHINE_FIXES.get(exc.errno)
        return f"{text}; {fix}" if fix else text
    text = str(exc).strip()
    return machine_fault(exc) or (text.splitlines()[0] if text else type(exc).__name__)


class WriteFailed(HarnessError):
    """A file harness was writing could not be written: `cannot write FILE: reason`. Its cause is the machine's or
    the path's, never the work's, so a sweep stores nothing for the cell it happened in."""

    def __init__(self, path: Path, exc: BaseException):
        self.path = Path(path)
        self.reason = write_reason(self.path, exc)
        super().__init__(f"cannot write {self.path}: {self.reason}")


def read_user_bytes(path: Path, what: str, fix: str) -> bytes:
    """A file the user names (`what`: the option or role, e.g. "--skip-from"), read or refused in one line:
    missing or unreadable, or not a regular file (a FIFO nobody writes would hang the read)."""
    path = expect_file(Path(path), what, fix)
    try:
        return path.read_bytes()
    except OSError as exc:
        raise HarnessError(f"{what} {path}: cannot read it ({exc.strerror}); {fix}") from exc


def read_user_text(path: Path, what: str, fix: str) -> str:
    """read_user_bytes, decoded: a file that is not UTF-8 is refused in one line too."""
    data = read_user_bytes(path, what, fix)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise HarnessError(f"{what} {path}: not UTF-8 text (byte 0x{data[exc.start]:02x} at offset {exc.start}); "
                           "save it as UTF-8") from exc


def read_user_onnx(path: Path, what: str, fix: str):
    """An ONNX model the user names, loaded or refused in one line: read_user_bytes' refusals, then a file that
    does not parse, or parses to no graph (an empty file parses as an empty model)."""
    import onnx

    path = expect_file(Path(path), what, fix)
    try:
        model = onnx.load(str(path))
    except Exception as exc:  # protobuf's DecodeError, OSError, onnx's own: the file is not an ONNX model
        raise HarnessError(f"{what} {path}: not a readable ONNX file ({type(exc).__name__}); {fix}") from exc
    if not model.graph.input or not model.graph.output:
        kind = "a graph with no inputs or outputs" if path.stat().st_size else "an empty file (0 bytes)"
        raise HarnessError(f"{what} {path}: {kind}, not an ONNX model; {fix}")
    return model


@contextmanager
def locked(path: Path) -> Iterator[None]:
    """Hold an exclusive lock on `path`.lock while making `path`, so workers that want the same cache entry make it
    once: the second waits, then finds it made. flock covers processes on one host and, through the NFS lock
    manager, hosts sharing an NFS folder."""
    import fcntl

    lock = Path(f"{path}.lock")
    make_folder(lock.parent, lock)
    try:
        handle = open(lock, "a")  # noqa: SIM115 (closed below, after the lock is released)
    except OSError as exc:
        raise WriteFailed(lock, exc) from exc
    with handle:
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


def expect_file(path: Path, what: str, missing: str | None = None) -> Path:
    """Refuse a path that exists but is not a regular file (a FIFO nobody writes would hang the read); with
    `missing` (the fix), refuse a path that does not exist too, else leave that to the reader's own error."""
    path = Path(path)
    try:
        mode = path.stat().st_mode
    except OSError as exc:
        if missing is None:
            return path
        why = "no such file" if exc.errno == errno.ENOENT else f"cannot read it ({exc.strerror})"
        raise HarnessError(f"{what} {path}: {why}; {missing}") from exc
    if not stat.S_ISREG(mode):
        kind = "a folder" if stat.S_ISDIR(mode) else "a FIFO" if stat.S_ISFIFO(mode) else "not a regular file"
        raise HarnessError(f"{what} {path}: is {kind}; give a regular file")
    return path


# Failures of the machine, not of the work: a cell that meets one has no result, and the run stops.
DISK_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS, errno.EIO}
MACHINE_ERRNOS = DISK_ERRNOS | {errno.EACCES, errno.EPERM}
MACHINE_TEXT = ("No space left on device", "Disk quota exceeded", "File too large", "Read-only file system",
                "file write failed")
MACHINE_FIXES = {
    errno.ENOSPC: "free disk space there and run the command again (finished work is kept)",
    errno.EDQUOT: "free space in your quota and run the command again (finished work is kept)",
    errno.EFBIG: "the file system or the process's file size limit (ulimit -f) refuses a file this large: "
                 "choose another disk or raise the limit",
    errno.EACCES: "make it writable (or choose another path) and run the command again",
    errno.EPERM: "make it writable (or choose another path) and run the command again",
    errno.EROFS: "the file system is read-only: choose another path",
    errno.EISDIR: "that is a folder: give a file path",
    errno.EIO: "the disk reported an I/O error: check it, then run the command again",
}


def machine_fault(exc: BaseException) -> str | None:
    """The machine's failure behind `exc` (no space, file too large, no permission, I/O error, a file that could
    not be written), else None.

    Walks the cause chain, since libraries wrap OSError (torch.save reports a full disk as RuntimeError): an
    OSError or WriteFailed anywhere in it is named first, then a message that says what the machine did.
    """
    chain, seen = [], set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        chain.append(exc)
        exc = exc.__cause__ or exc.__context__
    for link in chain:
        if isinstance(link, WriteFailed):
            return link.message
        if isinstance(link, OSError) and link.errno in MACHINE_ERRNOS:
            where = f": {link.filename}" if link.filename else ""
            return f"{link.strerror or os.strerror(link.errno)}{where}"
    for link in chain:
        text = str(link).strip()
        if any(marker in text for marker in MACHINE_TEXT):
            return text.splitlines()[0]
    return None
