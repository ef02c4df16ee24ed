"""The optimisation loop of one training stage (VLP or captioning), exactly resumable.

Loss: the caption NLL summed over every target token of the *optimiser step* and divided by that
step's token count, i.e. a per-token mean over the effective batch, however it is split into
micro-batches and ranks. Since the batch plan is a pure function of ``(seed, epoch)``, every rank
knows the step's token count without communicating.
"""

from __future__ import annotations

import inspect
import math
import os
import time
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from pathlib import Path

import torch
from torch.nn.parallel import DistributedDataParallel
from tqdm.auto import tqdm

from ituning.batches import CaptionBatcher, MicroBatch
from ituning.data.records import CaptionRecord
from ituning.distributed import DistContext
from ituning.errors import ITuningError
from ituning.faultpoints import fault_point
from ituning.inject import ITuningModel
from ituning.resume_state import TrainState, load_state, save_state
from ituning.run_config import TrainConfig
from ituning.schedule import warmup_cosine
from ituning.text import CaptionCodec

#: Fault injection for the reliability suite: make the loss of this step (counted from 0 within
#: each stage) non-finite.
INJECT_NONFINITE_ENV = "ITUNING_INJECT_NONFINITE_AT_STEP"

VisualFn = Callable[[Sequence[str]], torch.Tensor]
MetricFn = Callable[[str, float, int], None]


# Buffers belong to the frozen LM and are equal on every rank: broadcasting them before each
# forward would only add a collective per micro-batch. torch 2.14 renamed the switch.
_NO_BUFFER_SYNC_PER_FORWARD = (
    {"forward_sync_buffers": False}
    if "forward_sync_buffers" in inspect.signature(DistributedDataParallel.__init__).parameters
    else {"broadcast_buffers": False}
)


class NonFiniteLossError(ITuningError):
    """The loss became NaN/inf: the run is failed, never reported as finished."""


def autocast_for(device: torch.device, precision: str):
    """bf16 autocast on GPU (and where asked for), plain fp32 on CPU by default."""
    if precision == "bf16" or (precision == "auto" and device.type == "cuda"):
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return nullcontext()


