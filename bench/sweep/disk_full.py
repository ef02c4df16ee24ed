"""Recognising a full disk, so that it is reported as the machine's state, not as a bug.

A writer says so in its own way: an ``OSError`` with ``ENOSPC``/``EDQUOT``, SQLite's "database or
disk is full" (under SQLAlchemy's and optuna's wrappers), and some (``torch.save``) only with a
bare ``RuntimeError``: for those, the folder written to having almost no space left tells.
"""

from __future__ import annotations

import errno
import shutil
from pathlib import Path

ERRNOS = (errno.ENOSPC, errno.EDQUOT)
SIGNS = ("database or disk is full", "No space left on device")
NEARLY_FULL_BYTES = 16 << 20  # less free space than this after a failed write: the disk is full


def disk_full(exc: BaseException, folder: Path | None = None) -> bool:
    """Whether ``exc`` (anywhere in its chain), or the state of ``folder``, says the disk is full."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, OSError) and seen.errno in ERRNOS:
            return True
        if any(sign in str(seen) for sign in SIGNS):
            return True
        seen = seen.__cause__ or seen.__context__
    if folder is None:
        return False
    try:
        return shutil.disk_usage(folder).free < NEARLY_FULL_BYTES
    except OSError:
        return False
