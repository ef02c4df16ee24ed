"""R13's scenario (the machines and servers are ``bench.faults.machines``'s) and what must hold.

What the stores say is read through MLflow's and optuna's own clients, from the tracking server
and the PostgreSQL queue the machines used.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass

from bench.faults import stores
from bench.faults.machines import GRACE_S, HEARTBEAT_S, Fleet, fleet, missing_pieces, wait_for
from bench.faults.trials import RowResult, Trial, expect, run_trial
from ituning.faultpoints import MARKER_ENV, PAUSE_ENV

#: The pause point where machine0 is killed: an optimiser step in the middle of its point.
KILL_POINT = "train.step@2"
#: What a worker prints while it retries a server that is down.
SEEN = {"tracking": "Retrying (Retry(", "postgres": "optuna storage unreachable"}
#: How long a stopped server stays down (the MLflow client's own retries span longer).
DOWN_S = 10.0


@dataclass
class Outcome:
    """Per point (run folder digest): its MLflow runs' statuses and its trials' states."""

    runs: dict[str, list[str]]
    trials: dict[str, list[str]]
    finished_start_ms: dict[str, int]
    unlogged: list[str]
    stray_running: int


def read_outcome(f: Fleet) -> Outcome:
    """What the tracking server and the queue hold for the sweep."""
    import optuna
    from mlflow import MlflowClient

    client = MlflowClient(f.cluster.tracking_uri)
    name = stores.profile_store()
    exp = client.get_experiment_by_name(name)
    mlruns = client.search_runs([exp.experiment_id], max_results=1000) if exp else []
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.load_study(study_name=name, storage=f.cluster.storage_url)
    trials: dict[str, list[str]] = {}
    for t in study.get_trials(deepcopy=False):
        trials.setdefault(t.user_attrs.get("digest", "?"), []).append(t.state.name)
    runs: dict[str, list[str]] = {d: [] for d in trials}
    started: dict[str, int] = {}
    unlogged, stray = [], 0
    for r in mlruns:
        digest = r.data.tags.get("config_hash")
        if digest not in runs:
            stray += r.info.status == "RUNNING"
            continue
        runs[digest].append(r.info.status)
        if r.info.status == "FINISHED":
            started[digest] = r.info.start_time
            artifacts = {a.path for a in client.list_artifacts(r.info.run_id)}
            if "test/cider" not in r.data.metrics or "result.json" not in artifacts:
                unlogged.append(digest)
    return Outcome(runs, trials, started, unlogged, stray)


def expect_each_point_once(o: Outcome, *, rerun: set[str] = frozenset()) -> None:
    """One FINISHED run per point, logged with its result; nothing RUNNING or WAITING; a point
    has more than one run only if it is in ``rerun`` (its machine died under it)."""
    expect(len(o.runs) == 2, f"the queue holds {len(o.runs)} points, not smoke's 2")
    for digest, statuses in o.runs.items():
        expect(statuses.count("FINISHED") == 1, f"{digest}: MLflow runs {statuses}")
        expect("RUNNING" not in statuses, f"{digest}: a run left RUNNING ({statuses})")
        expect(len(statuses) == 1 or digest in rerun, f"{digest} ran again: {statuses}")
        states = o.trials[digest]
        expect(states.count("COMPLETE") == 1, f"{digest}: trials {states}")
        expect(not {"RUNNING", "WAITING"} & set(states), f"{digest}: trial left {states}")
    expect(not o.unlogged, f"FINISHED without test/cider or result.json: {o.unlogged}")
    expect(not o.stray_running, f"{o.stray_running} runs RUNNING outside the sweep's points")


def claimed_by(log: str) -> list[str]:
    """The points a machine's log says it started ("<digest> <label>: running in ...")."""
    return re.findall(r"\] ([0-9a-f]{12}) .*: running in", log)


def several_machines(f: Fleet, t: Trial, down_s: float = DOWN_S) -> None:
    """One sweep, three faults, each where it tests something:

    1. machine0 pauses at an optimiser step of its point (alive: its heartbeats go on); of
       machine1 and machine2, started together, one claims the other point and one finds nothing
       to claim and waits;
    2. PostgreSQL goes down for ``down_s``: the waiting machine's polling retries, machine0's
       heartbeats fail; once it is back, nobody may take machine0's point for a dead machine's;
    3. machine0 is SIGKILLed; just before its grace period ends, the tracking server goes down
       for ``down_s``: the machine that re-runs the point must ride out the outage.
    """
    m0, m1, m2 = f.machines
    f.enqueue()
    marker = m0.folder / "paused"
    f.start(m0, {PAUSE_ENV: KILL_POINT, MARKER_ENV: str(marker)})
    wait_for("machine0 paused in the middle of its point", marker.exists, f)
    f.start(m1)
    f.start(m2)

    def waiting() -> list[str]:
        return [m.name for m in (m1, m2) if "nothing left to claim" in m.output()]

    wait_for("machine1 or machine2 waiting", waiting, f)
    waiter = waiting()[0]

    f.cluster.pg.stop()
    time.sleep(down_s)
    f.cluster.pg.start()
    time.sleep(2 * HEARTBEAT_S)

    m0.kill()
    time.sleep(GRACE_S - 1)
    f.cluster.tracking.stop()
    time.sleep(down_s)
    f.cluster.tracking.start()

    rcs = f.wait_all()
    expect(all(rc == 0 for rc in rcs.values()), f"exit codes {rcs}: {m1.tail()} | {m2.tail()}")
    (dying,) = claimed_by(m0.output())
    o = read_outcome(f)
    expect_each_point_once(o, rerun={dying})
    expect(len(o.runs[dying]) == 2, f"the dead machine's point: runs {o.runs[dying]}")
    rerun_by = [m.name for m in (m1, m2) if dying in claimed_by(m.output())]
    expect(rerun_by, "no other machine re-ran the dead machine's point")
    waited = o.finished_start_ms[dying] / 1000 - (m0.killed_at or 0)
    expect(waited >= GRACE_S - 1, f"re-run {waited:.1f} s after the kill, before the grace period")
    for which, machines in [("postgres", [waiter]), ("tracking", rerun_by)]:
        saw = [m.name for m in f.machines if m.name in machines and SEEN[which] in m.output()]
        expect(saw, f"no machine noticed the {which} outage")
        t.notes.append(f"{which} outage retried through by {', '.join(saw)}")
    t.notes.append(f"re-run by {rerun_by[0]} {waited:.0f} s after the kill (grace {GRACE_S} s)")


def check_several_machines(h, row: RowResult) -> None:
    """The scenario ``h.trials`` times, each on a fresh cluster and fresh machines."""
    problem = missing_pieces()
    if problem:
        raise RuntimeError(problem)

    def one(t: Trial) -> None:
        with fleet(h.scratch("r13"), h.template(), h.env()) as f:
            several_machines(f, t)

    for _ in range(h.trials):
        run_trial(row, "a machine paused, PostgreSQL restarted, the machine SIGKILLed, the "
                  "tracking server restarted", one)  # fmt: skip
    row.notes.append(
        f"3 worker processes in pid namespaces of their own, own runs folders; PostgreSQL queue, "
        f"mlflow server on PostgreSQL; heartbeat {HEARTBEAT_S} s, grace {GRACE_S} s, outages "
        f"{DOWN_S:.0f} s"
    )
