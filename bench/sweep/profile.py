"""A profile: what a sweep's abstract axes mean on a given machine.

A spec says "LM size large, drop half the layers, VLP on"; a profile binds that to backbones, data
and a training budget and returns the one thing the library sees, a :class:`TrainConfig`. Both
profiles go through :meth:`Profile.resolve`; they differ only in their tables and in what they
check or build before a sweep (:meth:`Profile.check`, :meth:`Profile.prepare`):

The named profiles (``bench.sweep.profiles``):

* ``mini`` (default, ``bench.mini.profile``): the harness's own pre-trained frozen mini backbones
  and the synthetic Shapes world, both built on first use under the runs folder; sized for a
  laptop or CI machine, with one single-threaded worker per core;
* ``paper`` (``bench.sweep.paper_profile``): GPT-2 base/medium/large and CLIP ViT-B/16 from the
  Hugging Face cache and the real datasets under ``--data-root``; one worker (one accelerator).

``scale="tiny"`` shrinks a profile (data, backbones, budget) for tests: same code, smaller numbers.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import ValidationError

from bench.sweep import axes, learning_rates
from bench.sweep.budgets import Budget
from bench.sweep.plan import Arch, RunPlan
from bench.sweep.spec import Point, SweepSpec
from ituning.errors import ConfigError, validation_line
from ituning.methods.clipcap_config import ClipCapConfig
from ituning.methods.registry import is_clipcap
from ituning.run_config import TrainConfig, set_dotted

if TYPE_CHECKING:
    from bench.sweep.cost import DataSizes


@dataclass(frozen=True)
class LMChoice:
    """One LM (a value of the ``lm`` axis): what to load and the architecture numbers the axes
    resolve against."""

    name: str
    n_layers: int
    d_lm: int
    #: The budget of points on this LM where it is not the profile's: one sized for the profile's
    #: own LMs may take hours on a much larger LM on the same machine. The learning-rate search
    #: resolves points the same way, so it searches at the budget the sweep trains at.
    budget: Budget | None = None


@dataclass(frozen=True)
class Profile:
    """The binding of axes to a machine. Subclasses add what they check or build first."""

    name: str
    scale: str
    runs_dir: Path
    lms: dict[str, LMChoice]
    vision: str
    vision_pretrained: str | None
    vision_width: int
    #: The ``data`` settings of each captioning dataset the profile has (the ``dataset`` axis's
    #: values: ``coco``, and ``flickr30k`` where the profile has it).
    datasets: dict[str, dict[str, str | None]]
    budget: Budget
    settings: dict[str, Any] = field(default_factory=dict)
    #: ClipCap settings over each variant's published ones (a small LM's positions need a
    #: shorter prefix).
    clipcap: dict[str, Any] = field(default_factory=dict)
    #: LMs the profile would have but cannot use here -> why, one line with the fix (the SmolLM2
    #: file comes from a package that may not be installed).
    unavailable: dict[str, str] = field(default_factory=dict)
    #: One single-threaded worker per core (small CPU models) instead of one worker (a GPU).
    cpu_workers: ClassVar[bool] = False
    #: The task is the paper's own (real datasets), so differences to its numbers mean something.
    paper_task: ClassVar[bool] = False

    @property
    def label(self) -> str:
        """``mini``, ``mini-tiny``: the MLflow experiment and optuna study of this profile."""
        return profile_label(self.name, self.scale)

    def problems(self, plans: Sequence[RunPlan] = (), *, progress: bool = True) -> list[str]:
        """What would stop ``plans``, one line each with its fix, writing nothing but the
        preflight's own cache (``bench.sweep.preflight``): a sweep asks before it opens any
        store, so a bad file costs no run."""
        return []

    def prepare(self, plans: Sequence[RunPlan] = (), *, progress: bool = True) -> None:
        """Build missing assets (after :meth:`check`)."""

    def lm_architecture(self, name: str):
        """The LM's architecture (a transformers config) without its weights."""
        from ituning.backbones import lm_config

        return lm_config(name)

    def vision_architecture(self, include_cls: bool):
        """The vision encoder with random weights, on the CPU (for the cost estimate)."""
        from ituning.vision import vision_from_config

        return vision_from_config(self.vision, device="cpu", include_cls=include_cls)

    def data_sizes(self) -> dict[str, DataSizes]:
        """Each dataset's images per split, NoCaps and VLP set, for the cost estimate (counted
        from the files)."""
        from bench.sweep.cost import DataSizes

        return {name: DataSizes.from_files(data) for name, data in self.datasets.items()}

    # ------------------------------------------------------------------ resolution

    def resolve(self, point: Point, overrides: dict[str, Any], *, source: str = "spec") -> RunPlan:
        """The point's :class:`TrainConfig`: each axis's setting (λ left to the search: the
        searched one), then the budget (the LM's own where it has one), the method's searched
        learning rate (``bench.sweep.learning_rates``), the profile's settings and the spec's
        overrides; the library's config checks the method's rules."""
        where = f"{source}: point [{point.label()}]"
        lm = self.lm(point["lm"], where)
        tree: dict[str, Any] = {
            "backbones": {"vision": self.vision, "vision_pretrained": self.vision_pretrained},
            "feature_cache": str(self.runs_dir / "features"),
        }
        method = point["method"]
        searched_lambda = learning_rates.chosen_lambda(self.label, method, point["lm"])
        on = axes.Target(lm, self.datasets, searched_lambda=searched_lambda or 1.0)
        for name, axis in axes.AXES.items():  # an axis foreign to the method keeps its default
            value = point[name] if axis.applies(method) else axis.default
            try:
                set_dotted(tree, axis.setting, axis.resolve(value, on))
            except ConfigError as exc:
                raise ConfigError(f"{where}: {exc} (profile {self.name})") from None
        if is_clipcap(method):
            tree["clipcap"] = {**ClipCapConfig.for_method(method).model_dump(), **self.clipcap}
        searched = (  # the method's own rate, if searched and not set by the caller
            None
            if "optim.lr" in overrides
            else learning_rates.chosen(self.label, method, point["lm"])
        )
        tuned = {"optim.lr": searched} if searched is not None else {}
        for dotted, value in {
            **(lm.budget or self.budget).settings(),
            **tuned,
            **self.settings,
            **overrides,
        }.items():
            set_dotted(tree, dotted, value)
        try:
            config = TrainConfig.model_validate(tree)
            config.itune.kept_layers(lm.n_layers)  # Dropping must keep a layer of this LM
        except ValidationError as exc:
            raise ConfigError(f"{where}: {validation_line(exc)}") from None
        except ConfigError as exc:
            drop = point["drop"]
            raise ConfigError(
                f"{where}: drop: {drop.to_yaml()} means {drop.resolve(lm.n_layers)} of the "
                f"{lm.n_layers} layers of {_short(lm)} (profile {self.name}): {exc} (as a fraction "
                f"of depth: below {(lm.n_layers - 0.5) / lm.n_layers:.3g})"
            ) from None
        arch = Arch(
            lm_name=lm.name,
            n_layers=lm.n_layers,
            d_lm=lm.d_lm,
            d_vis=self.vision_width,
            trainable_params=trainable_params(self, lm, config),
        )
        return RunPlan(point=point, config=config, arch=arch)

    def lm(self, name: str, where: str = "") -> LMChoice:
        """The LM a spec's ``lm`` names, or one line saying the profile lacks it (and why, where
        :attr:`unavailable` knows: a package not installed)."""
        if name in self.lms:
            return self.lms[name]
        prefix = f"{where}: " if where else ""
        if name in self.unavailable:
            raise ConfigError(
                f"{prefix}lm: {name!r} is not available in profile {self.label}: "
                f"{self.unavailable[name]}"
            )
        raise ConfigError(
            f"{prefix}lm: {name!r} is not an LM of profile {self.label} (it has: "
            f"{', '.join(self.lms)})"
        )

    def plan(self, spec: SweepSpec) -> list[RunPlan]:
        """Every point of ``spec`` resolved; points that resolve to the same config run once."""
        plans: dict[str, RunPlan] = {}
        for point in spec.points():
            plan = self.resolve(point, spec.overrides, source=spec.source)
            plans.setdefault(plan.run_id, plan)
        return list(plans.values())


