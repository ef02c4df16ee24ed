"""How the methods were compared: what each trains, and the learning rate each was given.

A comparison of methods is fair only if each gets the same data, frozen backbones, budget,
decoding and scorer, and a learning rate chosen for it the same way (``bench.tune``, recorded in
``bench/sweep/learning_rates.yaml``). This section says so from the records: the search's grid and
validation scores per method, and the rate the reported runs actually trained at (their
``optim.lr`` param), so that a run trained before a search, at another rate, shows.
"""

from __future__ import annotations

from bench.report.markdown import table
from bench.report.results import lm_rank
from bench.report.settings import ReportInputs
from bench.sweep import learning_rates
from bench.sweep.axes import RANDOM_WEIGHT_TWINS
from bench.sweep.profile import profile_label
from ituning.methods.registry import METHODS, WHAT_TRAINS


def method_comparison(inputs: ReportInputs) -> list[str]:
    """A paragraph on the protocol and a table: per method (and LM size searched), what trains,
    the rate its runs used, and every searched rate's validation score (the chosen one in bold)."""
    label = profile_label(inputs.runs.profile, inputs.runs.scale)
    rates = learning_rates.read()
    searched = {m: rates.searched(label, m) for m in METHODS}
    used: dict[tuple[str, str | None], set[float]] = {}  # (method, size searched) -> run rates
    for run in inputs.runs.runs:
        key = (run.method, rates.size_for(label, run.method, run.lm_size))
        used.setdefault(key, set()).update(lr for lr in [_lr(run.params)] if lr is not None)
    records = [(m, lm, searched[m][lm]) for m in METHODS for lm in sorted(searched[m], key=lm_rank)]
    if not records and {r.method for r in inputs.runs.runs} <= {"itune"}:
        return ["Only I-Tuning has runs at this profile (`sweeps/baselines.yaml` runs the others)."]
    grid = sorted({lr for _, _, record in records for lr in record.scores})
    lines = [_protocol(label, records), ""]
    header = ["method", "what trains", "searched at", "rate of its runs", *map(_rate_title, grid)]
    rows = []
    keys = [(m, lm) for m, lm, _ in records] + [(m, None) for m in METHODS if (m, None) in used]
    for method, lm in keys:
        record = searched[method].get(lm) if lm else None
        runs = ", ".join(f"{lr:g}" for lr in sorted(used.get((method, lm), ()))) or (
            "no runs" if (method, lm) not in used else "not logged"
        )
        if record and not used.get((method, lm), set()) <= {record.chosen}:
            runs += f" (not the searched {record.chosen:g})"
        cells = []
        for lr in grid:
            score = record.scores.get(lr) if record else None
            text = "–" if score is None else f"{score:.1f}"
            cells.append(f"**{text}**" if record and lr == record.chosen else text)
        where = f"{lm}, seed {record.seed}" if record else "not searched"
        if record and record.lambda_ is not None:  # the rates' scores are at the λ chosen
            where += f", λ {record.lambda_:g} of " + "/".join(
                f"{k:g}" for k in record.lambda_scores
            )
        rows.append([method, WHAT_TRAINS.get(method, method), where, runs, *cells])
    lines += table(header, rows)
    sizes = {r.lm_size for r in inputs.runs.runs if searched.get(r.method)}
    twins = sorted(sizes & RANDOM_WEIGHT_TWINS.keys())
    sizes = {RANDOM_WEIGHT_TWINS.get(s, s) for s in sizes}
    unsearched = sorted(sizes - {lm for _, lm, _ in records}, key=lm_rank)
    if twins:
        lines += [
            "",
            " ".join(
                f"`{t}` trains at the rate searched for `{RANDOM_WEIGHT_TWINS[t]}`, whose "
                "random-weight control it is (a rate of its own would be a second difference)."
                for t in twins
            ),
        ]
    if records and unsearched:
        lines += [
            "",
            f"No rate was searched at the {' or '.join(unsearched)} LM: runs there use the rate "
            "chosen at a smaller size, which may be too high for a larger model and affect the "
            "methods unequally; comparisons at those sizes are provisional until "
            + " and ".join(f"`python -m bench.tune --lm {s}`" for s in unsearched)
            + " and the sweeps after them have run.",
        ]
    record = learning_rates.SearchRecord
    edges = (
        (record.rate_at_edge, "The best rate of {} lies at the edge of the grid: a rate outside it "
         "might do better."),
        (record.lambda_at_edge, "The best λ of {} is the largest searched: a larger λ might do "
         "better."),
    )  # fmt: skip
    for at_edge, sentence in edges:
        named = [f"{m} ({lm})" for m, lm, r in records if at_edge(r)]
        if named:
            lines += ["", sentence.format(", ".join(named))]
    if inputs.runs.superseded:
        lines += [
            "",
            f"{len(inputs.runs.superseded)} finished run(s) are left out of every table, figure "
            "and claim (they stay in the MLflow store): trained at a rate that a later search "
            "replaced (their settings have runs at the recorded rate), or on backbones the "
            "profile no longer builds.",
        ]
    return lines


def _rate_title(lr: float) -> str:
    return f"val @ {lr:g}"


def _protocol(label: str, records: list[tuple[str, str, learning_rates.SearchRecord]]) -> str:
    same = (
        "Every method trains on the same data and frozen backbones with the same budget (epochs, "
        "batch, warm-up, seeds), decodes with the same beam search and is scored by the same "
        "scorer on the same splits."
    )
    if not records:
        return (
            f"{same} No learning-rate search is recorded for profile `{label}`: every method "
            "trains at the budget's rate (`python -m bench.tune` runs the search)."
        )
    metric = records[0][2].metric
    sizes = sorted({lm for _, lm, _ in records}, key=lm_rank)
    at = (
        f"the {sizes[0]} LM (the rate chosen there is used at every LM size)"
        if len(sizes) == 1
        else f"each of the LM sizes {', '.join(sizes)}"
    )
    return (
        f"{same} Only the learning rate is each method's own, chosen the same way for all: "
        f"`python -m bench.tune` (optuna's grid sampler, one study per method and LM size) trains "
        f"the method at every rate of the grid with {at}, scores {metric} on the validation "
        "split (the test and NoCaps-style splits are never scored in the search) and keeps the "
        f"best; the trials are MLflow runs in the experiment `{label}-lr-search`, and the choices "
        "are recorded in `bench/sweep/learning_rates.yaml`. Where I-Tuning's λ (eq. 5; the paper "
        "gives no value) was searched with the rate, the grid is rate × λ and a row's scores are "
        "at the λ it chose."
    )


def _lr(params: dict[str, str]) -> float | None:
    value = params.get("optim.lr")
    return float(value) if value is not None else None
