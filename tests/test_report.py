"""The report generator: paper tables, claims, Markdown tables and figures.

Fast tests build :class:`~bench.report.results.RunSet` s by hand (real objects, chosen numbers) to
check the verdict logic, the seed statistics and the CSVs beside the tables; the slow ones read a
real tiny reproduction (trained, tracked in a real MLflow SQLite store) shared with
``test_reproduce.py``.
"""

from __future__ import annotations

import hashlib
import json
import re
import statistics
from pathlib import Path

import pandas as pd
import pytest
from _tiny_reproduction import SHARES_IT, tiny_reproduction
from PIL import Image

from bench.report.build import ReportSettings, build_report, main
from bench.report.comparison_tables import table1, table2
from bench.report.paper import load_paper_tables, parse_params
from bench.report.results import Run, RunSet, Stat
from bench.report.settings import ReportInputs
from bench.report.store import load_runs
from bench.sweep.tracking import TrackingError

PAPER = load_paper_tables()


def make_run(
    lm: str = "base",
    *,
    vlp: bool = False,
    drop: int = 0,
    n_layers: int = 4,
    d_lm: int = 96,
    seed: int = 0,
    metrics: dict[str, float] | None = None,
    specs: tuple[str, ...] = ("table1",),
    profile: str = "mini",
    tags: dict[str, str] | None = None,
    params: dict[str, str] | None = None,
) -> Run:
    """A finished run as ``load_runs`` reads it; ``params`` adds to (or overrides) the point's."""
    params = {
        "lm": lm,
        "lambda": "1.0",
        "bottleneck": str(d_lm // 2),
        "drop": str(drop),
        "vlp": str(vlp),
        "seed": str(seed),
        "lm.name": f"backbones/mini-{lm}",
        "lm.layers": str(n_layers),
        "lm.width": str(d_lm),
        "profile": profile,
        "scale": "full",
        "data.captions": "data/shapes/dataset_shapes.json",
        **(params or {}),
    }
    digest = hashlib.sha256(json.dumps(sorted(params.items())).encode()).hexdigest()[:12]
    return Run(
        mlflow_id=digest,
        config_hash=digest,
        status="FINISHED",
        specs=specs,
        params=params,
        metrics=dict(metrics or {}),
        tags=dict(tags or {}),
        start_ms=0,
    )


def runset(*runs: Run, profile: str = "mini") -> RunSet:
    return RunSet(uri="sqlite:///x.db", profile=profile, scale="full", runs=list(runs))


def nocaps(in_d: float, out_d: float, test: float) -> dict[str, float]:
    return {
        "test/cider": test,
        "nocaps/in-domain/cider": in_d,
        "nocaps/out-of-domain/cider": out_d,
        "nocaps/overall/cider": (in_d + out_d) / 2,
        "trainable_params": 1000.0,
    }


# ---------------------------------------------------------------------- paper tables


def test_paper_tables_are_the_published_numbers() -> None:
    t1, t2 = PAPER.table1, PAPER.table2
    assert len(t1.rows) == 14 and len(t2.rows) == 6 and len(PAPER.table3) == 4
    large_drop = next(r for r in t1.ours() if r.drop_first == 18)
    assert large_drop.lm_size == "large" and large_drop.vlp is True
    assert large_drop.drop_fraction == 0.5 and large_drop.params_count == 47e6
    assert large_drop.values["coco_cider"] == 122.1 and large_drop.values["flickr_cider"] == 79.2
    base = next(r for r in t2.ours() if r.lm_size == "base")
    assert (base.values["in_cider"], base.values["out_cider"]) == (83.9, 48.1)
    assert [r.model for r in t1.baselines()][0] == "OSCAR-base (no tags)"
    assert parse_params("14M") == 14e6 and parse_params("270M") == 270e6


# ---------------------------------------------------------------------- table rendering


def _inputs(runs: RunSet, tmp_path: Path) -> ReportInputs:
    return ReportInputs(ReportSettings(out_dir=tmp_path), runs, PAPER, tmp_path, tmp_path)


def test_several_seeds_give_mean_std_and_count(tmp_path: Path) -> None:
    ciders = [110.0, 112.0, 117.0]
    runs = runset(
        *[
            make_run(seed=s, metrics={"test/cider": c, "test/bleu4": 30.0, "trainable_params": 2e5})
            for s, c in enumerate(ciders)
        ]
    )
    text = "\n".join(table1(_inputs(runs, tmp_path)))
    mean, std = statistics.fmean(ciders), statistics.stdev(ciders)
    row = next(line for line in text.splitlines() if "reproduced: mini-base" in line)
    assert "3 seeds" in row and f"{mean:.1f} ± {std:.1f}" in row and "200.0k" in row
    lines = text.splitlines()
    assert "Δ" not in lines[lines.index(row) + 1]  # mini: another task, no difference shown
    paper = runset(
        *[
            make_run(
                "base", n_layers=12, d_lm=768, seed=s, profile="paper", metrics={"test/cider": c}
            )
            for s, c in enumerate(ciders)
        ],
        profile="paper",
    )
    lines = table1(_inputs(paper, tmp_path))
    row = next(line for line in lines if "reproduced: " in line)
    delta = lines[lines.index(row) + 1]
    assert f"{mean - 116.7:+.1f}" in delta  # GPT2-Base without VLP: 116.7 in the paper
    # METEOR was not computed, SPICE is unavailable, Flickr30k absent, medium LM not run
    assert "not evaluated: the run has no test/meteor score" in text
    assert "dataset absent" in text
    assert re.search(r"not run: .*medium LM.*sweep `table1`", text)


def test_other_methods_get_reproduced_rows_under_the_papers_clipcap_row(tmp_path: Path) -> None:
    def runs_of(method: str, cider: float, lm: str = "large") -> list[Run]:
        params = {} if method == "itune" else {"method": method}
        return [
            make_run(lm, seed=s, n_layers=8, params=params, specs=("baselines",),
                     metrics={"test/cider": cider + s, "trainable_params": 3e5})
            for s in range(3)
        ]  # fmt: skip

    runs = runset(*runs_of("itune", 120.0), *runs_of("clipcap-transformer", 100.0))
    lines = table1(_inputs(runs, tmp_path))
    at = next(i for i, line in enumerate(lines) if line.startswith("| ClipCap (GPT2-Large)"))
    assert lines[at + 1].startswith("| clipcap-transformer (large) | reproduced: mini-large")
    assert lines[at + 1].count("101.0 ± 1.0") == 1  # COCO's column only, not Flickr's too
    assert "dataset absent" in " ".join(lines)
    assert lines[at + 2].startswith("| clipcap-mlp | reproduced |")  # not run: says what to run
    assert any("run sweep `baselines`" in line for line in lines)
    i_tuning = next(line for line in lines if "reproduced: mini-large" in line and "121.0" in line)
    assert lines.index(i_tuning) > at + 3  # I-Tuning's own rows stay I-Tuning's


def test_figure1_draws_every_method_with_its_own_marker(tmp_path: Path, monkeypatch) -> None:
    from bench.report import figures, plots

    drawn: dict = {}
    real = plots.params_vs_cider
    monkeypatch.setattr(
        plots, "params_vs_cider", lambda *a, **k: drawn.setdefault("points", a[2]) and real(*a, **k)
    )
    runs = runset(
        make_run("large", n_layers=8, metrics={"test/cider": 120.0, "trainable_params": 3e5}),
        make_run("large", n_layers=8, params={"method": "clipcap-mlp"},
                 metrics={"test/cider": 110.0, "trainable_params": 4e6}),
    )  # fmt: skip
    figures.figure1(_inputs(runs, tmp_path))
    assert {(p.method, p.label) for p in drawn["points"]} == {
        ("itune", "mini-large"),
        ("clipcap-mlp", "clipcap-mlp mini-large"),
    }
    assert (tmp_path / figures.FIGURE1_FILE).stat().st_size > 10_000


def test_spice_unavailable_reason_is_shown(tmp_path: Path) -> None:
    reason = "Stanford CoreNLP 3.6.0 jars not found; copy them into spice/lib"
    run = make_run(metrics={"nocaps/in-domain/cider": 80.0}, tags={"unavailable.spice": reason})
    text = "\n".join(table2(_inputs(runset(run), tmp_path)))
    assert f"SPICE unavailable: {reason}" in text
    assert "| 80.0 |" in text


def _with_test_images(runs: list[Run], root: Path) -> list[Run]:
    """The runs pointed at a two-image Karpathy file and a run folder with their predictions, so
    that Table 3 is built without MLflow."""
    from dataclasses import replace

    (root / "test").mkdir(parents=True)
    images = []
    for i in range(2):
        Image.new("RGB", (64, 64), (60 * i, 90, 120)).save(root / "test" / f"{i}.png")
        sentences = [{"raw": f"a red square {i}"}, {"raw": f"a blue circle {i}"}]
        images.append(
            {"filepath": "test", "filename": f"{i}.png", "split": "test", "sentences": sentences}
        )
    (root / "dataset_shapes.json").write_text(json.dumps({"dataset": "shapes", "images": images}))
    predictions = [{"image_id": f"test/{i}", "caption": f"a shape {i}"} for i in range(2)]
    (root / "predictions_test.json").write_text(json.dumps(predictions))
    data = {"data.captions": str(root / "dataset_shapes.json"), "data.image_root": str(root)}
    return [
        replace(r, params={**r.params, **data}, tags={**r.tags, "run_folder": str(root)})
        for r in runs
    ]


def test_tables_are_written_as_csv_with_their_numbers(tmp_path: Path, monkeypatch) -> None:
    ciders = [110.0, 112.0, 117.0]
    base = [
        make_run(
            seed=s,
            metrics={"test/cider": c, "nocaps/overall/cider": 80.0 + s, "trainable_params": 2e5},
            specs=("table1", "lambda"),
        )
        for s, c in enumerate(ciders)
    ]
    large = make_run("large", n_layers=8, metrics={"test/cider": 120.0, "trainable_params": 4e5})
    runs = runset(*_with_test_images([*base, large], tmp_path / "data"))
    monkeypatch.setattr("bench.report.build.load_runs", lambda *a, **k: runs)
    out = tmp_path / "report"
    out.mkdir()
    (out / "ablation_vlp.csv").write_text("stale\n")  # from an earlier build: removed
    settings = ReportSettings(
        out_dir=out, tracking_uri=f"sqlite:///{tmp_path / 'unused.db'}", attention=False
    )
    text = build_report(settings, log=lambda _: None).read_text()

    written = {p.name for p in out.glob("*.csv")}
    assert written == {
        "table1.csv",
        "table2.csv",
        "ablation_lambda.csv",
        "ablation_bottleneck.csv",  # its d_lm/2 point is the table's base run
        "ablation_dropping.csv",  # its drop-0 point is the table's large run
        "table3.csv",
        "settings.csv",
        "runs.csv",
    }
    for name in written:
        assert f"Numbers: [{name}]({name})" in text

    table1_csv = pd.read_csv(out / "table1.csv")
    assert list(table1_csv.columns[:6]) == [
        "model",
        "lm",
        "vlp",
        "drop_fraction",
        "params paper",
        "coco_cider paper",
    ]
    rows = table1_csv[table1_csv["model"].eq("I-Tuning (GPT2-Base)") & table1_csv["vlp"].eq(False)]
    assert len(rows) == 1
    row = rows.iloc[0]
    stat = Stat.of(ciders)
    assert (row["coco_cider mean"], row["coco_cider std"]) == pytest.approx((stat.mean, stat.std))
    assert row["coco_cider n"] == stat.n == 3 and row["seeds"] == "0 1 2"
    assert row["coco_cider paper"] == 116.7 and row["lm_name"] == "mini-base"
    assert row["coco_meteor n"] == 0 and pd.isna(row["flickr_cider mean"])  # not evaluated, absent
    assert row["trainable_params mean"] == 2e5
    oscar = table1_csv[table1_csv["model"] == "OSCAR-base (no tags)"].iloc[0]
    assert oscar["coco_cider paper"] == 115.6 and pd.isna(oscar["coco_cider mean"])

    lam = pd.read_csv(out / "ablation_lambda.csv")
    assert {"lambda", "bottleneck", "drop", "lm_name", "seeds"} <= set(lam.columns)
    assert lam["lambda"].tolist() == [1.0] and lam["nocaps/overall/cider n"].tolist() == [3]
    overall = Stat.of([80.0, 81.0, 82.0])
    assert lam["nocaps/overall/cider std"].iloc[0] == pytest.approx(overall.std)

    settings_csv = pd.read_csv(out / "settings.csv")
    assert settings_csv["setting"].tolist() == ["mini-base", "mini-large"]
    assert settings_csv["test/cider n"].tolist() == [3, 1]
    assert pd.isna(settings_csv["test/cider std"].iloc[1])  # one seed: no spread
    runs_csv = pd.read_csv(out / "runs.csv")
    assert set(runs_csv["run_id"]) == {r.config_hash for r in runs.runs}
    assert sorted(runs_csv["test/cider"]) == [*ciders, 120.0]
    table3_csv = pd.read_csv(out / "table3.csv")
    assert table3_csv["generated"].tolist() == ["a shape 0", "a shape 1"]

    first = {p.name: p.read_bytes() for p in sorted(out.iterdir())}
    build_report(settings, log=lambda _: None)
    second = {p.name: p.read_bytes() for p in sorted(out.iterdir())}
    assert first == second


# ---------------------------------------------------------------------- errors


def test_missing_store_is_one_line_error(tmp_path: Path, capsys) -> None:
    with pytest.raises(TrackingError, match="does not exist"):
        load_runs(f"sqlite:///{tmp_path / 'nope' / 'mlflow.db'}", profile="mini")
    assert main(["--runs-dir", str(tmp_path / "nope"), "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: MLflow store") and "\n" not in err


# ---------------------------------------------------------------------- real tiny runs


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory):
    return tiny_reproduction(tmp_path_factory)


def _section(text: str, title: str) -> str:
    start = text.index(f"## {title}")
    end = text.find("\n## ", start + 1)
    return text[start : end if end >= 0 else None]


@pytest.mark.slow
@SHARES_IT
def test_report_tables_from_tracked_runs(tiny) -> None:
    text = (tiny.out / "README.md").read_text()
    runs = load_runs(tiny.uri, profile="mini", scale="tiny")
    assert {r.lm_size for r in runs.runs} == {"base", "large"} and len(runs.runs) == 6
    base = next(r for r in runs.runs if r.lm_size == "base")
    table1 = _section(text, "Table 1")
    lines = table1.splitlines()
    i = lines.index(
        next(x for x in lines if x.startswith("| **I-Tuning (GPT2-Base)** (no VLP) | paper"))
    )
    assert "| 14M | 116.7 | 34.8 | 28.3 | 21.8 | 61.5 |" in lines[i]
    assert "reproduced: mini-base, 2 seeds" in lines[i + 1]
    bases = [r.metrics["test/cider"] for r in runs.runs if r.lm_size == "base"]
    assert f"| {statistics.fmean(bases):.1f} ± {statistics.stdev(bases):.1f} |" in lines[i + 1]
    assert lines[i + 2].startswith("| **I-Tuning (GPT2-Medium)**")  # mini: no Δ row
    assert "OSCAR-base (no tags) | paper | 135M | 115.6" in table1
    assert "dataset absent" in table1 and "not run" in table1
    assert "SPICE unavailable" in table1 or "test/spice" in str(base.metrics)
    table2 = _section(text, "Table 2")
    assert "I-Tuning (GPT2-Large), dropping** | paper | 47M | 88.3" in table2
    assert "reproduced: mini-large, 2 seeds" in table2
    assert "<br>" in _section(text, "Table 3")
    # provenance: commit, versions, hardware, wall time per run, rebuild command
    prov = _section(text, "Provenance")
    for needle in ("commit", "torch 2.", "cores", "Rebuild this report: `python -m bench.report"):
        assert needle in prov
    assert all(r.config_hash in prov for r in runs.runs)


@pytest.mark.slow
@SHARES_IT
def test_report_figures_are_images(tiny) -> None:
    text = (tiny.out / "README.md").read_text()
    names = re.findall(r"!\[[^\]]*\]\(([^)]+\.png)\)", text)
    assert {"figure1_params_vs_cider.png", "ablation_dropping.png", "figure3_attention.png"} <= set(
        names
    )
    assert sum(n.startswith("table3_") for n in names) == 4
    for name in names:
        with Image.open(tiny.out / name) as im:
            im.load()
            assert im.width >= 64 and im.height >= 64
            lo_hi = im.convert("L").getextrema()
            assert lo_hi[0] < lo_hi[1], f"{name} is blank"
    lam = _section(text, "Ablations").split("### ")[1]  # lambda: only its λ=1 point was run
    assert (
        "1 of its 5 settings have runs (made by other sweeps); `python -m bench.sweep lambda "
        in lam
    )
    assert "--profile mini --scale tiny` makes the rest." in lam


@pytest.mark.slow
@SHARES_IT
def test_claims_get_verdicts_from_runs(tiny) -> None:
    """The README lists every claim with the verdict that the claims module computes from the
    tracked runs, with its source and, where seeds allow, an interval."""
    from bench.report.claims import check_claims, claim_texts
    from bench.report.verdicts import MISSING, VERDICTS

    text = (tiny.out / "README.md").read_text()
    section = _section(text, "The paper's claims")
    verdict_lines = [line for line in section.splitlines() if line.startswith("- ")]
    shown = [re.search(r"\*\*(.+?)\*\*", line).group(1) for line in verdict_lines]
    assert len(shown) == len(claim_texts()) and set(shown) <= set(VERDICTS)
    from bench.report.resampling import Resamples

    runs = load_runs(tiny.uri, profile="mini", scale="tiny")
    # the report's own test-set resamples (cached beside the store), as its intervals use them
    resamples = Resamples(tiny.uri, tiny.root / "scratch", tiny.runs_dir / "cache" / "resamples")
    computed = check_claims(runs, PAPER, resamples)
    assert shown == [v.verdict for v in computed]
    by = {v.key: v for v in computed}
    assert by["vlp_helps"].verdict == MISSING and "sweep `table1`" in by["vlp_helps"].evidence
    assert (
        by["fewer_params"].verdict == MISSING and "sweep `baselines`" in by["fewer_params"].evidence
    )
    # two seeds per setting: the LM-size claim has an interval, whatever it decides
    assert by["larger_lm"].intervals and all(iv.known for iv in by["larger_lm"].intervals)
    assert "  - Interval: seeds 2/2" in section
    # the specs switched the blank-image control and grounding on: computed, not missing
    assert by["image_dependence"].verdict != MISSING and by["grounding"].verdict != MISSING
    assert section.count("  - Paper: ") == len(claim_texts())


@pytest.mark.slow
@SHARES_IT
def test_report_cli_rebuilds_identical_files(tiny, tmp_path: Path, capsys) -> None:
    args = ["--scale", "tiny", "--runs-dir", str(tiny.runs_dir), "--out", str(tmp_path / "r")]
    assert main([*args, "--no-attention"]) == 0
    first = {p.name: p.read_bytes() for p in sorted((tmp_path / "r").iterdir())}
    assert main([*args, "--no-attention"]) == 0
    second = {p.name: p.read_bytes() for p in sorted((tmp_path / "r").iterdir())}
    assert first == second and "figure3_attention.png" not in first
    paper = build_report(
        ReportSettings(
            profile="paper", scale="tiny", runs_dir=tiny.runs_dir, out_dir=tmp_path / "p"
        ),
        log=lambda _: None,
    )
    text = paper.read_text()
    assert "0 finished runs" in text and "matches the published 116.7" in text
    assert "not run: no finished run" in text


def test_a_point_run_again_with_another_budget_shows_the_newest_runs(tmp_path: Path) -> None:
    """Runs of an older budget stay in the store as another setting of the same point; the tables
    show the setting run last."""
    from dataclasses import replace

    old = make_run(metrics={"test/cider": 90.0}, params={"eval.max_new_tokens": "16"})
    old = replace(old, start_ms=1_000)
    new = make_run(metrics={"test/cider": 120.0}, params={"eval.max_new_tokens": "24"})
    new = replace(new, start_ms=2_000)
    for order in ((old, new), (new, old)):
        runs = runset(*order)
        assert len(runs.groups()) == 2
        assert runs.pick(lm="base", vlp=False).first.metrics["test/cider"] == 120.0
        row = next(x for x in table1(_inputs(runs, tmp_path)) if "reproduced: mini-base" in x)
        assert "| 120.0 |" in row


def test_a_spec_trained_longer_is_the_largest_model_and_no_table_row(tmp_path: Path) -> None:
    """The grounding spec's mini-large at 12 epochs (3x the budget): Table 3, Figure 3 and the
    grounding claim take it as the largest model; the tables and ablations keep the budget's runs,
    and every label names the other budget."""
    from dataclasses import replace

    from bench.sweep.spec import parse_spec

    def large(epochs: int, vlp: bool, seed: int, cider: float) -> Run:
        run = make_run(
            "large", vlp=vlp, seed=seed, n_layers=8, specs=("table1",) if epochs == 4 else (),
            metrics={"test/cider": cider}, params={"epochs": str(epochs)},
        )  # fmt: skip
        return replace(run, budget_epochs=4, specs=run.specs or ("grounding",))

    runs = runset(
        *(large(4, False, s, 200.0) for s in (0, 1)),
        *(large(4, True, s, 210.0) for s in (0, 1)),
        *(large(12, False, s, 250.0) for s in (0, 1)),
    )
    longest = runs.largest()
    assert (longest.first.epochs, longest.first.vlp) == (12, False)
    assert longest.first.label() == "large (mini-large), 12 epochs"
    assert runs.pick(lm="large", vlp=False).first.epochs == 4
    row = next(x for x in table1(_inputs(runs, tmp_path)) if "reproduced: mini-large" in x)
    assert "| 200.0 ± 0.0 |" in row and "250.0" not in row
    point = parse_spec("name: d\nbase: {lm: large}\naxes: {seed: [0]}\n").points()
    assert [g.first.epochs for g in runs.groups_of(point)] == [4]
    assert [g.first.epochs for g in runs.groups_of(point, 12)] == [12]
    unknown = runset(*(replace(r, budget_epochs=None) for r in runs.runs))
    assert len(unknown.groups_of(point)) == 2  # no budget known: every epochs counts
    one = replace(runs.runs[0], params={**runs.runs[0].params, "epochs": "1"})
    assert one.label().endswith(", 1 epoch")


def test_the_report_reads_the_budget_the_profile_trains_at() -> None:
    from bench.sweep.budgets import budget_of
    from bench.sweep.profiles import get_profile

    for scale in ("full", "tiny"):
        assert get_profile("mini", scale=scale).budget == budget_of("mini", scale)


def test_time_breakdown_tells_elapsed_from_summed_time(tmp_path: Path) -> None:
    from dataclasses import replace

    from bench.report.timing import time_breakdown

    a = make_run("base", metrics={"time/train_s": 8.0, "time/decode_s": 2.0})
    b = make_run("large", n_layers=8, metrics={"time/train_s": 15.0, "time/score_s": 5.0})
    a = replace(a, start_ms=0, end_ms=10_000, tags={"worker": "h:1"})
    b = replace(b, start_ms=1_000, end_ms=21_000, tags={"worker": "h:2"})
    lines = time_breakdown(_inputs(runset(a, b), tmp_path))
    text = "\n".join(lines)
    assert "Summed run time 30 s" in text and "elapsed" in text and "21 s" in text
    assert "with 2 worker processes" in text
    frame = pd.read_csv(tmp_path / "time_by_phase.csv")
    assert frame.set_index("lm").loc["large", "time/train_s"] == 15.0
    row = next(line for line in lines if line.startswith("| all"))
    assert "23 (77 %)" in row  # training: 23 of 30 s
