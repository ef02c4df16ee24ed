"""One real tiny reproduction shared by the report and reproduce tests (it costs about a minute).

``bench.reproduce.reproduce`` at ``--tiny`` size on two small specs named like the paper's (so the
report files them under Table 1 / Table 2 and the dropping ablation): three settings at two seeds
(six runs), base and large LM without VLP, and the large LM with the lower half of its layers
dropped, so that the claims have intervals. The ``dropping`` spec (seed 0) shares two of its
points with ``table1``: they train once and are tracked once, as runs that both specs find.
Both specs switch on the blank-image control and grounding (off in the tiny budget) so that every
claim of the mini profile is computed from real numbers. The result is cached per test process,
whichever test file asks first.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

TABLE1 = """\
name: table1
description: test-size Table 1 (base and large LM, large with half its layers dropped)
base: {lm: base, lambda: null, bottleneck: null, drop: 0, vlp: false, seed: 0}
axes:
  lm: [base, large]
  seed: [0, 1]
extra:
  - {lm: large, drop: 0.5}
overrides: {eval.blank_control: true, eval.grounding: true}
"""
DROPPING = """\
name: dropping
description: test-size dropping ablation
base: {lm: large, lambda: null, bottleneck: null, drop: 0, vlp: false, seed: 0}
axes:
  drop: [0, 0.5]
overrides: {eval.blank_control: true, eval.grounding: true}
"""


@dataclass(frozen=True)
class TinyReproduction:
    root: Path
    runs_dir: Path
    out: Path
    spec_paths: tuple[Path, ...]
    result: object  # bench.reproduce.ReproduceResult
    log: tuple[str, ...]
    seconds: float

    @property
    def uri(self) -> str:
        return f"sqlite:///{self.runs_dir / 'mlflow.db'}"


_CACHE: dict[str, TinyReproduction] = {}

#: Mark for every test that uses the reproduction: the cache is per process, so under
#: pytest-xdist (``--dist loadgroup``) these tests share one worker and it runs once.
SHARES_IT = pytest.mark.xdist_group("tiny_reproduction")


def _claim_the_build(factory: pytest.TempPathFactory) -> None:
    """Under pytest-xdist, fail loudly if a second test process starts the build: the grouping
    that should keep its tests in one process is broken (pytest 9.2 broke pytest-xdist 3.8's)."""
    worker = os.environ.get("PYTEST_XDIST_WORKER")
    if worker is None:
        return
    marker = factory.getbasetemp().parent / "tiny-reproduction-built-by"  # the session's root
    try:
        with marker.open("x") as fh:
            fh.write(worker)
    except FileExistsError:
        raise RuntimeError(
            f"the tiny reproduction is built a second time, by {worker} after "
            f"{marker.read_text()}: its tests must carry SHARES_IT and run under --dist loadgroup "
            "with pytest-xdist grouping working (pinned pytest and pytest-xdist)"
        ) from None


def tiny_reproduction(factory: pytest.TempPathFactory) -> TinyReproduction:
    if "run" in _CACHE:
        return _CACHE["run"]
    _claim_the_build(factory)
    from bench.reproduce import reproduce
    from bench.sweep.profiles import get_profile
    from bench.sweep.spec import load_spec

    root = factory.mktemp("tiny_reproduction")
    paths = []
    for name, text in (("table1", TABLE1), ("dropping", DROPPING)):
        path = root / f"{name}.yaml"
        path.write_text(text)
        paths.append(path)
    runs_dir, out = root / "runs", root / "report"
    profile = get_profile("mini", runs_dir=runs_dir, scale="tiny")
    log: list[str] = []
    started = time.perf_counter()
    result = reproduce(
        profile, [load_spec(p) for p in paths], out=out, progress=False, log=log.append
    )
    _CACHE["run"] = TinyReproduction(
        root, runs_dir, out, tuple(paths), result, tuple(log), time.perf_counter() - started
    )
    return _CACHE["run"]
