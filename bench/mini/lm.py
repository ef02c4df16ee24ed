"""The ``mini`` profile's language models: a word-level tokenizer and small GPT-2s pre-trained on
the Shapes text-only corpus.

The architecture is ``transformers.GPT2LMHeadModel`` (as the paper's GPT-2) so that the injection
code path is the same for ``mini`` and ``paper``. The tokenizer is word-level and lowercases: the
Shapes language has ~100 words, and a BPE would only lengthen captions. Like GPT-2,
``<|endoftext|>`` is both bos and eos and nothing is added automatically; unlike GPT-2 there is a
real pad token.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    model_serializer,
)
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
from tqdm import tqdm
from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedModel, PreTrainedTokenizerFast
from transformers.utils import logging as hf_logging

from bench.mini.gates import named_cell_probe, named_colour_probe
from ituning.data.shapes import lm_sentences, make_item
from ituning.data.shapes_flickr import flickr_item
from ituning.data.shapes_scene import WorldConfig
from ituning.data.shapes_vocab import PUNCTUATION, all_words

EOS = "<|endoftext|>"
PAD = "<pad>"
UNK = "<unk>"


class LMSpec(BaseModel):
    """One LM size. GPT-2 grows depth and width together (12x768, 24x1024, 36x1280)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    n_layer: int = Field(ge=1)
    n_embd: int = Field(ge=8)
    n_head: int = Field(ge=1)

    def new_model(self, train: LMTrainConfig) -> PreTrainedModel:
        """A freshly initialised GPT-2 of this size. Other families subclass the spec and override
        this (a method, not a field: the dump, and so the backbone folder's hash, stay as they
        were)."""
        return GPT2LMHeadModel(lm_config(self, train))


class LMTrainConfig(BaseModel):
    """Pre-training budget, equal for every size (the gate compares sizes at equal steps)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    steps: int = Field(300, ge=1)
    batch_size: int = Field(48, ge=1)
    lr: float = Field(2e-3, gt=0)
    warmup_steps: int = Field(40, ge=0)
    weight_decay: float = Field(0.01, ge=0)
    n_positions: int = Field(48, ge=16)
    eval_captions: int = Field(1000, ge=1)
    #: Train on the corpus joined into full ``n_positions``-token blocks (``<|endoftext|>`` between
    #: sentences, a sentence at any offset), as GPT-style LMs are pre-trained, instead of one
    #: caption per row from position 0. Trained padded, the LM's state at a caption's next object
    #: hardly says which row the caption has just named (``gates.named_cell_probe``, row, as the
    #: build records it: mini-base 0.60 padded, 0.82 packed at the same steps, 0.675 padded at 4x
    #: the steps; mini-large 0.73 / 0.76), and that row is what I-Tuning's modules need there to
    #: tell apart two objects sharing a column. Its I-Tuning captions name more of a three-object
    #: scene's objects (mini-large, 4 epochs, 3 seeds: recall 0.81 against 0.75 padded).
    pack: bool = True

    @model_serializer(mode="wrap")
    def _dump(self, handler: SerializerFunctionWrapHandler) -> dict:
        """Leave ``pack`` out of the dump when it is off: the dump names a built set's folder, and
        a padded set (as every set was before packing) keeps the name it was built under."""
        out = handler(self)
        if not self.pack:
            out.pop("pack")
        return out


def vocabulary() -> list[str]:
    """Specials first (``<|endoftext|>`` = 0, ``<pad>`` = 1, ``<unk>`` = 2), then words, then
    punctuation: a fixed function of the Shapes vocabulary, so every backbone shares it."""
    return [EOS, PAD, UNK, *all_words(), *PUNCTUATION]


def build_tokenizer(*, append_eos: bool = False) -> Tokenizer:
    """Word-level, lowercasing, punctuation split off. ``append_eos`` adds ``<|endoftext|>`` after
    every text (what the contrastive text tower pools on); the LM's tokenizer adds nothing."""
    vocab = {w: i for i, w in enumerate(vocabulary())}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token=UNK))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    # Joins words and tidies " ." and " ,"; WordPiece's cleanup leaves " :", so ":" decodes as a
    # continuation of the word before it ("there are two shapes: in the top left ...").
    tok.decoder = decoders.Sequence(
        [decoders.Replace(":", "##:"), decoders.WordPiece(prefix="##", cleanup=True)]
    )
    if append_eos:
        tok.post_processor = processors.TemplateProcessing(
            single=f"$A {EOS}", special_tokens=[(EOS, vocab[EOS])]
        )
    return tok


