"""File plumbing shared by the library and the harness: atomic writes, file locks, digests.

Why one module: a kill (SIGKILL, power loss, a full disk) in the middle of a write must never leave
a half-written file under its final name, because "this file exists" is how a run, a cache shard or
a checkpoint says it is complete. Every writer therefore writes a temporary file beside the target,
flushes it to disk and renames it over the target (``os.replace`` is atomic on POSIX). Locks use
``flock``: the kernel releases them when their holder dies, so a killed process leaves no stale lock.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str], suffix: str = ".tmp") -> Iterator[Path]:
    """A temporary path beside ``path`` to write to (by any writer that takes a file name); on a
    clean exit it is synced and renamed over ``path``, on an error removed. ``suffix`` ends the
    temporary name: ``.tmp`` keeps it out of globs for finished files; a writer that picks its
    format by extension (a browser's screenshot) gets e.g. ``.tmp.png``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}{suffix}")
    try:
        yield tmp
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike[str], mode: str = "wb", **kwargs: Any) -> Iterator[IO]:
    """``open(path, mode)`` whose content appears under ``path`` only once complete."""
    with atomic_path(path) as tmp, open(tmp, mode, **kwargs) as fh:
        yield fh
        fh.flush()


def atomic_write(path: str | os.PathLike[str], data: bytes | str) -> Path:
    """Write ``data`` (text as UTF-8) to ``path`` atomically; returns ``path``."""
    raw = data.encode("utf-8") if isinstance(data, str) else data
    with atomic_open(path, "wb") as fh:
        fh.write(raw)
    return Path(path)


def atomic_write_json(path: str | os.PathLike[str], payload: Any, **dumps: Any) -> Path:
    """``payload`` as JSON (``json.dumps`` keywords pass through), newline-terminated, atomically."""
    return atomic_write(path, json.dumps(payload, **dumps) + "\n")


@contextlib.contextmanager
def file_lock(path: str | os.PathLike[str]) -> Iterator[None]:
    """An exclusive ``flock`` on ``path`` (created with its folder) for the block."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def sha256_file(path: str | os.PathLike[str], chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file, read in chunks (weights can be gigabytes)."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


def sha256_text(text: str, length: int | None = None) -> str:
    """Hex sha256 of UTF-8 text, optionally cut to ``length`` characters (ids, cache keys)."""
    digest = hashlib.sha256(text.encode("utf-8")).hexdigest()
    return digest if length is None else digest[:length]


def canonical_json(payload: Any) -> str:
    """Sorted keys, no spaces: equal data always gives equal text (and equal digests)."""
    return json.dumps(payload, sort_keys=True, separators=(",", ":"))


def read_text(path: str | os.PathLike[str], what: str) -> str:
    """A UTF-8 text file a user supplied (a spec, a config), or a one-line ``ConfigError`` naming
    the file and what is wrong with it."""
    from ituning.errors import ConfigError

    try:
        return Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: {what} not found") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"{path}: byte {exc.start}: not UTF-8 text; a {what} is a YAML text file"
        ) from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the {what} ({exc.strerror or exc})") from None
