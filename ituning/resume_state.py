"""Resumable training state: module weights, optimiser, scheduler, position, RNG and curves.

Written atomically (temporary file, then ``os.replace``) so a kill mid-write leaves the previous
state intact, and read with ``weights_only=True`` so a tampered file cannot execute code. A flipped
byte in a tensor still loads, and a resumed run would silently continue from other weights, so
each save records the state's sha256 in ``train_state.sha256`` and a load checks it. The record is
written before the state is renamed into place and accepts the state it replaces too: a kill
between the two writes leaves a state the record still accepts.
"""

from __future__ import annotations

import json
import pickle
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ituning.errors import CheckpointError, first_line
from ituning.faultpoints import fault_point
from ituning.files import atomic_path, atomic_write_json, sha256_file

STATE_FILE = "train_state.pt"
DIGEST_FILE = "train_state.sha256"


@dataclass
class TrainState:
    stage: str
    global_step: int  # optimiser steps completed in this stage
    modules: dict[str, torch.Tensor]
    optimizer: dict
    scheduler: dict
    rng: torch.Tensor
    curve: list[tuple[int, float]] = field(default_factory=list)  # (step, loss) of this stage
    completed_stages: list[str] = field(default_factory=list)
    captions_per_s: float = float("nan")  # training throughput of the process that wrote it

    def to_dict(self) -> dict:
        return {
            "stage": self.stage,
            "global_step": self.global_step,
            "modules": self.modules,
            "optimizer": self.optimizer,
            "scheduler": self.scheduler,
            "rng": self.rng,
            "curve": [list(p) for p in self.curve],
            "completed_stages": list(self.completed_stages),
            "captions_per_s": self.captions_per_s,
        }


def save_state(state: TrainState, directory: Path) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    final = directory / STATE_FILE
    with atomic_path(final) as tmp:
        torch.save(state.to_dict(), tmp)
        accepted = [sha256_file(tmp), *([sha256_file(final)] if final.is_file() else [])]
        atomic_write_json(directory / DIGEST_FILE, {"accepted": accepted})
        fault_point("state.save")
    return final


def _accepted(directory: Path) -> list[str] | None:
    """The digests the record accepts; ``None`` for a state of older code (no record)."""
    try:
        raw = json.loads((directory / DIGEST_FILE).read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        return []  # a damaged record accepts nothing
    accepted = raw.get("accepted") if isinstance(raw, dict) else None
    return [d for d in accepted if isinstance(d, str)] if isinstance(accepted, list) else []


def load_state(directory: Path) -> TrainState | None:
    """The saved state, ``None`` if there is none; CheckpointError if it is unreadable."""
    path = directory / STATE_FILE
    if not path.exists():
        return None
    accepted = _accepted(directory)
    if accepted is not None and sha256_file(path) not in accepted:
        raise CheckpointError(
            f"{path}: training state is truncated or corrupt (its sha256 is not the one recorded "
            f"in {DIGEST_FILE} when it was saved); delete it to restart this run from scratch"
        )
    try:
        raw = torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, pickle.UnpicklingError, zipfile.BadZipFile, EOFError) as exc:
        reason = first_line(exc)
        raise CheckpointError(
            f"{path}: training state is truncated or not a safe checkpoint ({reason[:120]}); "
            "delete it to restart this run from scratch"
        ) from None
    try:
        return TrainState(
            stage=raw["stage"],
            global_step=int(raw["global_step"]),
            modules=raw["modules"],
            optimizer=raw["optimizer"],
            scheduler=raw["scheduler"],
            rng=raw["rng"],
            curve=[(int(s), float(v)) for s, v in raw["curve"]],
            completed_stages=list(raw["completed_stages"]),
            captions_per_s=float(raw.get("captions_per_s", float("nan"))),
        )
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise CheckpointError(
            f"{path}: not a training state of this version ({type(exc).__name__}: {exc}); "
            "delete it to restart this run from scratch"
        ) from None
