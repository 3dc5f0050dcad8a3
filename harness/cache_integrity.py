"""A cached file is reused only when its bytes still hash to what was recorded when it was written.

Caches are keyed by the request (model, weights, config, versions), which says nothing about what the file holds
now: a flipped bit, a truncation or a valid-looking rewrite (every amax x1000) would be used as is. So every
cache entry gets a record, `<file>.sha256`, written last: the hash and size of the file and of its companions
(files that belong to it, such as the export check's figures) plus small facts about how it was made (what it
cost). The record is the commit point of the whole unit: a kill before it leaves files that no record vouches
for, which are rebuilt; a kill after it leaves a complete entry.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable
from pathlib import Path

from harness.fileio import atomic_write, sha256_file

SUFFIX = ".sha256"


def record_of(path: Path) -> Path:
    path = Path(path)
    return path.with_name(path.name + SUFFIX)


def _fingerprint(path: Path) -> dict:
    return {"sha256": sha256_file(path), "bytes": path.stat().st_size}


def commit(path: Path, companions: Iterable[Path] = (), **info) -> None:
    """Record `path` and its companions as one cache entry, with `info` (JSON values) kept beside them."""
    path = Path(path)
    body = {"files": {p.name: _fingerprint(p) for p in (path, *map(Path, companions))}, "info": info}
    atomic_write(record_of(path), json.dumps({**body, "sha256": _digest(body)}, indent=1, sort_keys=True))


def _digest(body: dict) -> str:
    """The record's own hash, so a flipped digit in what it vouches for (a cost, a size) is caught too."""
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()


def check(path: Path) -> dict | None:
    """The entry's info when `path` and every companion match its record; None when anything does not."""
    path = Path(path)
    try:
        record = json.loads(record_of(path).read_text())
        files = record["files"]
        if path.name not in files or record["sha256"] != _digest({"files": files, "info": record["info"]}):
            return None
        for name, want in files.items():
            member = path.with_name(name)
            if not member.is_file() or member.stat().st_size != want["bytes"] or sha256_file(member) != want["sha256"]:
                return None
        return dict(record.get("info") or {})
    except (OSError, ValueError, TypeError, KeyError, AttributeError):
        return None


def reuse(path: Path, log: Callable[[str], None] | None = None) -> dict | None:
    """check(path); a file that exists but fails it is removed (with its record) and reported, so it is rebuilt."""
    info = check(path)
    if info is None:
        path = Path(path)
        if path.exists() and log:
            log(f"warning: {path} does not match the hash recorded when it was written (truncated, damaged, "
                "modified, or from before records were kept): rebuilding it")
        discard(path)
    return info


def discard(path: Path) -> None:
    for p in (Path(path), record_of(path)):
        if p.is_file() or p.is_symlink():
            p.unlink(missing_ok=True)
