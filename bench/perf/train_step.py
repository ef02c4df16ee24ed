"""One training step as the library's trainer takes it: the unit the training arms time."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from bench.perf.settings import Mode
from ituning.stage_loop import autocast_for


class TrainArm:
    """One training step as :class:`ituning.stage_loop.StageTrainer` takes it.

    ``forward`` returns the summed caption NLL (the trainer's loss) under the mode's autocast; a
    step divides it by the target tokens, runs backward, then AdamW (torch defaults, as the
    trainer) on ``params`` and ``zero_grad(set_to_none=True)``.
    """

    def __init__(
        self,
        forward: Callable[[], Any],
        params: Sequence[nn.Parameter],
        model: nn.Module,
        batch: tuple[Tensor, Tensor],
        mode: Mode,
    ) -> None:
        self.forward = forward
        self.params = list(params)
        self.model = model
        self.ids, self.mask = batch
        self.mode = mode
        self.optimizer = torch.optim.AdamW(self.params, lr=1e-4)
        self.tokens = int(self.mask[:, 1:].sum())

    def loss(self) -> Tensor:
        with autocast_for(self.mode.torch_device, self.mode.precision):
            nll = self.forward()
        return nll / self.tokens

    def step(self) -> None:
        self.loss().backward()
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