def hf_tokenizer(*, append_eos: bool = False, max_length: int = 48) -> PreTrainedTokenizerFast:
    return PreTrainedTokenizerFast(
        tokenizer_object=build_tokenizer(append_eos=append_eos),
        bos_token=EOS,
        eos_token=EOS,
        unk_token=UNK,
        pad_token=PAD,
        model_max_length=max_length,
        clean_up_tokenization_spaces=False,
    )


def vocabulary_settings() -> dict[str, int]:
    """The word-level vocabulary as every mini LM's config gives it (either family):
    ``<|endoftext|>`` is bos and eos, ``<pad>`` pads."""
    tok = build_tokenizer()
    eos, pad = tok.token_to_id(EOS), tok.token_to_id(PAD)
    return {
        "vocab_size": tok.get_vocab_size(),
        "bos_token_id": eos,
        "eos_token_id": eos,
        "pad_token_id": pad,
    }


def lm_config(spec: LMSpec, train: LMTrainConfig) -> GPT2Config:
    return GPT2Config(
        **vocabulary_settings(),
        n_positions=train.n_positions,
        n_embd=spec.n_embd,
        n_layer=spec.n_layer,
        n_head=spec.n_head,
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
    )


def encode_batch(
    tok: Tokenizer, texts: Sequence[str], max_len: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """``<|endoftext|> words <|endoftext|>`` padded to the longest: (input_ids, labels)."""
    eos, pad = tok.token_to_id(EOS), tok.token_to_id(PAD)
    seqs = [[eos, *e.ids, eos][:max_len] for e in tok.encode_batch(list(texts))]
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad, dtype=torch.long)
    labels = torch.full((len(seqs), width), -100, dtype=torch.long)
    for i, s in enumerate(seqs):
        ids[i, : len(s)] = torch.tensor(s)
        labels[i, : len(s)] = torch.tensor(s)
    return ids, labels


def packed_blocks(tok: Tokenizer, texts: Sequence[str], block: int) -> torch.Tensor:
    """``(blocks, block)`` token ids: ``<|endoftext|> sentence <|endoftext|> sentence ...`` cut
    into full blocks (a sentence may run across two; the last partial block is dropped)."""
    eos = tok.token_to_id(EOS)
    stream = [t for e in tok.encode_batch(list(texts)) for t in (eos, *e.ids)]
    count = len(stream) // block
    if count == 0:
        raise ValueError(f"{len(stream)} tokens of text do not fill one block of {block}")
    return torch.tensor(stream[: count * block]).view(count, block)


def heldout_captions(seed: int, world: WorldConfig, count: int) -> list[str]:
    """Reference captions of the Shapes *test* split (never in the LM corpus: other streams)."""
    return _first_captions(lambda i: make_item(seed, "test", i, world, "seen").captions, count)


def heldout_flickr_captions(seed: int, world: WorldConfig, count: int) -> list[str]:
    """Reference captions of the Shapes-Flickr *test* split and, past its end, of further items
    of its test stream (never written, never in the LM corpus)."""
    return _first_captions(lambda i: flickr_item(seed, "test", i, world)[1], count)


def _first_captions(captions_of: Callable[[int], Sequence[str]], count: int) -> list[str]:
    """The first ``count`` captions of items 0, 1, 2, ... of one stream."""
    out: list[str] = []
    i = 0
    while len(out) < count:
        out.extend(captions_of(i))
        i += 1
    return out[:count]


@torch.no_grad()
def perplexity(model: PreTrainedModel, tok: Tokenizer, texts: Sequence[str], max_len: int) -> float:
    """exp(mean NLL) over every predicted token, the closing ``<|endoftext|>`` included."""
    model.eval()
    total, count = 0.0, 0
    for k in range(0, len(texts), 256):
        ids, labels = encode_batch(tok, texts[k : k + 256], max_len)
        logits = model(input_ids=ids, attention_mask=(labels != -100).long()).logits
        nll = torch.nn.functional.cross_entropy(
            logits[:, :-1].reshape(-1, logits.shape[-1]), labels[:, 1:].reshape(-1), reduction="sum"
        )
        total += float(nll)
        count += int((labels[:, 1:] != -100).sum())
    return math.exp(total / count)


def _lr(step: int, train: LMTrainConfig) -> float:
    warm = min(1.0, (step + 1) / max(1, train.warmup_steps))
    return train.lr * warm * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * step / train.steps)))


