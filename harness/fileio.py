"""Every file harness keeps is written whole or not at all, so a crash or kill -9 never leaves half a file."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path


def atomic_write(path: Path, data: bytes | str | Callable[[Path], object]) -> Path:
    """Write `data` (bytes, text, or a function that writes the temp path it is given), then rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
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
