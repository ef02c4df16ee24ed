"""Quality gates of the ``mini`` backbones: are they good enough for I-Tuning to caption Shapes?

The vision gate is a one-word-swap test, because a global "pick the right caption among N" score
hid that a prototype encoder could not tell shapes apart (colour alone solved most of its
batches): for each held-out image the model must score its true description above the same
description with one colour / shape / size / position word swapped (false for that image).
Chance is 0.5; ties count half, so a constant scorer gets exactly 0.5.

The token probe asks what I-Tuning needs: do the *patch tokens* (not only the pooled embedding)
carry the attributes? A linear classifier reads the shape, colour, grid column and grid row of each
object from the token of the patch under the object's centre. Column and row matter because
captions name objects in reading order: a module can follow that order only if it can tell where
each object is.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from ituning.data.shapes_captions import Phrase, caption_words, describe
from ituning.data.shapes_render import render
from ituning.data.shapes_scene import Scene, WorldConfig, item_rng, sample_scene
from ituning.data.shapes_swaps import swap
from ituning.data.shapes_vocab import CENTRE_CELL_WORDS, COLUMNS, ROWS, WORD_CLASSES

#: Minimum accuracies; attributes without an entry are reported but not gated. Shape is gated
#: high: at a token probe of 0.937 (an encoder that passed a 0.9 gate) I-Tuning misnamed a lone
#: object's shape in 11-25 % of images, which no caption rule can repair.
VISION_TARGETS: dict[str, float] = {
    "colour": 0.90,
    "shape": 0.97,
    "heldout": 0.80,
    "token_probe_shape": 0.97,
    "token_probe_colour": 0.90,
    "token_probe_column": 0.90,
    "token_probe_row": 0.90,
}


def discrimination(
    true_scores: Sequence[float] | torch.Tensor, swapped_scores: Sequence[float] | torch.Tensor
) -> float:
    """Fraction of pairs whose true text outscores its swapped twin (ties count one half)."""
    t = torch.as_tensor(true_scores, dtype=torch.float64)
    s = torch.as_tensor(swapped_scores, dtype=torch.float64)
    if t.shape != s.shape or t.numel() == 0:
        raise ValueError("need two equally long, non-empty score lists")
    return float(((t > s).double() + 0.5 * (t == s).double()).mean())


@dataclass(frozen=True)
class GatePair:
    image: int  # index into the gate scenes
    kind: str  # colour | shape | size | position | heldout_to_other | other_to_heldout
    true: str
    swapped: str


def _position_phrase(scene: Scene, rng: np.random.Generator) -> Phrase:
    if len(scene.objects) > 1:
        return describe(scene, rng, "relation")
    for _ in range(30):  # an object phrase that states a position
        p = describe(scene, rng, "object")
        if any(tag and tag[0] in ("h", "v") for _, tag in p.tokens):
            return p
    return p


def gate_scenes(seed: int, world: WorldConfig, n_images: int) -> tuple[list[Scene], list[GatePair]]:
    """Held-out scenes (streams the encoder never trains on) and their true/swapped phrase pairs.

    The first ``n_images`` scenes may contain anything; the next ``n_images`` each contain the
    out-of-domain shape. ``heldout`` = the mean of two directions: the out-of-domain shape's word
    swapped for another shape, and another shape's word swapped for the out-of-domain one.
    """
    scenes: list[Scene] = []
    pairs: list[GatePair] = []
    others = [s for s in world.shapes if s != world.ood_shape]
    for i in range(n_images):
        rng = item_rng(seed, "gate", i)
        scene = sample_scene(rng, world, "any")
        scenes.append(scene)
        listing = describe(scene, rng, "list", world.mention_order)
        for kind in ("colour", "shape", "size"):
            s = swap(listing, scene, kind, rng, world)  # type: ignore[arg-type]
            if s is not None:
                pairs.append(GatePair(i, kind, listing.text, s.text))
        pos = _position_phrase(scene, rng)
        s = swap(pos, scene, "position", rng, world)
        if s is not None:
            pairs.append(GatePair(i, "position", pos.text, s.text))
        if all(o.shape != world.ood_shape for o in scene.objects):
            s = swap(listing, scene, "shape", rng, world, target_shape=world.ood_shape)
            if s is not None:
                pairs.append(GatePair(i, "other_to_heldout", listing.text, s.text))
    for i in range(n_images):
        rng = item_rng(seed, "gate-ood", i)
        scene = sample_scene(rng, world, "ood")
        scenes.append(scene)
        listing = describe(scene, rng, "list", world.mention_order)
        s = swap(
            listing, scene, "shape", rng, world, shape_pool=others, source_shape=world.ood_shape
        )
        if s is not None:
            pairs.append(GatePair(n_images + i, "heldout_to_other", listing.text, s.text))
    return scenes, pairs


def vision_gates(
    score: Callable[[list[int], list[str]], torch.Tensor],
    pairs: Sequence[GatePair],
) -> dict[str, float]:
    """Discrimination per kind; ``score(image_indices, texts)`` returns one similarity per pair."""
    idx = [p.image for p in pairs]
    t = score(idx, [p.true for p in pairs])
    s = score(idx, [p.swapped for p in pairs])
    out: dict[str, float] = {}
    for kind in sorted({p.kind for p in pairs}):
        sel = torch.tensor([p.kind == kind for p in pairs])
        out[kind] = round(discrimination(t[sel], s[sel]), 4)
    if "heldout_to_other" in out and "other_to_heldout" in out:
        out["heldout"] = round((out["heldout_to_other"] + out["other_to_heldout"]) / 2, 4)
    return out


def clip_scorer(model, images: torch.Tensor, encode_text: Callable[[list[str]], torch.Tensor]):
    """A ``score`` for :func:`vision_gates`: cosine similarity of CLIP image and text embeddings."""
    with torch.no_grad():
        fi = F.normalize(model.encode_image(images), dim=-1)

    def score(image_idx: list[int], texts: list[str]) -> torch.Tensor:
        out = []
        with torch.no_grad():
            for k in range(0, len(texts), 512):
                ft = F.normalize(model.encode_text(encode_text(texts[k : k + 512])), dim=-1)
                out.append((ft * fi[image_idx[k : k + 512]]).sum(-1))
        return torch.cat(out)

    return score


def patch_tokens(visual, pixels: torch.Tensor) -> torch.Tensor:
    """The ViT's patch tokens after ``ln_post`` (CLS dropped): what I-Tuning attends to."""
    captured: list[torch.Tensor] = []
    handle = visual.ln_post.register_forward_hook(lambda _m, _i, out: captured.append(out))
    try:
        with torch.no_grad():
            visual(pixels)
    finally:
        handle.remove()
    return captured[-1][:, 1:]