class StageTrainer:
    def __init__(
        self,
        model: ITuningModel,
        codec: CaptionCodec,
        visual: VisualFn,
        config: TrainConfig,
        dist: DistContext,
        state_dir: Path,
        *,
        on_metric: MetricFn | None = None,
        progress: bool = True,
    ) -> None:
        self.model = model
        self.codec = codec
        self.visual = visual
        self.cfg = config
        self.dist = dist
        self.state_dir = state_dir
        self.on_metric = on_metric or (lambda name, value, step: None)
        self.progress = progress and dist.is_main
        self.ddp = (
            DistributedDataParallel(
                model,
                device_ids=[dist.device.index] if dist.device.type == "cuda" else None,
                **_NO_BUFFER_SYNC_PER_FORWARD,
            )
            if dist.enabled
            else None
        )
        self.captions_per_s: float = float("nan")

    def fit(
        self, stage: str, records: Sequence[CaptionRecord], epochs: int
    ) -> list[tuple[int, float]]:
        """Train one stage to completion (resuming if its state is on disk); returns its loss curve."""
        saved = load_state(self.state_dir)
        completed = list(saved.completed_stages) if saved else []
        if saved is not None:
            self.model.load_module_state_dict(saved.modules)
        if stage in completed:
            self.captions_per_s = saved.captions_per_s
            return saved.curve if saved.stage == stage else []

        cfg = self.cfg
        batcher = CaptionBatcher(
            records,
            self.codec,
            captions_per_image=cfg.captions_per_image,
            images_per_step=cfg.images_per_step,
            micro_batch_images=cfg.micro_batch_images,
            seed=cfg.seed,
            world_size=self.dist.world_size,
        )
        total = epochs * batcher.steps_per_epoch
        optimizer = torch.optim.AdamW(
            self.model.trainable_parameters(),
            lr=cfg.optim.lr,
            weight_decay=cfg.optim.weight_decay,
        )
        scheduler = warmup_cosine(optimizer, total, cfg.optim.warmup_ratio)
        start, curve = 0, []
        if saved is not None and saved.stage == stage:
            optimizer.load_state_dict(saved.optimizer)
            scheduler.load_state_dict(saved.scheduler)
            torch.set_rng_state(saved.rng)
            start, curve = saved.global_step, list(saved.curve)

        inject_at = os.environ.get(INJECT_NONFINITE_ENV)
        bar = tqdm(
            total=total,
            initial=start,
            desc=f"{stage}",
            unit="step",
            disable=not self.progress,
            dynamic_ncols=True,
        )
        captions_done, skipped, t0 = 0, 0, time.perf_counter()
        for step in range(start, total):
            epoch, in_epoch = divmod(step, batcher.steps_per_epoch)
            plan = batcher.step_micro_batches(epoch, in_epoch)
            step_tokens = sum(mb.target_tokens for rank in plan for mb in rank)
            loss_sum = self._accumulate(plan[self.dist.rank], step_tokens)
            loss = self.dist.sum(loss_sum) / step_tokens
            if inject_at is not None and int(inject_at) == step:
                loss = float("nan")
            # The norm is computed (and clipped) after DDP's all-reduce: equal on every rank.
            grad_norm = float(
                torch.nn.utils.clip_grad_norm_(
                    self.model.trainable_parameters(), cfg.optim.grad_clip or math.inf
                )
            )
            lr = scheduler.get_last_lr()[0]
            finite = math.isfinite(loss) and math.isfinite(grad_norm)
            if not finite and cfg.fail_on_nonfinite:
                raise NonFiniteLossError(
                    f"{stage} step {step}: training loss {loss}, gradient norm {grad_norm}; the "
                    f"run is failed (lower optim.lr={cfg.optim.lr} or check the data)"
                )
            if finite:
                optimizer.step()
            else:  # fail_on_nonfinite: false -- skip the update, keep the schedule's position
                skipped += 1
                self.on_metric(f"{stage}/skipped_steps", float(skipped), step)
            optimizer.zero_grad(set_to_none=True)
            scheduler.step()
            captions_done += sum(mb.input_ids.shape[0] for rank in plan for mb in rank)
            self.captions_per_s = captions_done / (time.perf_counter() - t0)
            if finite:
                curve.append((step, loss))
                self.on_metric(f"{stage}/loss", loss, step)
            self.on_metric(f"{stage}/lr", lr, step)
            bar.set_postfix(loss=f"{loss:.3f}", lr=f"{lr:.2e}", cap_s=f"{self.captions_per_s:.0f}")
            bar.update(1)
            fault_point(f"{stage}.step")
            done = step + 1 == total
            if done or (step + 1) % cfg.checkpoint_every == 0:
                self._save(stage, step + 1, optimizer, scheduler, curve, completed + [stage] * done)
        bar.close()
        return curve

    def _accumulate(self, micro_batches: list[MicroBatch], step_tokens: int) -> float:
        """Forward/backward every micro-batch of this rank; gradients sync on the last one only."""
        net = self.ddp or self.model
        device, loss_sum = self.dist.device, 0.0
        scale = self.dist.world_size / step_tokens  # DDP averages over ranks
        for i, mb in enumerate(micro_batches):
            last = i == len(micro_batches) - 1
            sync = nullcontext() if (self.ddp is None or last) else self.ddp.no_sync()
            with sync:
                visual = self.visual(mb.image_ids).to(device)
                ids, mask = mb.input_ids.to(device), mb.attention_mask.to(device)
                with autocast_for(device, self.cfg.precision):
                    nll = net(input_ids=ids, attention_mask=mask, visual=visual, return_nll=True)
                (nll * scale).backward()
            loss_sum += float(nll.detach())
        return loss_sum

    def _save(self, stage, step, optimizer, scheduler, curve, completed) -> None:
        if self.dist.is_main:
            save_state(
                TrainState(
                    stage=stage,
                    global_step=step,
                    modules=self.model.module_state_dict(),
                    optimizer=optimizer.state_dict(),
                    scheduler=scheduler.state_dict(),
                    rng=torch.get_rng_state(),
                    curve=curve,
                    completed_stages=completed,
                    captions_per_s=self.captions_per_s,
                ),
                self.state_dir,
            )
        self.dist.barrier()
