"""R3, SIGKILL of a training run: ``python -m ituning.train`` killed at named points (an optimiser
step, a state write, feature caching, checkpoint writing, evaluation) and at random moments, then
the same command again. Module weights (byte for byte) and metrics must equal an uninterrupted
run: a resume that is merely close would make every interrupted result of the paper suspect."""

from __future__ import annotations

import shutil

from bench.faults import stores
from bench.faults.harness import FaultHarness
from bench.faults.trials import RowResult, Trial, expect, run_trial


def check_training_kills(h: FaultHarness, row: RowResult) -> None:
    rng = h.rng
    named = [
        (False, f"train.step@{rng.randint(1, 3)}"),
        (False, f"state.save@{rng.randint(1, 2)}"),
        (True, "vlp.step@1"),
    ]
    if not h.quick:
        named += [
            (False, "features.shard@1"),
            (False, "checkpoint.save@1"),
            (False, f"evaluate.split@{rng.randint(1, 2)}"),
            (True, "state.save@1"),
        ]
    kills: list[tuple[bool, str | None, float | None]] = [(v, p, None) for v, p in named]
    h.train_reference(False)
    for _ in range(h.trials if not h.quick else 0):
        kills.append((False, None, rng.uniform(0.02, 0.98) * h.train_reference_seconds[False]))
    for vlp, point, delay in kills:

        def trial(t: Trial, vlp=vlp, point=point, delay=delay) -> None:
            ref = h.train_reference(vlp)["result"]
            base = h.scratch("r3")
            base.mkdir()
            config = h.train_config(vlp=vlp, features=base / "features")
            args = h.train_args(config, base / "run")
            begun = (base / "run" / "config.json").exists
            for _ in range(4):  # a random moment after the run ended: draw an earlier one
                killed = h.kill_at(
                    args, point=point, delay=delay, after=begun, log=base / "kill.log"
                )
                if killed.killed or delay is None:
                    break
                shutil.rmtree(base / "run")
                delay *= rng.uniform(0.3, 0.9)
            expect(killed.killed, f"the run {killed.where} before the kill")
            left = stores.folder_state(base / "run")
            proc = h.run(args)
            expect(proc.rc == 0, f"resume exited {proc.rc}: {proc.tail()}")
            got = stores.outcome(base / "run")
            expect(got is not None, "no result after resuming")
            expect(got["weights"] == ref["weights"], "module weights differ from the straight run")
            expect(got["metrics"] == ref["metrics"], "metrics differ from the straight run")
            t.notes.append(f"killed at {killed.where}, leaving {left}")

        label = (
            f"{'VLP + captioning' if vlp else 'captioning'}, kill at {point or 'a random moment'}"
        )
        run_trial(row, label, trial)
    row.notes.append(
        "`python -m ituning.train` killed, then the same command; module weights compared byte for "
        "byte and every metric except timings"
    )