def train_lm(
    spec: LMSpec,
    train: LMTrainConfig,
    world: WorldConfig,
    seed: int,
    corpus: Sequence[str],
    heldout: Sequence[str],
    progress: bool = True,
) -> tuple[PreTrainedModel, dict]:
    """Pre-train one LM (of ``spec``'s family) on ``corpus`` (consumed in order, no repeats if
    long enough)."""
    torch.manual_seed(seed)
    tok = build_tokenizer()
    model = spec.new_model(train)
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.dim() < 2]
    opt = torch.optim.AdamW(
        [
            {"params": decay, "weight_decay": train.weight_decay},
            {"params": no_decay, "weight_decay": 0.0},
        ],
        lr=train.lr,
        betas=(0.9, 0.98),
    )
    blocks = packed_blocks(tok, corpus, train.n_positions) if train.pack else None
    model.train()
    t0 = time.perf_counter()
    bar = tqdm(range(train.steps), desc=f"pre-train {spec.name}", unit="step", disable=not progress)
    loss_val = float("nan")
    for step in bar:
        for g in opt.param_groups:
            g["lr"] = _lr(step, train)
        if blocks is not None:
            ids = labels = blocks[
                (step * train.batch_size + torch.arange(train.batch_size)) % len(blocks)
            ]
        else:
            k = (step * train.batch_size) % len(corpus)
            texts = [corpus[(k + j) % len(corpus)] for j in range(train.batch_size)]
            ids, labels = encode_batch(tok, texts, train.n_positions)
        logits = model(input_ids=ids, attention_mask=(labels != -100).long()).logits
        loss = torch.nn.functional.cross_entropy(
            logits[:, :-1].reshape(-1, logits.shape[-1]), labels[:, 1:].reshape(-1)
        )
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        loss_val = float(loss.detach())
        if step % 20 == 0:
            bar.set_postfix(loss=f"{loss_val:.3f}")
    seconds = time.perf_counter() - t0
    ppl = perplexity(model, tok, heldout, train.n_positions)
    params = sum(p.numel() for p in model.parameters())
    model.eval()
    eos = tok.token_to_id(EOS)

    def tokenize(text: str) -> list[int]:  # what the probes feed the LM: bos, then the words
        return [eos, *tok.encode(text).ids]

    memory = named_colour_probe(model, tokenize, heldout, world)
    return model, {
        "params": params,
        "final_train_loss": round(loss_val, 4),
        "heldout_perplexity": round(ppl, 4),
        "named_colour_probe": memory,
        "named_cell_probe": named_cell_probe(model, tokenize, heldout),
        "train_seconds": round(seconds, 1),
    }


def corpus_for(seed: int, world: WorldConfig, train: LMTrainConfig) -> list[str]:
    """The first sentences of the Shapes LM corpus (= ``lm_corpus.txt`` written by
    ``ituning.data.shapes`` with the same seed, when it is that long) that pre-training reads once:
    ``steps * batch_size`` of them, or, packed, as many as fill ``steps * batch_size`` blocks."""
    rows = train.steps * train.batch_size
    if not train.pack:
        return list(lm_sentences(seed, world, rows))
    tok, need, corpus = build_tokenizer(), rows * train.n_positions, []
    for text in lm_sentences(seed, world, need):  # every sentence is at least one token
        corpus.append(text)
        need -= 1 + len(tok.encode(text).ids)
        if need <= 0:
            return corpus
    return corpus


def save_lm(model: PreTrainedModel, folder: Path, n_positions: int) -> None:
    """``save_pretrained`` layout: AutoModelForCausalLM / AutoTokenizer load the folder."""
    folder.mkdir(parents=True, exist_ok=True)
    model.generation_config.pad_token_id = model.config.pad_token_id
    model.generation_config.eos_token_id = model.config.eos_token_id
    model.generation_config.bos_token_id = model.config.bos_token_id
    hf_logging.disable_progress_bar()  # a one-shard "Writing model shards" bar per save is noise
    try:
        model.save_pretrained(folder, safe_serialization=True)
    finally:
        hf_logging.enable_progress_bar()
    hf_tokenizer(max_length=n_positions).save_pretrained(folder)


__all__ = [
    "EOS",
    "PAD",
    "LMSpec",
    "LMTrainConfig",
    "build_tokenizer",
    "corpus_for",
    "encode_batch",
    "heldout_captions",
    "heldout_flickr_captions",
    "hf_tokenizer",
    "packed_blocks",
    "perplexity",
    "save_lm",
    "train_lm",
    "vocabulary",
]