def profile_label(name: str, scale: str) -> str:
    """A profile at a scale as its stores name it (MLflow experiment, optuna study, records)."""
    return name if scale == "full" else f"{name}-{scale}"


def trainable_params(profile: Profile, lm: LMChoice, config: TrainConfig) -> int:
    """Trainable parameters without weights: ``ituning.params`` when the LM's architecture can be
    read (shipped GPT-2 configs, a built mini folder), else, for I-Tuning, the module formula on
    the profile's architecture table (mini backbones not built yet; 0 for another method)."""
    clipcap = config.clipcap.model_dump_json() if config.clipcap is not None else None
    try:
        return _counted(
            lm.name, profile.vision, config.method, config.itune.model_dump_json(), clipcap
        )
    except Exception:
        from ituning.module import ITuningModule

        if config.method != "itune":
            return 0
        per_layer = ITuningModule.num_parameters(
            lm.d_lm, profile.vision_width, config.itune.bottleneck
        )
        return per_layer * (lm.n_layers - config.itune.drop_first)


@functools.lru_cache(maxsize=256)
def _counted(lm: str, vision: str, method: str, itune_json: str, clipcap_json: str | None) -> int:
    from ituning.config import ITuningConfig
    from ituning.params import count_parameters

    itune = ITuningConfig.model_validate_json(itune_json)
    clipcap = ClipCapConfig.model_validate_json(clipcap_json) if clipcap_json else None
    counted = count_parameters(lm, config=itune, vision=vision, method=method, clipcap=clipcap)
    return int(counted["trainable"])


def _short(lm: LMChoice) -> str:
    return Path(lm.name).name
