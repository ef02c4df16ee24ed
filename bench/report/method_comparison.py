"""How the methods were compared: what each trains, and the learning rate each was given.

A comparison of methods is fair only if each gets the same data, frozen backbones, budget,
decoding and scorer, and a learning rate chosen for it the same way (``bench.tune``, recorded in
``bench/sweep/learning_rates.yaml``). This section says so from the records: the search's grid and
validation scores per method, and the rate the reported runs actually trained at (their
``optim.lr`` param), so that a run trained before a search, at another rate, shows.
"""

from __future__ import annotations

from bench.report.markdown import table
from bench.report.settings import ReportInputs
from bench.sweep import learning_rates
from bench.sweep.profile import profile_label
from ituning.methods.registry import METHODS, WHAT_TRAINS


def method_comparison(inputs: ReportInputs) -> list[str]:
    """A paragraph on the protocol and a table: per method, what trains, the rate its runs used,
    and every searched rate's validation score (the chosen one in bold)."""
    label = profile_label(inputs.runs.profile, inputs.runs.scale)
    searched = learning_rates.read().profiles.get(label, {})
    used = {
        m: sorted({_lr(r.params) for r in inputs.runs.runs if r.method == m} - {None})
        for m in METHODS
    }
    ran = [m for m in METHODS if used[m]]
    if ran == ["itune"] and not searched:
        return ["Only I-Tuning has runs at this profile (`sweeps/baselines.yaml` runs the others)."]
    grid = sorted({lr for record in searched.values() for lr in record.scores})
    lines = [_protocol(label, searched), ""]
    header = ["method", "what trains", "rate of its runs", *(f"val CIDEr @ {lr:g}" for lr in grid)]
    rows = []
    for method in METHODS:
        record = searched.get(method)
        if record is None and not used[method]:
            continue
        cells = []
        for lr in grid:
            score = record.scores.get(lr) if record else None
            text = "–" if score is None else f"{score:.1f}"
            cells.append(f"**{text}**" if record and lr == record.chosen else text)
        rates = ", ".join(f"{lr:g}" for lr in used[method]) or "no runs"
        if record and used[method] and used[method] != [record.chosen]:
            rates += f" (not the searched {record.chosen:g})"
        rows.append([method, WHAT_TRAINS.get(method, method), rates, *cells])
    edge = [m for m, r in searched.items() if r.at_edge()]
    lines += table(header, rows)
    if edge:
        lines += [
            "",
            f"The best rate of {', '.join(edge)} lies at the edge of the grid: a rate outside it "
            "might do better.",
        ]
    return lines


def _protocol(label: str, searched: dict[str, learning_rates.SearchRecord]) -> str:
    same = (
        "Every method trains on the same data and frozen backbones with the same budget (epochs, "
        "batch, warm-up, seeds), decodes with the same beam search and is scored by the same "
        "scorer on the same splits."
    )
    if not searched:
        return (
            f"{same} No learning-rate search is recorded for profile `{label}`: every method "
            "trains at the budget's rate (`python -m bench.tune` runs the search)."
        )
    first = next(iter(searched.values()))
    return (
        f"{same} Only the learning rate is each method's own, chosen the same way for all: "
        f"`python -m bench.tune` (optuna's grid sampler, one study per method) trains each method "
        f"at every rate of the grid with the {first.lm} LM and seed {first.seed}, scores "
        f"{first.metric} on the validation split (the test and NoCaps-style splits are never "
        "scored in the search) and keeps the best; the trials are MLflow runs in the experiment "
        f"`{label}-lr-search`. The rate chosen at one LM size is used at every size."
    )


def _lr(params: dict[str, str]) -> float | None:
    value = params.get("optim.lr")
    return float(value) if value is not None else None
