"""Image file names from dataset files, checked before any of them is turned into a path.

Dataset JSON is data, not code: a ``filename`` such as ``../../etc/passwd`` or ``/etc/passwd`` must
never make a loader read outside the image root. The check is lexical (no ``..`` component, not
absolute, no backslash or drive, no NUL) and happens when a record is built, so every later
``root / file`` stays below the root. Symbolic links that the user placed inside the root are
followed: they are the user's choice, not something a dataset file can create.
"""

from __future__ import annotations

from pathlib import Path, PurePosixPath

from ituning.errors import DataError


def safe_relpath(name: object, *, where: str) -> str:
    """Return ``name`` as a normalised relative POSIX path, or raise DataError naming ``where``.

    ``where`` says where the name came from (e.g. ``dataset_coco.json: images[3].filename``).
    """
    if not isinstance(name, str) or not name.strip():
        raise DataError(f"{where}: expected a non-empty file name, got {name!r}")
    if "\x00" in name or "\\" in name:
        raise DataError(f"{where}: file name {name!r} contains a NUL or backslash; use '/' only")
    pure = PurePosixPath(name)
    if pure.is_absolute() or (pure.parts and pure.parts[0].endswith(":")):
        raise DataError(
            f"{where}: file name {name!r} is absolute; it must be relative to the image root"
        )
    parts = [p for p in pure.parts if p != "."]
    if ".." in parts:
        raise DataError(f"{where}: file name {name!r} escapes the image root ('..' is refused)")
    if not parts:
        raise DataError(f"{where}: file name {name!r} names no file")
    return "/".join(parts)


def resolve_image(root: Path, name: str, *, where: str = "image") -> Path:
    """``root / name`` after :func:`safe_relpath`; never a path outside ``root`` (lexically)."""
    return Path(root) / safe_relpath(name, where=where)


def require_images(root: Path, files: list[tuple[str, str]]) -> None:
    """Raise one DataError if any ``(relative file, where)`` is not a file below ``root``.

    The message names the first missing image, the field it came from and how many are missing,
    so a wrong image root reads as one line rather than thousands.
    """
    root = Path(root)
    if not root.is_dir():
        raise DataError(
            f"image root {root} is not a directory; point the loader at the image folder"
        )
    missing = [(f, w) for f, w in files if not (root / f).is_file()]
    if missing:
        f, w = missing[0]
        raise DataError(
            f"{w}: image not found: {root / f} ({len(missing)} of {len(files)} images missing; "
            "check the image root, or pass check_images=False to skip this check)"
        )
