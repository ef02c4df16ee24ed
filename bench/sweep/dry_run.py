"""``--dry-run``: the resolved runs of a spec, one row each, with every axis as a column, and
what they will cost (``bench.sweep.cost``).

The state column asks the same record as the sweep: ``finished`` is a FINISHED MLflow run of the
point; ``partial`` a run folder with resumable training state; ``new`` anything else. A store that
does not exist yet is not created.
"""

from __future__ import annotations

from bench.sweep import axes, folders, tracking
from bench.sweep.cost_lines import duration, point_costs, summary
from bench.sweep.plan import RunPlan
from bench.sweep.profile import Profile
from bench.sweep.spec import SweepSpec


def describe(
    spec: SweepSpec,
    profile: Profile,
    plans: list[RunPlan],
    tracking_uri: str | None = None,
    *,
    estimate: bool = True,
) -> str:
    lines = [
        f"sweep {spec.name} ({spec.source}) under profile {profile.name}"
        + ("" if profile.scale == "full" else f" ({profile.scale})"),
    ]
    if spec.description:
        lines.append(f"  {spec.description.splitlines()[0]}")
    lines.append(f"  budget: {_budget_text(profile.budget)}")
    own = sorted({p.point["lm"] for p in plans if profile.lms[p.point["lm"]].budget is not None})
    if own:  # LMs the profile trains at a budget of their own (SmolLM2 at mini)
        budget = profile.lms[own[0]].budget
        lines.append(f"  budget of {', '.join(own)}: {_budget_text(budget)}")
    finished = tracking.finished_if_stored(
        tracking_uri or tracking.default_tracking_uri(profile.runs_dir), profile.label
    )
    names = list(axes.AXES)
    at = names.index("lm") + 1  # the LM's depth right after the LM
    titles = [axis.title for axis in axes.AXES.values()]
    estimated = ("est.",) if estimate else ()
    header = (
        "run id",
        *titles[:at],
        "layers",
        *titles[at:],
        "lr",
        "trainable",
        *estimated,
        "state",
    )
    sizes = profile.data_sizes() if estimate else None
    costs = point_costs(profile, plans, sizes) if sizes is not None else {}
    rows = []
    for plan in plans:
        method = plan.point["method"]
        cells = [
            axis.cell(plan.point[name], plan.resolved(name)) if axis.applies(method) else "-"
            for name, axis in axes.AXES.items()
        ]
        out = folders.run_dir(profile.runs_dir, plan.run_id)
        state = (
            "finished"
            if plan.run_id in finished
            else "partial"
            if folders.has_checkpoint(out)
            else "new"
        )
        rows.append(
            (
                plan.run_id,
                *cells[:at],
                str(plan.arch.n_layers),
                *cells[at:],
                f"{plan.config.optim.lr:g}",
                _count(plan.arch.trainable_params),
                *((duration(costs[plan.run_id].seconds),) if estimate else ()),
                state,
            )
        )
    widths = [max(len(x) for x in col) for col in zip(header, *rows, strict=True)]
    for row in (header, *rows):
        lines.append(
            "  " + "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()
        )
    lines.append(f"  {len(plans)} runs")
    if estimate:
        lines += summary(profile, plans, costs, sizes)
    return "\n".join(lines)


def _count(n: int) -> str:
    if n <= 0:  # not countable before the backbones are built
        return "?"
    return f"{n / 1e6:.2f}M ({n:,})" if n >= 100_000 else f"{n:,}"


def _budget_text(b) -> str:
    return (
        f"epochs {b.epochs} (VLP {b.vlp_epochs}), batch {b.batch_captions} captions "
        f"({b.captions_per_image} per image; micro {b.micro_batch_images} images), beam "
        f"{b.beam}; lr: each method's searched rate (bench/sweep/learning_rates.yaml), else {b.lr:g}"
    )
