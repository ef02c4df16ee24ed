"""The deliberately naive I-Tuning baseline that ``bench.perf`` measures the library against.

A straightforward implementation of eqs. (2)-(3) recomputes every module's visual keys/values from
the image tokens *expanded to every text row* (``repeat_interleave`` to ``B_img * k`` rows: k
captions per image in training, k beams per image in beam search) at *every* LM call, i.e. at every
decoding step. The library computes them once per image per context instead
(:meth:`ituning.inject.ITuningModel.visual_context`) and lets the rows of an image share them.

Same parameters, same hooks, same ``generate``: only where K/V come from differs, so the two give
the same captions and the same loss, and any timing difference is the K/V work alone.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from torch import Tensor

from ituning.inject import ITuningModel


class NaiveKVITuningModel(ITuningModel):
    """:class:`ITuningModel` whose modules recompute per-row K/V on every LM call."""

    _visual: Tensor | None = None

    @contextmanager
    def visual_context(self, visual: Tensor) -> Iterator[None]:
        """Only remember the image tokens; K/V are computed inside each hook call."""
        if visual.dim() != 3 or visual.shape[-1] != self.vision_width:
            raise ValueError(
                f"visual must be (B_img, N, {self.vision_width}), got {tuple(visual.shape)}"
            )
        device = next(iter(self.itune.values())).o_up.weight.device
        previous = self._visual
        self._visual = visual.to(device)
        try:
            yield
        finally:
            self._visual = previous

    def _ffn_hook(self, key: str, _ffn, args: tuple, kwargs: dict, output):
        if self._visual is None:
            raise RuntimeError("NaiveKVITuningModel ran outside visual_context")
        x = args[0] if args else next(iter(kwargs.values()))
        module = self.itune[key]
        rows_per_image = x.shape[0] // self._visual.shape[0]
        per_row = self._visual.repeat_interleave(rows_per_image, dim=0)
        kv = module.visual_kv(per_row)  # (B_rows, N, r), recomputed at every call
        if isinstance(output, tuple):
            return (output[0] + module(x, kv).to(output[0].dtype), *output[1:])
        return output + module(x, kv).to(output.dtype)
