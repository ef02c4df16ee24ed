"""The Java programs behind the COCO caption metrics, started so that stdout carries only their
answers.

METEOR and the PTB tokenizer both answer line by line on stdout, and both are read by position: an
extra line (a JVM warning, or whatever ``JDK_JAVA_OPTIONS`` turns on) would be read as an answer and
shift every later one onto the wrong caption. Workers in separate pid namespaces that share ``/tmp``
(containers) get the same JVM pid, and the second JVM's "hsperfdata ... locked by another process"
warning did exactly that to METEOR. So every JVM here sends its own log lines to stderr and keeps
no ``hsperfdata`` file.
"""

from __future__ import annotations

import subprocess
import tempfile
from collections.abc import Sequence
from pathlib import Path

from pycocoevalcap.tokenizer import ptbtokenizer as _pycoco_ptb

from ituning.errors import DataError

JVM_QUIET = ("-Xlog:disable", "-Xlog:all=warning:stderr", "-XX:-UsePerfData")
PTB_JAR = Path(_pycoco_ptb.__file__).resolve().parent / _pycoco_ptb.STANFORD_CORENLP_3_4_1_JAR


def ptb_lines(sentences: Sequence[str], java: str = "java") -> list[str]:
    """pycocoevalcap's PTB tokenisation of each sentence (its jar, flags and punctuation list), one
    line in, one line out; a DataError if the counts differ instead of captions shifted silently.

    Sentences must hold no line break (``sanitise_caption``)."""
    if not sentences:
        return []
    with tempfile.TemporaryDirectory(prefix="ituning-ptb-") as tmp:
        path = Path(tmp) / "sentences.txt"
        path.write_text("\n".join(sentences), encoding="utf-8")
        cmd = [java, *JVM_QUIET, "-cp", str(PTB_JAR), "edu.stanford.nlp.process.PTBTokenizer",
               "-preserveLines", "-lowerCase", str(path)]  # fmt: skip
        out = subprocess.run(cmd, capture_output=True, check=False).stdout.decode("utf-8")
    lines = out.split("\n")
    if len(lines) == len(sentences) + 1 and lines[-1] == "":
        lines.pop()  # a final newline after the last answer
    if len(lines) != len(sentences):
        raise DataError(
            f"the PTB tokenizer answered {len(lines)} lines for {len(sentences)} captions: a "
            "caption contains a line break the sanitiser missed, or Java failed"
        )
    punctuation = set(_pycoco_ptb.PUNCTUATIONS)
    return [" ".join(w for w in line.rstrip().split(" ") if w not in punctuation) for line in lines]
