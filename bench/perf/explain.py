"""Why a target was missed: one paragraph per missed row, from what the run measured.

The explanations live next to the numbers they quote; the fixed prose of the report is in
``report_template.md``.
"""

from __future__ import annotations

from bench.perf.decoding_arms import CAPTIONS_DIFFER
from bench.perf.memory import Memory
from bench.perf.results import Report, format_mib

#: A CUDA step whose kernels fill less of it than this is explained as host-bound.
HOST_BOUND_BELOW = 0.5

#: Why a training step's time ratio stays above its target even when the step does no avoidable
#: work; the measured evidence (:func:`clock_evidence`) follows it.
TRAIN_STEP_FLOORS = {
    "P1": "the frozen LM's forward pass and its input-gradient backward (down to the "
    "first module) remain, and the modules add their own K/V, query and attention work",
    "P2": "Dropping removes the lower modules and the backward pass below the first "
    "kept layer, but not the forward pass of the dropped layers (the kept ones need "
    "their output) nor the LM head's forward and backward, which together are most of "
    "the step: when the counted-FLOP ratio is itself above the target, no "
    "implementation of this step reaches it at this shape",
    "P3": "the speed-up is bounded by the encoder's share of the live step",
}

MEMORY_FLOOR = (
    "The frozen LM keeps what its input-gradient backward needs "
    "(layer-norm inputs, attention q/k/v/outputs, GELU inputs, a chunk of the loss's "
    "logits), so freezing removes the LM's optimizer state and gradients but little "
    "activation memory, and activations grow with the batch while the saving does "
    "not; the modules' own saved tensors are a small part. Levers lie outside the "
    "module and its injection: activation checkpointing of the frozen LM (at the cost "
    "of a recomputed forward pass), or on a GPU a frozen LM stored in bf16 (it needs "
    "no fp32 master copy)."
)


def clock_evidence(report: Report, arm: str) -> str:
    """What the measured clock says about a missed time target of ``arm``'s step."""
    busy = report.busy.get(arm)
    if busy is None:
        return (
            "The counted-FLOP ratio in the row is the noise-free reference; a time ratio near it "
            "means the step does no avoidable work, and repeated runs on this shared machine "
            "scatter by a few hundredths around it."
        )
    measured = (
        f"The GPU is busy {100 * busy.fraction:.0f} % of the step ({1e3 * busy.kernel_s:.1f} ms "
        f"of kernels in {1e3 * busy.step_s:.1f} ms, {busy.kernels:,} launches)"
    )
    more_work = "`--decode-images`" if arm.startswith("decode") else "`--images`"
    if busy.fraction < HOST_BOUND_BELOW:
        return (
            f"{measured}: the host's Python, dispatcher and kernel launches set the pace, so "
            "times follow how many kernels each arm launches rather than its FLOPs. The FLOP "
            f"ratio is approached when each launch carries more work (a larger {more_work}) or "
            "when the step is captured once and replayed (CUDA graphs)."
        )
    where = '"Where the GPU time goes"'
    if busy.top:
        op, sec, _ = busy.top[0]
        where += f"; `{op}` takes {100 * sec / busy.kernel_s:.0f} % of the kernel time"
    if arm.startswith("decode"):
        return (
            f"{measured}, but far below the matmul ceiling ({where}): a decoding step's kernels "
            "are small (one new token per beam), so the extra projections add little time."
        )
    return (
        f"{measured}, but far below the matmul ceiling (MFU rows; {where}): at GPT-2 base's "
        "width the step's matmuls are small and its copies, attention and element-wise kernels "
        "are memory-bound, and the frozen LM still runs all of them forward and most of them "
        "backward, so the time ratio stays above the counted-FLOP ratio in the row."
    )


def _activation_bytes(memory: Memory) -> int:
    """Bytes at the peak other than weights and optimizer state: what the step itself keeps."""
    return sum(v for k, v in memory.parts.items() if k not in ("weights", "optimizer state"))


def explain_misses(report: Report) -> list[str]:
    """One paragraph per missed target, from what the run measured."""
    out = []
    for r in report.rows:
        if r.met is not False:
            continue
        if r.id == "P1m" and report.memory:
            ours, full = report.memory["itune"], report.memory["full"]
            out.append(
                f"- **P1m:** at the I-Tuning step's peak, activations, inputs and temporaries take "
                f"{format_mib(_activation_bytes(ours))} of {format_mib(ours.peak)}, against "
                f"{format_mib(_activation_bytes(full))} for full fine-tuning. {MEMORY_FLOOR}"
            )
        elif r.id in TRAIN_STEP_FLOORS and report.flops:
            out.append(
                f"- **{r.id}:** {r.result} against {r.target}: {TRAIN_STEP_FLOORS[r.id]}. "
                f"{clock_evidence(report, 'itune')}"
            )
        elif r.id.startswith("P4") and CAPTIONS_DIFFER in r.note:
            out.append(f"- **{r.id}:** the arms decoded different token ids: a correctness bug.")
        elif r.id.startswith("P4") and "decode" in report.busy:
            out.append(
                f"- **{r.id}:** {r.result} against {r.target}: the naive path's extra K/V "
                "projections are a small share of a beam-search step. "
                + clock_evidence(report, "decode")
            )
        elif r.id.startswith("P4"):
            out.append(f"- **{r.id}:** {r.result} against {r.target}.")
        elif r.id == "P5":
            out.append(f"- **P5:** {r.result}.")
    return out
