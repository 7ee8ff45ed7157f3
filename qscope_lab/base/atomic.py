"""Replacing a file so that it is never lost: the new content goes to a temporary file in the same folder, is
flushed to disk, then renamed over the old one (``os.replace``, atomic on POSIX and Windows). A full disk, a
killed process or any error leaves the old file as it was and no temporary file behind (a SIGKILL or power loss
may leave one, named ``<prefix>...<suffix>``, for the caller to sweep).

A symbolic link is written through: its target is replaced and the link kept. The file keeps its permission
bits; a new file gets the umask's default, as any file a program creates.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import stat
from pathlib import Path


def target(path: str | os.PathLike) -> Path:
    """The file a write to ``path`` replaces: ``path`` itself, or the end of its chain of symbolic links."""
    return Path(os.path.realpath(path))


def write_atomic(path: str | os.PathLike, data: str | bytes, prefix: str = ".tmp-", suffix: str = ".tmp") -> Path:
    """Replace ``path``'s content by ``data`` (str: UTF-8) atomically; returns the file written (the link's
    target when ``path`` is a symbolic link). On any error the old file is intact and the temporary file
    removed, and the error propagates."""
    payload = data.encode("utf-8") if isinstance(data, str) else bytes(data)
    dest = target(path)
    try:
        mode: int | None = stat.S_IMODE(os.stat(dest).st_mode)
    except FileNotFoundError:
        mode = None  # a new file: O_CREAT with 0o666 gets the umask's default, as any new file
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_BINARY", 0)
    for _ in range(100):
        tmp = dest.parent / f"{prefix}{secrets.token_hex(8)}{suffix}"
        try:
            fd = os.open(tmp, flags, 0o666)
            break
        except FileExistsError:
            continue
    else:  # pragma: no cover - 100 collisions of 64 random bits
        raise FileExistsError(f"cannot create a temporary file in {dest.parent}")
    try:
        with os.fdopen(fd, "wb") as handle:
            if mode is not None:
                os.chmod(tmp, mode)
            handle.write(payload)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, dest)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    _sync_folder(dest.parent)
    return dest


def _sync_folder(folder: Path) -> None:
    """Flush the rename itself to disk where the platform allows it (POSIX; a no-op elsewhere)."""
    if os.name != "posix":
        return
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
