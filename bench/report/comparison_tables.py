"""Tables 1 and 2: each row the paper printed, and under each I-Tuning row the reproduced one.

A reproduced row is the group of seeds that :meth:`RunSet.pick` matches to the paper's point (LM
size, VLP, dropped fraction of the depth). Under the paper's ClipCap row come the other methods
trained here on the same data, features, budget and decoding (``sweeps/baselines.yaml``): each
ClipCap variant and full fine-tuning, one row per LM size that ran. A cell that cannot be filled says why in a lettered
note (not run, failed, SPICE unavailable, dataset absent, not evaluated), since an empty cell
would not tell a reader what to run next. At the paper profile a Δ row gives the difference to
the published number; at mini the task differs, so a difference would mean nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import pandas as pd

from bench.report.claims import SIZES
from bench.report.csv_tables import group_summary, stat_columns, write_csv
from bench.report.markdown import Notes, count, seed_count, table
from bench.report.paper import PaperRow, PaperTable
from bench.report.paper_claims import CLIPCAP  # the paper's row the other methods' rows follow
from bench.report.results import COLUMN_DATASETS, Group, Stat
from bench.report.settings import ReportInputs

#: The methods trained here besides I-Tuning, in the order of their rows.
BASELINE_METHODS = ("clipcap-transformer", "clipcap-mlp", "full")
METRIC_TITLES = {"cider": "CIDEr", "bleu4": "B@4", "meteor": "M", "spice": "S"}
NOCAPS_DOMAINS = {
    "in": "in-domain",
    "near": "near-domain",
    "out": "out-of-domain",
    "overall": "overall",
}
NOCAPS_SPLIT = {
    True: "the Shapes NoCaps-style split (out of domain: a shape never seen in caption training)",
    False: "NoCaps validation",
}
#: A column's place in the tracked metrics: (family, metric); the family picks the dataset.
Locate = Callable[[str], tuple[str, str]]


def table1(inputs: ReportInputs) -> list[str]:
    """Table 1 (captioning test split, MSCOCO and Flickr30k) and its CSV ``table1.csv``."""
    paper_table = inputs.paper.table1
    header = ["Model", "Row", "#Params"]
    coco = "COCO (mini: Shapes test)" if inputs.mini else "COCO"
    for column in paper_table.columns:
        family, metric = column.split("_", 1)
        header.append(f"{coco if family == 'coco' else 'F30k'} {METRIC_TITLES[metric]}")

    def locate(column: str) -> tuple[str, str]:
        family, metric = column.split("_", 1)
        return family, f"test/{metric}"

    return _comparison(inputs, paper_table, header, "table1", ("table1",), locate)


def table2(inputs: ReportInputs) -> list[str]:
    """Table 2 (NoCaps by domain) and its CSV ``table2.csv``."""
    paper_table = inputs.paper.table2
    header = ["Model", "Row", "#Params"]
    for column in paper_table.columns:
        domain, metric = column.split("_", 1)
        header.append(f"{NOCAPS_DOMAINS[domain]} {METRIC_TITLES[metric]}")

    def locate(column: str) -> tuple[str, str]:
        domain, metric = column.split("_", 1)
        return "nocaps", f"nocaps/{NOCAPS_DOMAINS[domain]}/{metric}"

    return _comparison(inputs, paper_table, header, "table2", ("table2", "table1"), locate)


def _comparison(
    inputs: ReportInputs,
    paper_table: PaperTable,
    header: list[str],
    sweep: str,
    prefer: tuple[str, ...],
    locate: Locate,
) -> list[str]:
    """The Markdown table with its notes, then the link to ``<sweep>.csv``."""
    columns = paper_table.columns
    notes = Notes()
    rows, numbers = [], []
    for prow in paper_table.baselines():
        rows.append([prow.model, "paper", prow.params, *_paper_cells(prow, columns)])
        numbers.append(_paper_numbers(prow, columns))
        if prow.model == CLIPCAP:
            method_rows, method_numbers = _method_rows(inputs, columns, locate, notes)
            rows += method_rows
            numbers += method_numbers
    for prow in paper_table.ours():
        name = f"**{prow.model}**{_block(prow, paper_table)}"
        rows.append([name, "paper", prow.params, *_paper_cells(prow, columns)])
        groups = _groups(inputs, prow, columns, prefer, locate)
        rows += _reproduced_rows(inputs, prow, columns, groups, sweep, locate, notes)
        numbers.append(_paper_numbers(prow, columns) | _numbers(inputs, groups, columns, locate))
    frame = pd.DataFrame.from_records(numbers, columns=_csv_columns(columns))
    return [*table(header, rows), *notes.lines(), "", write_csv(inputs, f"{sweep}.csv", frame)]


def _method_rows(
    inputs: ReportInputs, columns: Sequence[str], locate: Locate, notes: Notes
) -> tuple[list[list[str]], list[dict]]:
    """A reproduced row per other method and LM size that ran (no VLP); a method with no run at
    all gets one row saying what to run."""
    rows, numbers = [], []
    for method in BASELINE_METHODS:
        found = False
        for lm in SIZES:
            groups = {
                family: inputs.runs.pick(
                    lm=lm,
                    vlp=False,
                    method=method,
                    datasets=_datasets(family),
                    prefer=("baselines",),
                )
                for family in sorted({locate(c)[0] for c in columns})
            }
            shown = _shown_group(groups)
            if shown is None:
                continue
            found = True
            cells = []
            for column in columns:
                family, metric = locate(column)
                group = groups[family]
                if group is None:
                    why = _dataset_absent(inputs, family) or f"not evaluated on {family}"
                    cells.append(notes.mark(why))
                    continue
                cells.append(_metric_cell(group, metric, notes, f"not evaluated: no {metric}")[0])
            p = shown.params_stat()
            label = f"reproduced: {shown.first.lm_name}, {seed_count(shown)}"
            rows.append([f"{method} ({lm})", label, count(p.mean if p else None), *cells])
            numbers.append(
                {"model": f"{method} (reproduced)", "lm": lm, "vlp": False, "drop_fraction": 0.0}
                | _numbers(inputs, groups, columns, locate)
            )
        if not found:
            why = notes.mark(
                f"not run: no finished {method} run; run sweep `baselines` (python -m "
                f"bench.sweep baselines --profile {inputs.runs.profile})"
            )
            rows.append([method, "reproduced", "–", *[why] * len(columns)])
    return rows, numbers


def _block(prow: PaperRow, paper_table: PaperTable) -> str:
    """`` (no VLP)`` / `` (+ VLP)`` where a table has I-Tuning rows of both kinds, whose names
    the paper prints alike."""
    if len({bool(r.vlp) for r in paper_table.ours()}) < 2:
        return ""
    return " (+ VLP)" if prow.vlp else " (no VLP)"


def _groups(
    inputs: ReportInputs,
    prow: PaperRow,
    columns: Sequence[str],
    prefer: tuple[str, ...],
    locate: Locate,
) -> dict[str, Group | None]:
    """The reproduced group of each column family (``coco``, ``flickr``, ``nocaps``)."""
    groups: dict[str, Group | None] = {}
    for family in sorted({locate(c)[0] for c in columns}):
        groups[family] = inputs.runs.pick(
            lm=prow.lm_size,
            vlp=bool(prow.vlp),
            drop_fraction=prow.drop_fraction,
            datasets=_datasets(family),
            prefer=prefer,
        )
    return groups


def _datasets(family: str) -> tuple[str, ...]:
    """The training datasets whose runs fill a column family (NoCaps: models trained on COCO)."""
    return COLUMN_DATASETS["flickr" if family == "flickr" else "coco"]


def _reproduced_rows(
    inputs: ReportInputs,
    prow: PaperRow,
    columns: Sequence[str],
    groups: dict[str, Group | None],
    sweep: str,
    locate: Locate,
    notes: Notes,
) -> list[list[str]]:
    """The reproduced row under a paper row and, at the paper profile, the Δ row."""
    cells, deltas = [], []
    for column in columns:
        family, metric = locate(column)
        group = groups[family]
        published = prow.values[column]
        if group is None:
            cells.append(notes.mark(_absent_reason(inputs, prow, family, sweep)))
            deltas.append("")
            continue
        not_evaluated = f"not evaluated: the run has no {metric} score" + (
            " (eval.nocaps is off, or its evaluated NoCaps-style images hold none of this "
            "domain, e.g. under data.limit_eval_images)"
            if family == "nocaps"
            else ""
        )
        text, stat = _metric_cell(group, metric, notes, not_evaluated)
        cells.append(text)
        deltas.append(
            f"{stat.mean - published:+.1f}" if stat is not None and published is not None else ""
        )
    shown_group = _shown_group(groups)
    if shown_group is None:
        label, params = "reproduced", "–"
    else:
        label = f"reproduced: {shown_group.first.lm_name}, {seed_count(shown_group)}"
        p = shown_group.params_stat()
        params = count(p.mean if p else None)
    rows = [["", label, params, *cells]]
    if not inputs.mini:  # at mini the task differs: a difference to the paper means nothing
        rows.append(["", "Δ (reproduced − paper)", "", *deltas])
    return rows


def _shown_group(groups: dict[str, Group | None]) -> Group | None:
    """The group whose LM and seeds label the reproduced row (the first family that ran)."""
    return next((g for g in groups.values() if g is not None), None)


def _dataset_absent(inputs: ReportInputs, family: str) -> str | None:
    """Why a column family has no run at all, when no run of the profile trained on its data."""
    if family != "flickr" or any(r.dataset in COLUMN_DATASETS["flickr"] for r in inputs.runs.runs):
        return None
    where = (
        "Shapes-Flickr, the mini profile's Flickr30k"
        if inputs.mini
        else "Flickr30k (flickr30k/ under the data root; layout: bench/sweep/paper_profile.py)"
    )
    return (
        f"dataset absent: no run of this profile trained on {where}; run sweep `table1` "
        f"(python -m bench.sweep table1 --profile {inputs.runs.profile})"
    )


def _absent_reason(inputs: ReportInputs, prow: PaperRow, family: str, sweep: str) -> str:
    runs = inputs.runs
    absent = _dataset_absent(inputs, family)
    if absent:
        return absent
    failed = runs.pick_failed(lm=prow.lm_size, vlp=bool(prow.vlp), drop_fraction=prow.drop_fraction)
    if failed is not None:
        return f"failed: run {failed.config_hash} ended {failed.status}: {failed.failure}"
    return (
        f"not run: no finished run of this point ({prow.lm_size} LM, VLP "
        f"{'on' if prow.vlp else 'off'}, drop {prow.drop_fraction:g} of the depth); run sweep "
        f"`{sweep}` (python -m bench.sweep {sweep} --profile {runs.profile})"
    )


def _metric_cell(
    group: Group, metric: str, notes: Notes, not_evaluated: str
) -> tuple[str, Stat | None]:
    stat = group.stat(metric)
    if stat is not None:
        return stat.fmt(), stat
    reason = next((r.unavailable(metric) for r in group.runs if r.unavailable(metric)), None)
    if reason is not None:
        leaf = metric.rsplit("/", 1)[-1].upper()
        return notes.mark(f"{leaf} unavailable: {reason}"), None
    return notes.mark(not_evaluated), None


def _paper_cells(row: PaperRow, columns: Sequence[str]) -> list[str]:
    return ["–" if row.values[c] is None else f"{row.values[c]:.1f}" for c in columns]


# ---------------------------------------------------------------------- CSV


def _csv_columns(columns: Sequence[str]) -> list[str]:
    """One CSV row per paper row: the paper's point and numbers, then the reproduced group's."""
    return [
        "model",
        "lm",
        "vlp",
        "drop_fraction",
        "params paper",
        *(f"{c} paper" for c in columns),
        "lm_name",
        "seeds",
        *stat_columns("trainable_params"),
        *(s for c in columns for s in stat_columns(c)),
    ]


def _paper_numbers(row: PaperRow, columns: Sequence[str]) -> dict:
    return {
        "model": row.model,
        "lm": row.lm_size if row.ours else None,
        "vlp": bool(row.vlp) if row.ours else None,
        "drop_fraction": row.drop_fraction if row.ours else None,
        "params paper": row.params_count,
        **{f"{c} paper": row.values[c] for c in columns},
    }


def _numbers(
    inputs: ReportInputs,
    groups: dict[str, Group | None],
    columns: Sequence[str],
    locate: Locate,
) -> dict:
    """The reproduced numbers of one paper row: each column from its family's group."""
    out: dict = {}
    shown_group = _shown_group(groups)
    if shown_group is not None:
        summary = group_summary(inputs.runs, [shown_group], ["trainable_params"]).iloc[0]
        out |= {k: summary[k] for k in ("lm_name", "seeds", *stat_columns("trainable_params"))}
    for family, group in groups.items():
        if group is None:
            continue
        located = [(c, locate(c)[1]) for c in columns if locate(c)[0] == family]
        summary = group_summary(inputs.runs, [group], [m for _, m in located]).iloc[0]
        for column, metric in located:
            out |= dict(zip(stat_columns(column), summary[stat_columns(metric)], strict=True))
    return out