def token_probe(
    tokens: torch.Tensor,
    scenes: Sequence[Scene],
    patch_size: int,
    world: WorldConfig,
    seed: int = 0,
) -> dict[str, float]:
    """Held-out accuracy of linear shape / colour / column / row classifiers on the centre-patch
    token of each object (first half of the scenes trains, second half tests)."""
    grid = world.image_size // patch_size
    feats, shapes, colours, columns, rows, first_half = [], [], [], [], [], []
    for i, scene in enumerate(scenes):
        for o in scene.objects:
            r = min(grid - 1, int(o.y // patch_size))
            c = min(grid - 1, int(o.x // patch_size))
            feats.append(tokens[i, r * grid + c])
            shapes.append(world.shapes.index(o.shape))
            colours.append(world.colours.index(o.colour))
            columns.append(o.col)
            rows.append(o.row)
            first_half.append(i < len(scenes) // 2)
    x = torch.stack(feats).float()
    train = torch.tensor(first_half)
    return {
        f"token_probe_{name}": linear_probe(x, torch.tensor(labels), n_cls, train, seed)
        for name, labels, n_cls in (
            ("shape", shapes, len(world.shapes)),
            ("colour", colours, len(world.colours)),
            ("column", columns, 3),
            ("row", rows, 3),
        )
    }


#: Captions naming three colours below which the named-colour probe is not computed.
MIN_PROBE_CAPTIONS = 20


def linear_probe(
    x: torch.Tensor, y: torch.Tensor, n_classes: int, train: torch.Tensor, seed: int = 0
) -> float:
    """Held-out accuracy of a linear classifier (L2-regularised, LBFGS) fitted on ``x[train]``:
    what a linear map, such as a module's projection, can read from these features."""
    x = (x - x[train].mean(0)) / (x[train].std(0) + 1e-6)
    g = torch.Generator().manual_seed(seed)
    lin = torch.nn.Linear(x.shape[1], n_classes)
    with torch.no_grad():
        lin.weight.normal_(0, 0.01, generator=g)
        lin.bias.zero_()
    opt = torch.optim.LBFGS(lin.parameters(), lr=0.5, max_iter=100, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = F.cross_entropy(lin(x[train]), y[train]) + 1e-3 * lin.weight.pow(2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    with torch.no_grad():
        return round(float((lin(x[~train]).argmax(-1) == y[~train]).double().mean()), 4)


@torch.no_grad()
def named_colour_probe(
    model, tokenize, captions: Sequence[str], world: WorldConfig
) -> float | None:
    """What the frozen LM's state keeps of what a caption has already named.

    At the position where a caption is about to name its third object's colour, a linear
    classifier reads the first and the second colour the caption named from the LM's hidden state
    (each layer; the best layer counts; mean of the two; first half of the captions trains).
    I-Tuning's module queries the image with a linear map of this state, so an object already
    named can be left out only as far as the state still says which it was: mini LMs that kept
    them at 0.28-0.34 (chance 1/6) let their I-Tuning models name the same object again and again.
    ``tokenize(text)`` returns the LM's input ids, beginning-of-text included. ``None`` when fewer
    than :data:`MIN_PROBE_CAPTIONS` captions name three colours (e.g. the quick test backbones).
    """
    prefixes: list[list[int]] = []
    labels: list[tuple[int, int]] = []
    for text in captions:
        words = caption_words(text)
        named = [
            (i, WORD_CLASSES[w][1])
            for i, w in enumerate(words)
            if WORD_CLASSES.get(w, ("", ""))[0] == "colour"
        ]
        if len(named) >= 3:
            prefixes.append(tokenize(" ".join(words[: named[2][0]])))
            labels.append((world.colours.index(named[0][1]), world.colours.index(named[1][1])))
    if len(labels) < MIN_PROBE_CAPTIONS:
        return None
    x = _last_states(model, prefixes)  # (captions, layers, d)
    y = torch.tensor(labels)
    train = torch.arange(len(y)) < len(y) // 2
    n = len(world.colours)
    return round(
        max(
            (linear_probe(x[:, k], y[:, 0], n, train) + linear_probe(x[:, k], y[:, 1], n, train))
            / 2
            for k in range(x.shape[1])
        ),
        4,
    )


#: Cell words of a position phrase -> (axis, index): rows top/middle/bottom, columns left/centre/right
#: ("middle"/"centre" alone name the centre cell).
_CELL_WORDS = {
    word: (axis, names.index(word))
    for axis, names in enumerate((ROWS, COLUMNS))
    for word in names
    if word not in CENTRE_CELL_WORDS
}
#: Words that may stand between a position phrase and its object's colour ("... left corner a big").
_BETWEEN = ("a", "an", "corner")


def _named_cells(words: Sequence[str]) -> list[tuple[int, int, int]]:
    """``(index of the colour word, row, column)`` of each object after the first whose phrase a
    position phrase opens ("..., in the bottom left a red heart"); an axis the phrase leaves out is
    the middle one ("on the left": middle row; "at the top": centre column)."""
    out: list[tuple[int, int, int]] = []
    cell: list[int] | None = None
    seen_shape = False
    for i, w in enumerate(words):
        attribute = WORD_CLASSES.get(w, ("", ""))[0]
        if w in _CELL_WORDS or w in CENTRE_CELL_WORDS:
            cell = cell or [1, 1]
            if w in _CELL_WORDS:
                axis, index = _CELL_WORDS[w]
                cell[axis] = index
        elif attribute == "colour" and cell is not None and seen_shape:
            out.append((i, cell[0], cell[1]))
            cell = None
        elif w not in _BETWEEN and attribute != "size":
            cell = None
        seen_shape = seen_shape or attribute == "shape"
    return out


@torch.no_grad()
def named_cell_probe(model, tokenize, captions: Sequence[str]) -> dict[str, float] | None:
    """Whether the frozen LM's state says which grid cell a caption has just named.

    Where a caption is about to name the colour of its second or later object ("..., in the bottom
    left a"), linear classifiers read that object's row and column from the LM's hidden state
    (each layer; the best layer counts per axis; first half of the phrases trains). I-Tuning's
    module finds the object to describe with a linear map of this state; mini-large's modules
    found an object sharing its column with another only a third of the time, and its LM kept the
    row there at 0.89 at best. ``tokenize`` as for :func:`named_colour_probe`; ``None`` with fewer
    than :data:`MIN_PROBE_CAPTIONS` such phrases.
    """
    prefixes: list[list[int]] = []
    labels: list[tuple[int, int]] = []
    for text in captions:
        words = caption_words(text)
        for i, row, column in _named_cells(words):
            prefixes.append(tokenize(" ".join(words[:i])))
            labels.append((row, column))
    if len(labels) < MIN_PROBE_CAPTIONS:
        return None
    x = _last_states(model, prefixes)
    y = torch.tensor(labels)
    train = torch.arange(len(y)) < len(y) // 2
    return {
        axis: round(max(linear_probe(x[:, k], y[:, a], 3, train) for k in range(x.shape[1])), 4)
        for a, axis in enumerate(("row", "column"))
    }


#: Minimum row accuracy of :func:`named_cell_probe` for every LM of a set. Pre-trained one caption
#: per row, mini-base kept the row at 0.60 (1,000 held-out captions) and mini-large's I-Tuning named
#: the middle of three objects sharing a column 0.27 of the time (4 epochs); pre-trained packed,
#: 0.82 / 0.76 / 0.76 for base / medium / large and 0.52. The column is kept above 0.88 either way.
NAMED_ROW_TARGET = 0.70


def named_row_pass(probes: Mapping[str, Mapping[str, float] | None]) -> dict[str, bool]:
    """LM name -> whether its state keeps the row just named (:data:`NAMED_ROW_TARGET`); an LM
    whose probe had too few captions (``None``, e.g. the quick test set) is not gated."""
    return {name: p["row"] >= NAMED_ROW_TARGET for name, p in probes.items() if p is not None}


def named_row_gates(probes: Mapping[str, Mapping[str, float] | None]) -> dict:
    """A set's manifest entries for the cell probe: each LM's probe, the row target and whether
    each LM meets it (:func:`named_row_pass`)."""
    return {
        "lm_named_cell_probe": dict(probes),
        "lm_named_row_target": NAMED_ROW_TARGET,
        "lm_named_row_pass": named_row_pass(probes),
    }


def cell_probe_lines(gates: Mapping) -> list[str]:
    """A set's manifest ``gates`` -> one report line per LM: the cell probe and its row gate (sets
    built before the gate say "reported")."""
    lines, target = [], gates.get("lm_named_row_target")
    for name, cell in gates.get("lm_named_cell_probe", {}).items():
        if cell is None:
            shown = "n/a (too few captions)"
        else:
            verdict = (
                "reported"
                if target is None
                else f"row >= {target}: {'ok' if cell['row'] >= target else 'FAIL'}"
            )
            shown = f"row {cell['row']:.3f}, column {cell['column']:.3f} (chance 1/3; {verdict})"
        lines.append(f"  {name:12s} cell just named, in its state: {shown}")
    return lines


def _last_states(model, prefixes: Sequence[Sequence[int]]) -> torch.Tensor:
    """``(prefixes, layers, d)``: every layer's hidden state at each prefix's last token."""
    states = []
    for k in range(0, len(prefixes), 256):  # right-padded: the states before the padding hold
        batch = prefixes[k : k + 256]
        lengths = torch.tensor([len(ids) for ids in batch])
        ids = torch.zeros(len(batch), int(lengths.max()), dtype=torch.long)
        for i, row in enumerate(batch):
            ids[i, : len(row)] = torch.tensor(row)
        mask = (torch.arange(ids.shape[1]) < lengths[:, None]).long()
        hidden = model(input_ids=ids, attention_mask=mask, output_hidden_states=True).hidden_states
        last = torch.arange(len(batch)), lengths - 1
        states.append(torch.stack([h[last] for h in hidden], dim=1))
    return torch.cat(states).float()


def render_scenes(scenes: Sequence[Scene], world: WorldConfig) -> list:
    return [render(s, world) for s in scenes]
