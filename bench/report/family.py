"""The LM family table: I-Tuning over each LM that ran, GPT-2's sizes beside Llama-family LMs.

Tables 1 and 2 have rows for the paper's GPT-2 sizes only; this table is where the other LMs of the
``lm`` axis show (``llama-<size>``: Llama-architecture twins of the GPT-2 sizes; ``smollm2``: the
real pre-trained SmolLM2-135M-Instruct; ``smollm2-random``: its architecture with random weights),
one row per LM, so that the ``agnostic`` and ``pretrained_lm`` claims can be read against the
numbers they compare.
"""

from __future__ import annotations

from bench.report.csv_tables import group_summary, write_csv
from bench.report.family_claims import FAMILY_PREFER, sweep_command
from bench.report.markdown import count, table
from bench.report.results import COLUMN_DATASETS, GPT2, Group, RunSet, lm_family, lm_rank
from bench.report.settings import ReportInputs

CSV_FILE = "lm_family.csv"
RECALL = "objects/test/n3/recall"
METRICS = ("test/cider", "trainable_params", RECALL)
READING = (
    "One I-Tuning model per LM (the captioning dataset, paper module, no Dropping, no VLP); the "
    "family is the LM's architecture. `llama-<size>` is a Llama-architecture LM of that GPT-2 size "
    "(at mini pre-trained on the GPT-2 minis' corpus and budget; at paper SmolLM2-135M/360M/1.7B), "
    "`smollm2` the pre-trained SmolLM2-135M-Instruct and `smollm2-random` the same architecture "
    "with random weights, frozen and trained with the same modules and budget (their own sweep's, "
    "which may differ from the other rows': read them against each other). Test CIDEr: mean ± sd "
    "over seeds. The claims *agnostic* and *pretrained_lm* test the differences."
)
RECALL_READING = "Recall: the share of a three-object test scene's objects the caption names."


def family_groups(runs: RunSet) -> list[Group]:
    """The group that stands for each LM with I-Tuning runs, GPT-2's sizes first."""
    lms = {
        g.first.lm_size
        for g in runs.groups()
        if g.first.method == "itune"
        and g.first.dataset in COLUMN_DATASETS["coco"]
        and not g.first.vlp
        and not g.first.drop
    }
    picked = (runs.pick(lm=lm, vlp=False, prefer=FAMILY_PREFER) for lm in sorted(lms, key=lm_rank))
    return [g for g in picked if g is not None]


def family_section(inputs: ReportInputs) -> list[str]:
    """The table, its CSV and how to read it; one line naming the sweep while every LM is GPT-2."""
    groups = family_groups(inputs.runs)
    if all(lm_family(g.first.lm_size) == GPT2 for g in groups):
        command = sweep_command(inputs.runs)
        return [f"Every I-Tuning run here tunes a GPT-2 LM: `{command}` adds Llama-family LMs."]
    recall = any(g.stat(RECALL) is not None for g in groups)
    header = ["LM", "model", "family", "layers × width", "trainable", "test CIDEr", "seeds"]
    header += ["recall, 3 objects"] if recall else []
    rows = [_row(g, recall) for g in groups]
    frame = group_summary(inputs.runs, groups, METRICS)
    frame.insert(frame.columns.get_loc("lm") + 1, "family", [g.first.lm_family for g in groups])
    width = [g.first.d_lm for g in groups]
    frame.insert(frame.columns.get_loc("lm_layers") + 1, "lm_width", width)
    reading = f"{READING} {RECALL_READING}" if recall else READING
    return [*table(header, rows), "", write_csv(inputs, CSV_FILE, frame), "", reading]


def _row(group: Group, recall: bool) -> list[str]:
    r = group.first
    cider, params = group.stat("test/cider"), group.params_stat()
    cells = [
        f"`{r.lm_size}`",
        r.lm_name,
        r.lm_family,
        f"{r.n_layers} × {r.d_lm}",
        count(params.mean if params else None),
        "–" if cider is None else cider.fmt(1),
        str(cider.n if cider else len(group.runs)),
    ]
    if recall:
        s = group.stat(RECALL)
        cells.append("–" if s is None else s.fmt(2))
    return cells
