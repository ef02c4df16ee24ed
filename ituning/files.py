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
import stat
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
def folder_aside(dest: str | os.PathLike[str], done: str) -> Iterator[Path]:
    """Build the folder ``dest`` in a hidden sibling (yielded) and rename it into place when the
    block ends, after the block wrote the file ``done`` last into it; the sibling is removed
    either way. A killed build leaves only a ``.<name>.<random>.partial`` folder, never a ``dest``
    that looks complete; a peer that published ``dest`` first wins (both built the same thing)."""
    import shutil

    dest = Path(dest)
    tmp = dest.with_name(f".{dest.name}.{secrets.token_hex(4)}.partial")
    tmp.mkdir(parents=True)  # the umask's permissions, not mkdtemp's owner-only ones
    try:
        yield tmp
        try:
            os.replace(tmp, dest)
        except OSError:  # another process renamed its own copy into place first
            if not (dest / done).is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def built_aside(
    dest: str | os.PathLike[str], done: str, *, unfinished: str, error: type[Exception]
) -> bool:
    """Whether ``dest`` is a finished :func:`folder_aside` build (it holds ``done``); ``False``
    when it does not exist. A ``dest`` without ``done`` was not published by ``folder_aside``
    (which never renames an unfinished build into place), so it is not built over: one line (an
    ``error``) saying so, ending in ``unfinished`` (what it is not, and the fix)."""
    dest = Path(dest)
    if (dest / done).is_file():
        return True
    if dest.exists():
        raise error(f"'{dest}' exists but holds no {done}, {unfinished}")
    return False


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


def user_cache_file(name: str) -> Path:
    """``name`` in the user's cache folder for this project (``$XDG_CACHE_HOME/ituning``, by
    default ``~/.cache/ituning``): what is remembered per machine, not per runs folder."""
    root = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(root) / "ituning" / name


def canonical_json(payload: Any) -> str:
    """Sorted keys, no spaces: equal data always gives equal text (and equal digests)."""
    return json.dumps(payload, sort_keys=True, separators=(",", ":"))


MAX_INPUT_BYTES = 1 << 20  # a spec or a run config is a few KB of YAML


def read_text(path: str | os.PathLike[str], what: str, limit: int = MAX_INPUT_BYTES) -> str:
    """A UTF-8 text file a user supplied (a spec, a config), or a one-line ``ConfigError`` naming
    the file and what is wrong with it: :func:`read_regular`, then UTF-8."""
    from ituning.errors import ConfigError, printable

    data = read_regular(path, what, limit, form="YAML text file", size="a few KB of YAML text")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"{printable(os.fspath(path))}: byte {exc.start}: not UTF-8 text; a {what} is a YAML "
            "text file"
        ) from None


def read_regular(
    path: str | os.PathLike[str],
    what: str,
    limit: int,
    *,
    form: str,
    size: str,
    error: type[Exception] | None = None,
) -> bytes:
    """The bytes of a file a user supplied, or one line (an ``error``, default ``ConfigError``)
    naming it and what is wrong: ``form`` says what the file should be ("YAML text file"), ``size``
    how big ("a few KB of YAML text").

    Only a regular file of at most ``limit`` bytes is read: a FIFO would block the open forever
    and ``/dev/zero`` fill the memory, so the file is checked with ``stat`` before it is opened
    (non-blocking, checked again on the open descriptor in case it was swapped) and at most
    ``limit + 1`` bytes are read (``/proc`` files report size 0).
    """
    from ituning.errors import ConfigError, printable

    error = error or ConfigError
    shown = printable(os.fspath(path))
    too_big = f"{shown}: more than {limit:,} bytes; a {what} is {size}"

    def check(st: os.stat_result) -> None:
        if stat.S_ISDIR(st.st_mode):
            raise error(f"{shown}: is a folder, not a {form}")
        if not stat.S_ISREG(st.st_mode):
            raise error(
                f"{shown}: not a regular file (a pipe, device or socket); a {what} is a {form}"
            )
        if st.st_size > limit:
            raise error(too_big)

    try:
        check(os.stat(path))
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        with os.fdopen(fd, "rb") as fh:
            check(os.fstat(fh.fileno()))
            data = fh.read(limit + 1)
    except error:
        raise
    except FileNotFoundError:
        raise error(f"{shown}: {what} not found") from None
    except (OSError, ValueError) as exc:  # ValueError: a NUL byte in the name
        why = getattr(exc, "strerror", None) or printable(str(exc))
        raise error(f"{shown}: cannot read the {what} ({why})") from None
    if len(data) > limit:
        raise error(too_big)
    return data
