"""LMs of another family than GPT-2: the ``agnostic`` and ``pretrained_lm`` verdicts, the LM family
table, and that no Llama-family run stands in for a GPT-2 size, on synthetic run sets."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from test_report import make_run, runset

from bench.report import family_claims as F
from bench.report.claims import ClaimContext, by_size, check_claims
from bench.report.comparison_tables import table1
from bench.report.family import CSV_FILE, family_groups, family_section
from bench.report.paper import load_paper_tables
from bench.report.results import GPT2, LLAMA, LM_ORDER, lm_family
from bench.report.settings import ReportInputs, ReportSettings
from bench.report.verdicts import FAILS, HOLDS, INCONCLUSIVE, MISSING, NOT_CHECKED

PAPER = load_paper_tables()
#: Layers and width of the mini LMs of each size (a Llama twin has its GPT-2 size's shape).
SHAPES = {"base": (4, 96), "medium": (6, 128), "large": (8, 160)}


def lm_runs(lm, ciders, *, ratio=None, recall=None, params=1e4, profile="mini", **kw):
    """One run per seed of I-Tuning over ``lm`` with these test CIDErs; ``ratio``: test CIDEr over
    the blank-image control's (a little higher each seed); ``recall``: three-object recall."""
    layers, width = SHAPES.get(lm.removeprefix("llama-"), (30, 576))
    name = f"backbones/mini-llama-0a1b2c3d4e/{lm}" if lm.startswith("llama-") else None
    params_ = {"lm.name": name} if name else {}
    if lm.startswith("smollm2"):
        params_ = {"lm.name": f"backbones/{'SmolLM2-135M-Instruct' if lm == 'smollm2' else lm}"}
    out = []
    for s, cider in enumerate(ciders):
        metrics = {"test/cider": cider, "trainable_params": params}
        if ratio is not None:
            metrics["control/test/blank_cider"] = cider / (ratio + 0.5 * s)
        if recall is not None:
            metrics["objects/test/n3/recall"] = recall + 0.01 * s
        specs = ("table1",) if lm_family(lm) == GPT2 else ("lm_family",)
        run = make_run(
            lm, seed=s, n_layers=layers, d_lm=width, metrics=metrics, specs=specs,
            profile=profile, params={**params_, "profile": profile}, **kw,
        )  # fmt: skip
        out.append(run)
    return out


def ctx(*runs, profile="mini"):
    return ClaimContext(runset(*runs, profile=profile), PAPER)


# ---------------------------------------------------------------------- agnostic


def test_agnostic_reads_each_size_as_non_inferiority_with_exact_evidence():
    runs = [*lm_runs("base", [100, 102, 104]), *lm_runs("llama-base", [98, 99, 100], ratio=5)]
    v = F.agnostic(ctx(*runs))
    assert v.verdict == HOLDS and len(v.intervals) == 2
    # GPT-2 − Llama = 3 ± t(0.975, df 50/17) · sqrt(4/3 + 1/3), under the 10-point margin
    assert v.evidence == (
        "base: GPT-2 102.0 ± 2.0 (n=3), Llama 99.0 ± 1.0 (n=3), GPT-2 − Llama +3.0 [-1.2, +7.2]; "
        "llama-base test CIDEr 5.5× the blank image's (ratio − 3: +2.50 [+1.26, +3.74])"
    )
    assert "the 10-point margin is ours" in v.source and "agnostic" in v.source
    assert "at most 10 test CIDEr below" in v.claim


def test_agnostic_holds_fails_or_is_inconclusive_by_the_margin():
    gpt2 = [*lm_runs("base", [100, 101, 102]), *lm_runs("large", [110, 111, 112])]

    def llama(base, large, ratio=6.0):
        return [
            *lm_runs("llama-base", base, ratio=ratio),
            *lm_runs("llama-large", large, ratio=ratio),
        ]

    assert F.agnostic(ctx(*gpt2, *llama([99, 100, 101], [113, 114, 115]))).verdict == HOLDS
    # 30 below at large: beyond the margin whatever the noise; one size failing fails the claim
    far = F.agnostic(ctx(*gpt2, *llama([99, 100, 101], [80, 81, 82])))
    assert far.verdict == FAILS and "large: GPT-2 111.0" in far.evidence
    # 8 below with seeds 5 apart: the interval straddles the margin
    noisy = F.agnostic(ctx(*gpt2, *llama([99, 100, 101], [98, 103, 108])))
    assert noisy.verdict == INCONCLUSIVE
    # as good as GPT-2, but the captions barely depend on the image
    blind = F.agnostic(ctx(*gpt2, *llama([99, 100, 101], [113, 114, 115], ratio=1.2)))
    assert blind.verdict == FAILS and "llama-large test CIDEr 1.7× the blank" in blind.evidence


