"""Caption <-> token ids, the same way for every LM family.

A caption is fed as ``<bos> caption <eos>``: the LM's begin-of-text token is the prompt (the paper
names none), and the end-of-text token teaches the model where to stop. GPT-2 has no pad token, so
padding reuses ``eos`` and is masked out of attention and loss.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from transformers import PreTrainedTokenizerBase

from ituning.errors import ConfigError


@dataclass(frozen=True)
class CaptionCodec:
    tokenizer: PreTrainedTokenizerBase
    max_tokens: int = 32

    @property
    def bos_id(self) -> int:
        tok = self.tokenizer
        ident = tok.bos_token_id if tok.bos_token_id is not None else tok.eos_token_id
        if ident is None:
            raise ConfigError("the LM tokenizer has neither a bos nor an eos token; set one")
        return ident

    @property
    def eos_id(self) -> int:
        ident = self.tokenizer.eos_token_id
        if ident is None:
            raise ConfigError("the LM tokenizer has no eos token; captions could never end")
        return ident

    @property
    def pad_id(self) -> int:
        pad = self.tokenizer.pad_token_id
        return pad if pad is not None else self.eos_id

    def encode(self, captions: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Right-padded ``(input_ids, attention_mask)``; each row ``bos caption eos``, truncated."""
        body = self.tokenizer(
            [c.strip() for c in captions], add_special_tokens=False, return_attention_mask=False
        )["input_ids"]
        rows = [[self.bos_id, *ids[: self.max_tokens - 2], self.eos_id] for ids in body]
        width = max(len(r) for r in rows)
        ids = torch.full((len(rows), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, row in enumerate(rows):
            ids[i, : len(row)] = torch.tensor(row)
            mask[i, : len(row)] = 1
        return ids, mask

    def prompt(self, rows: int) -> torch.Tensor:
        """The generation prompt: one ``bos`` per row."""
        return torch.full((rows, 1), self.bos_id, dtype=torch.long)

    def decode(self, sequences: torch.Tensor) -> list[str]:
        """Generated ids (prompt included) -> text, cut at the first ``eos``."""
        out = []
        for row in sequences.tolist():
            body = row[1:]
            if self.eos_id in body:
                body = body[: body.index(self.eos_id)]
            out.append(" ".join(self.tokenizer.decode(body, skip_special_tokens=True).split()))
        return out
