"""Figure 1: test CIDEr against trainable parameters, the paper's points and the reproduced ones.

The paper's figure makes its main argument (as good as large pre-trained captioners with far fewer
trainable parameters), so the reproduction draws the same axes, every method it trained with its
own marker (ClipCap's variants and full fine-tuning beside I-Tuning). At mini the reproduced models are
much smaller and scored on another task: they are drawn on their own, and the note under the
figure (in the report template) says to read them against each other.
"""

from __future__ import annotations

from bench.report import plots
from bench.report.markdown import fill, point_label
from bench.report.paper import PaperRow
from bench.report.results import COLUMN_DATASETS
from bench.report.settings import ReportInputs

FIGURE1_FILE = "figure1_params_vs_cider.png"
#: The plot's title; the report's heading (in the template) reads the same.
FIGURE1_TITLE = "Figure 1: CIDEr against trainable parameters"
_SHORT_NAMES = {
    "OSCAR-base (no tags)": "OSCAR",
    "OSCAR-base (with object tags)": "OSCAR+tags",
    "Unified VLP": "Unified VLP",
    "ClipCap (GPT2-Large)": "ClipCap",
}


def figure1(inputs: ReportInputs) -> list[str]:
    """Draw ``figure1_params_vs_cider.png``; returns the notes printed under it."""
    t1 = inputs.paper.table1
    paper_ours = [
        plots.Point(_paper_label(r), r.params_count, r.values["coco_cider"])
        for r in t1.ours()
        if r.values["coco_cider"] is not None
    ]
    paper_base = [
        plots.Point(_SHORT_NAMES.get(r.model, r.model), r.params_count, r.values["coco_cider"])
        for r in t1.baselines()
        if r.values["coco_cider"] is not None
    ]
    reproduced: list[plots.Point] = []
    for g in inputs.runs.groups():
        s, p = g.stat("test/cider"), g.params_stat()
        if g.first.dataset in COLUMN_DATASETS["coco"] and s is not None and p is not None:
            reproduced.append(
                plots.Point(
                    point_label(g), p.mean, s.mean, s.std, g.first.lm_size, s.n, g.first.method
                )
            )
    name = f"reproduced ({inputs.runs.profile})"
    plots.params_vs_cider(
        paper_ours,
        paper_base,
        reproduced,
        inputs.out / FIGURE1_FILE,
        title=FIGURE1_TITLE,
        reproduced_name=f"{name}, {'Shapes' if inputs.mini else 'MSCOCO'} test",
        overlay=not inputs.mini,
    )
    notes = []
    if inputs.mini:
        notes.append(fill("figure1_mini_note"))
    if not reproduced:
        notes.append("No reproduced point: no finished run has a test CIDEr.")
    return notes


def _paper_label(row: PaperRow) -> str:
    if not row.ours:
        return row.model
    size = {"base": "Base", "medium": "Medium", "large": "Large"}[row.lm_size or "base"]
    return f"{size}{'+VLP' if row.vlp else ''}{' drop' if row.drop_first else ''}"
