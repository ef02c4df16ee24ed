"""SPICE availability and execution, without ever triggering pycocoevalcap's download.

pycocoevalcap's ``Spice()`` constructor downloads Stanford CoreNLP 3.6.0 (two jars, ~400 MB) from
nlp.stanford.edu whenever ``spice/lib/stanford-corenlp-3.6.0.jar`` is missing, which fails offline
and no package registry carries those jars. So SPICE is *available* only when both jars are already
in pycocoevalcap's ``spice/lib/`` or in a directory given explicitly (argument or the
``ITUNING_SPICE_JARS`` environment variable), from which they are linked into ``spice/lib/`` (the
SPICE jar finds its dependencies there through its manifest class path).

SPICE is run with pycocoevalcap's ``spice-1.0.jar`` and flags, but not through its ``Spice`` class:
that class writes temporary files and a parse cache inside site-packages, and on Java >= 9 that
cache fails (``InaccessibleObjectException`` from its FST serialiser). Here SPICE runs without the
cache, in a temporary folder. Not exercised on this machine, which has no CoreNLP jars.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path

from pycocoevalcap.spice import spice as _pycoco_spice

from ituning.errors import ConfigError, ITuningError

SPICE_DIR = Path(_pycoco_spice.__file__).resolve().parent
SPICE_LIB = SPICE_DIR / "lib"
SPICE_JAR = _pycoco_spice.SPICE_JAR
CORENLP_JARS = ("stanford-corenlp-3.6.0.jar", "stanford-corenlp-3.6.0-models.jar")
SPICE_JARS_ENV = "ITUNING_SPICE_JARS"
HOW_TO_ENABLE = (
    f"to enable SPICE, copy {' and '.join(CORENLP_JARS)} (from Stanford's "
    f"stanford-corenlp-full-2015-12-09.zip) into {SPICE_LIB} or into a folder named by "
    f"${SPICE_JARS_ENV} or the spice_jars argument"
)


def _jar_dir(spice_jars: str | os.PathLike[str] | None) -> Path | None:
    if spice_jars is not None:
        return Path(spice_jars).expanduser()
    env = os.environ.get(SPICE_JARS_ENV)
    return Path(env).expanduser() if env else None


def _has_jars(folder: Path) -> bool:
    return all((folder / name).is_file() for name in CORENLP_JARS)


def spice_status(spice_jars: str | os.PathLike[str] | None = None) -> tuple[bool, str]:
    """Whether SPICE can run, and why (not): never touches the network or constructs ``Spice``.

    ``spice_jars`` (else ``$ITUNING_SPICE_JARS``) names a folder holding the two CoreNLP 3.6.0 jars;
    pycocoevalcap's own ``spice/lib/`` is always checked too.
    """
    if shutil.which("java") is None:
        return False, "no `java` on PATH; install a Java runtime (SPICE 1.0 prefers Java 8)"
    if _has_jars(SPICE_LIB):
        return True, f"Stanford CoreNLP 3.6.0 jars found in {SPICE_LIB}"
    folder = _jar_dir(spice_jars)
    if folder is not None:
        if _has_jars(folder):
            return True, f"Stanford CoreNLP 3.6.0 jars found in {folder}"
        missing = [n for n in CORENLP_JARS if not (folder / n).is_file()]
        return False, f"{', '.join(missing)} not found in {folder}; {HOW_TO_ENABLE}"
    return False, f"Stanford CoreNLP 3.6.0 jars not found in {SPICE_LIB}; {HOW_TO_ENABLE}"


def install_spice_jars(spice_jars: str | os.PathLike[str] | None = None) -> Path:
    """Make the CoreNLP jars visible to ``spice-1.0.jar`` (symlink, else copy); return ``spice/lib``.

    Call only after :func:`spice_status` said yes.
    """
    if _has_jars(SPICE_LIB):
        return SPICE_LIB
    folder = _jar_dir(spice_jars)
    if folder is None or not _has_jars(folder):
        raise ConfigError(f"SPICE jars not found; {HOW_TO_ENABLE}")
    for name in CORENLP_JARS:
        target = SPICE_LIB / name
        if target.exists():
            continue
        try:
            try:
                target.symlink_to((folder / name).resolve())
            except OSError:
                shutil.copy2(folder / name, target)
        except OSError as exc:
            raise ConfigError(
                f"cannot place {name} into {SPICE_LIB} ({exc.strerror}); copy it there by hand"
            ) from exc
    return SPICE_LIB


def run_spice(
    references: Mapping[str, Sequence[str]], predictions: Mapping[str, str], java: str = "java"
) -> dict[str, float]:
    """Per-image SPICE F-scores (pycocoevalcap's ``All``/``f``; NaN where SPICE gives none).

    pycocoevalcap's corpus SPICE is the plain mean of these (per-image SPICE does not depend on the
    other images), so a subset's score is the mean over that subset; the scorer skips NaNs where
    pycocoevalcap would return NaN.
    """
    ids = sorted(references)
    payload = [{"image_id": i, "test": predictions[i], "refs": list(references[i])} for i in ids]
    cmd = [java, "-jar", "-Xmx8G", SPICE_JAR]
    with tempfile.TemporaryDirectory(prefix="ituning-spice-") as tmp:
        in_file, out_file = Path(tmp) / "input.json", Path(tmp) / "output.json"
        in_file.write_text(json.dumps(payload), encoding="utf-8")
        cmd += [str(in_file), "-out", str(out_file), "-subset", "-silent"]
        proc = subprocess.run(cmd, cwd=SPICE_DIR, capture_output=True, text=True, check=False)
        if proc.returncode != 0 or not out_file.is_file():
            tail = " ".join(proc.stderr.split())[-300:]
            raise ITuningError(f"SPICE ({SPICE_DIR / SPICE_JAR}) failed: {tail}")
        results = json.loads(out_file.read_text(encoding="utf-8"))
    scores: dict[str, float] = {}
    for item in results:
        value = item["scores"]["All"]["f"]
        try:
            scores[str(item["image_id"])] = float(value)
        except (TypeError, ValueError):
            scores[str(item["image_id"])] = math.nan
    return scores
