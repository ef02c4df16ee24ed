"""Which objects the captions name: per model, object recall, precision and repetition on the
test split (scenes that list their objects) or CHAIR (COCO), mean ± sd over seeds.

CIDEr rewards a caption that names one object three times for a three-object scene; these
numbers do not (``ituning.metrics.objects``, ``ituning.metrics.chair``). Per object count,
because one-object scenes are easy and the failures sit in the three-object ones.
"""

from __future__ import annotations

from bench.report.csv_tables import group_summary, write_csv
from bench.report.markdown import table
from bench.report.object_places import places_lines
from bench.report.results import Group
from bench.report.settings import ReportInputs

#: (metric, column title) of scenes that list their objects.
OBJECT_COLUMNS = (
    ("objects/test/recall", "recall"),
    ("objects/test/precision", "precision"),
    ("objects/test/repetition", "repetition"),
    ("objects/test/n1/recall", "recall, 1 object"),
    ("objects/test/n2/recall", "recall, 2"),
    ("objects/test/n3/recall", "recall, 3"),
    ("objects/test/n3/precision", "precision, 3"),
    ("objects/test/n3/repetition", "repetition, 3"),
)
#: (metric, column title) of COCO test captions.
CHAIR_COLUMNS = (("chair/test/chair_i", "CHAIR-i"), ("chair/test/chair_s", "CHAIR-s"))
CSV_FILE = "objects.csv"
READING = {
    "objects": "Recall: the share of a scene's objects that a phrase of the caption names with "
    "the right shape and colour (each phrase counted once); precision: the share of the caption's "
    "object phrases whose shape and colour the scene holds; repetition: the share of phrases "
    'beyond the number of such objects the scene holds (the second "red heart" of a scene with '
    "one). Test split; a column per number of objects in the scene.",
    "chair": "CHAIR-i: the share of object mentions naming a COCO category that neither the "
    "image's instance annotations nor its reference captions hold; CHAIR-s: the share of "
    "captions with at least one such mention (Rohrbach et al., EMNLP 2018; lower is better).",
}


def objects_section(inputs: ReportInputs) -> list[str]:
    """A table of every paper-module model that has the scores, or one line saying why none has."""
    runs = inputs.runs
    found = [
        (columns, what, groups)
        for columns, what in ((OBJECT_COLUMNS, "objects"), (CHAIR_COLUMNS, "chair"))
        if (groups := [g for g in runs.groups() if g.is_default() and _has(g, columns[0][0])])
    ]
    if not found:
        reasons = (r.tags.get("unavailable.chair/test") for r in runs.runs)
        reason = next((f"CHAIR: {why}." for why in reasons if why), None)
        return [
            reason
            or "No run has object scores: they are logged by evaluations of scenes that list "
            "their objects (`eval.grounding`), and of COCO splits when the data root holds "
            "CHAIR's inputs."
        ]
    columns, what, groups = found[0]
    rows = [
        [g.first.method, g.first.label(), " ".join(map(str, g.seeds)), *_cells(g, columns)]
        for g in groups
    ]
    lines = table(["method", "model", "seeds", *(title for _, title in columns)], rows)
    frame = group_summary(runs, groups, [m for m, _ in columns])
    lines = [*lines, "", write_csv(inputs, CSV_FILE, frame), "", READING[what]]
    places = places_lines(inputs) if what == "objects" else []
    return [*lines, "", *places] if places else lines


def _has(group: Group, metric: str) -> bool:
    return any(metric in r.metrics for r in group.runs)


def _cells(group: Group, columns) -> list[str]:
    cells = []
    for metric, _ in columns:
        s = group.stat(metric)
        cells.append("–" if s is None else s.fmt(2))
    return cells