def test_agnostic_without_the_blank_image_control_says_it_was_not_checked():
    runs = [*lm_runs("base", [100, 101, 102]), *lm_runs("llama-base", [99, 100, 101])]
    v = F.agnostic(ctx(*runs))
    assert v.verdict == HOLDS and len(v.intervals) == 1
    assert "image dependence not checked: the Llama runs have no blank-image control" in v.evidence


def test_agnostic_is_missing_without_llama_runs_or_their_gpt2_twins():
    v = F.agnostic(ctx(*lm_runs("base", [100, 101, 102])))
    assert v.verdict == MISSING and "Llama" in v.evidence
    assert "`python -m bench.sweep lm_family --profile mini` makes them" in v.evidence
    twinless = F.agnostic(ctx(*lm_runs("base", [100, 101]), *lm_runs("llama-large", [90, 91])))
    assert twinless.verdict == MISSING and "large LM (GPT-2)" in twinless.evidence
    # a llama size without its twin is named beside the sizes that were compared
    runs = [*lm_runs("base", [100, 101]), *lm_runs("llama-base", [99, 100])]
    partial = F.agnostic(ctx(*runs, *lm_runs("llama-medium", [95, 96])))
    assert "no GPT-2 twin for llama-medium" in partial.evidence


def test_smollm2_never_stands_in_for_a_llama_size():
    runs = [*lm_runs("base", [100, 101]), *lm_runs("smollm2", [90, 91])]
    assert F.agnostic(ctx(*runs)).verdict == MISSING


# ---------------------------------------------------------------------- pretrained_lm


def test_pretrained_lm_is_a_superiority_test_against_random_weights():
    pre = lm_runs("smollm2", [90, 91, 92])
    v = F.pretrained_lm(ctx(*pre, *lm_runs("smollm2-random", [40, 41, 42])))
    assert v.verdict == HOLDS and v.intervals[0].estimate == pytest.approx(50.0)
    assert "random weights 41.0 ± 1.0 (n=3); pre-trained − random +50.0" in v.evidence
    assert "non-trainable pre-trained language decoder GPT2" in v.source
    assert F.pretrained_lm(ctx(*pre, *lm_runs("smollm2-random", [95, 96, 97]))).verdict == FAILS
    noisy = lm_runs("smollm2-random", [80, 91, 102])
    assert F.pretrained_lm(ctx(*pre, *noisy)).verdict == INCONCLUSIVE


def test_pretrained_lm_missing_at_mini_and_not_checked_at_paper():
    v = F.pretrained_lm(ctx(*lm_runs("smollm2", [90, 91])))
    assert v.verdict == MISSING and "smollm2-random LM" in v.evidence
    assert "sweep `lm_family_smollm2`" in v.evidence
    paper = lm_runs("smollm2", [90, 91], profile="paper")
    v = F.pretrained_lm(ctx(*paper, profile="paper"))
    assert v.verdict == NOT_CHECKED and "smollm2-random" in v.evidence
    rnd = lm_runs("smollm2-random", [40, 41], profile="paper")
    assert F.pretrained_lm(ctx(*paper, *rnd, profile="paper")).verdict == HOLDS


def test_both_claims_follow_agnostic_in_the_claim_list():
    keys = [v.key for v in check_claims(runset(), PAPER)]
    assert keys[keys.index("agnostic") + 1] == "pretrained_lm"


# ---------------------------------------------------------------------- the LM family table


def _inputs(runs, tmp_path: Path) -> ReportInputs:
    return ReportInputs(ReportSettings(out_dir=tmp_path), runs, PAPER, tmp_path, tmp_path)


def _family_runs():
    return runset(
        *lm_runs("smollm2-random", [40, 42], recall=0.2, params=3e5),
        *lm_runs("llama-large", [108, 110, 112], recall=0.8, params=2e4),
        *lm_runs("large", [110, 111, 112], recall=0.9, params=2e4),
        *lm_runs("smollm2", [90, 91, 92], params=3e5),
        *lm_runs("base", [100, 102, 104], recall=0.7),
        *lm_runs("llama-base", [98, 99, 100], recall=0.6),
        *lm_runs("large", [150, 151], vlp=True),  # VLP: not a row
        *lm_runs("llama-large", [50, 51], drop=4),  # dropped: not a row
    )


def test_family_table_has_one_row_per_lm_with_its_numbers(tmp_path: Path):
    lines = family_section(_inputs(_family_runs(), tmp_path))
    head, rows = lines[0], [line for line in lines[2:] if line.startswith("| ")]
    assert head == (
        "| LM | model | family | layers × width | trainable | test CIDEr | seeds "
        "| recall, 3 objects |"
    )
    assert [r.split(" | ")[0] for r in rows] == [
        "| `base`",
        "| `large`",
        "| `llama-base`",
        "| `llama-large`",
        "| `smollm2`",
        "| `smollm2-random`",
    ]
    assert rows[0] == (
        "| `base` | mini-base | GPT-2 | 4 × 96 | 10.0k | 102.0 ± 2.0 | 3 | 0.71 ± 0.01 |"
    )
    assert rows[3] == (
        "| `llama-large` | llama-large | Llama | 8 × 160 | 20.0k | 110.0 ± 2.0 | 3 | 0.81 ± 0.01 |"
    )
    assert rows[4] == (
        "| `smollm2` | SmolLM2-135M-Instruct | Llama | 30 × 576 | 300.0k | 91.0 ± 1.0 | 3 | – |"
    )
    assert rows[5] == (
        "| `smollm2-random` | smollm2-random | Llama | 30 × 576 | 300.0k | 41.0 ± 1.4 | 2 "
        "| 0.21 ± 0.01 |"
    )
    assert "Numbers: [lm_family.csv](lm_family.csv)" in lines
    frame = pd.read_csv(tmp_path / CSV_FILE)
    assert list(frame["lm"]) == ["base", "large", "llama-base", "llama-large", "smollm2",
                                 "smollm2-random"]  # fmt: skip
    assert list(frame["family"]) == [GPT2, GPT2, LLAMA, LLAMA, LLAMA, LLAMA]
    row = frame.set_index("lm").loc["llama-large"]
    assert (row["lm_layers"], row["lm_width"], row["test/cider n"]) == (8, 160, 3)
    assert row["test/cider mean"] == pytest.approx(110.0)
    assert row["trainable_params mean"] == pytest.approx(2e4)


def test_family_table_waits_for_another_family(tmp_path: Path):
    runs = runset(*lm_runs("base", [100, 101]), *lm_runs("large", [110, 111]))
    assert [g.first.lm_size for g in family_groups(runs)] == ["base", "large"]
    assert family_section(_inputs(runs, tmp_path)) == [
        "Every I-Tuning run here tunes a GPT-2 LM: `python -m bench.sweep lm_family --profile "
        "mini` adds Llama-family LMs."
    ]
    assert not (tmp_path / CSV_FILE).exists()


# ---------------------------------------------------------------------- GPT-2 sizes stay GPT-2


def test_llama_and_smollm2_runs_never_stand_in_for_a_gpt2_size(tmp_path: Path):
    """Beside GPT-2 large, deeper Llama-family LMs leave Table 1, ``largest`` and the size groups
    on the GPT-2 runs."""
    assert all(lm_family(lm) == GPT2 for lm in LM_ORDER)
    gpt2 = lm_runs("large", [110, 111, 112])
    runs = runset(
        *gpt2,
        *lm_runs("llama-large", [150, 151, 152]),
        *lm_runs("smollm2", [160, 161, 162]),  # 30 layers to GPT-2 large's 8
        *lm_runs("smollm2", [170, 171], vlp=True),
    )
    assert {r.config_hash for r in runs.largest().runs} == {r.config_hash for r in gpt2}
    assert list(by_size(runs)) == ["large"] and by_size(runs)["large"].first.lm_family == GPT2
    text = "\n".join(table1(_inputs(runs, tmp_path)))
    reproduced = [line for line in text.splitlines() if "reproduced: " in line]
    assert reproduced and all("mini-large" in line for line in reproduced)
    assert "111.0 ± 1.0" in text and "llama" not in text.lower() and "smollm2" not in text.lower()
