"""The mini profile's pre-trained backbones: gates, determinism, caching, loading (quick sizes)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import open_clip
import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from bench.mini.backbones import (
    MANIFEST,
    MiniBackbonesConfig,
    backbone_dir,
    build_backbones,
    folder_hashes,
    main,
)
from bench.mini.clip import TextEncoder, to_pixels, train_clip
from bench.mini.gates import discrimination, gate_scenes, token_probe, vision_gates
from bench.mini.lm import (
    EOS,
    LMSpec,
    LMTrainConfig,
    build_tokenizer,
    corpus_for,
    packed_blocks,
    train_lm,
)
from ituning.data.shapes import lm_sentences
from ituning.data.shapes_render import render
from ituning.data.shapes_scene import WorldConfig, item_rng, sample_scene

QUICK = MiniBackbonesConfig.quick()
WORLD = WorldConfig()


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    return build_backbones(
        tmp_path_factory.mktemp("mini"), QUICK, seed=0, progress=False, parallel=False
    )


# -- gates ---------------------------------------------------------------------------------------


def test_discrimination_perfect_constant_reversed() -> None:
    assert discrimination([2.0, 1.0, 0.3], [1.0, 0.0, 0.2]) == 1.0
    assert discrimination([0.7] * 5, [0.7] * 5) == 0.5
    assert discrimination([0.0, 0.1], [1.0, 1.0]) == 0.0
    with pytest.raises(ValueError):
        discrimination([], [])


def test_vision_gates_oracle_and_constant_scorers() -> None:
    _, pairs = gate_scenes(0, WORLD, 40)
    kinds = {p.kind for p in pairs}
    assert {"colour", "shape", "size", "position", "heldout_to_other", "other_to_heldout"} <= kinds
    true = {(p.image, p.true) for p in pairs}

    def oracle(idx, texts):
        return torch.tensor([float((i, t) in true) for i, t in zip(idx, texts, strict=True)])

    def constant(idx, texts):
        return torch.zeros(len(texts))

    assert set(vision_gates(oracle, pairs).values()) == {1.0}
    assert set(vision_gates(constant, pairs).values()) == {0.5}


def test_token_probe_reads_planted_attributes_and_not_noise() -> None:
    scenes = [sample_scene(item_rng(0, "gate", i), WORLD, "any") for i in range(120)]
    grid, width = 8, 16
    planted = torch.randn(
        len(scenes), grid * grid, width, generator=torch.Generator().manual_seed(0)
    )
    for i, s in enumerate(scenes):
        for o in s.objects:
            k = int(o.y // 8) * grid + int(o.x // 8)
            planted[i, k, WORLD.shapes.index(o.shape)] += 5.0
            planted[i, k, 8 + WORLD.colours.index(o.colour)] += 5.0
            planted[i, k, 14] += 5.0 * (o.col - 1)
            planted[i, k, 15] += 5.0 * (o.row - 1)
    attributes = ("shape", "colour", "column", "row")
    good = token_probe(planted, scenes, 8, WORLD)
    assert all(good[f"token_probe_{a}"] > 0.95 for a in attributes), good
    noise = token_probe(torch.randn_like(planted), scenes, 8, WORLD)
    assert all(noise[f"token_probe_{a}"] < 0.5 for a in attributes), noise


# -- determinism ---------------------------------------------------------------------------------


def _state_equal(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_lm_pre_training_is_deterministic() -> None:
    spec = LMSpec(name="t", n_layer=1, n_embd=16, n_head=2)
    train = LMTrainConfig(steps=3, batch_size=4, warmup_steps=1, eval_captions=8)
    corpus = corpus_for(0, WORLD, train)
    held = corpus[:8]
    a, info = train_lm(spec, train, WORLD, 0, corpus, held, progress=False)
    b, _ = train_lm(spec, train, WORLD, 0, corpus, held, progress=False)
    c, _ = train_lm(spec, train, WORLD, 1, corpus, held, progress=False)
    assert _state_equal(a, b) and not _state_equal(a, c)
    assert info["heldout_perplexity"] > 1.0


def test_packed_blocks_join_sentences_and_drop_the_unfilled_tail() -> None:
    tok = build_tokenizer()
    eos = tok.token_to_id(EOS)
    red, blue = (tok.encode(t).ids for t in ("a red heart.", "a blue star."))
    blocks = packed_blocks(tok, ["a red heart.", "a blue star."], 4)
    stream = [eos, *red, eos, *blue]  # 10 tokens: two full blocks of 4, two left over
    assert blocks.tolist() == [stream[:4], stream[4:8]]
    with pytest.raises(ValueError, match="do not fill one block of 11"):
        packed_blocks(tok, ["a red heart.", "a blue star."], 11)


def test_a_packed_corpus_fills_the_steps_blocks_with_its_last_sentence() -> None:
    train = LMTrainConfig(steps=3, batch_size=4, warmup_steps=1, n_positions=16, pack=True)
    corpus = corpus_for(0, WORLD, train)
    tok, needed = build_tokenizer(), train.steps * train.batch_size
    assert corpus == list(lm_sentences(0, WORLD, len(corpus)))  # the corpus's first sentences
    assert len(packed_blocks(tok, corpus, 16)) >= needed > len(packed_blocks(tok, corpus[:-1], 16))


def test_packed_pre_training_is_deterministic_and_differs_from_padded() -> None:
    spec = LMSpec(name="t", n_layer=1, n_embd=16, n_head=2)
    packed = LMTrainConfig(steps=3, batch_size=4, warmup_steps=1, eval_captions=8, n_positions=16)
    padded = packed.model_copy(update={"pack": False})
    held = corpus_for(0, WORLD, padded)[:8]
    a, _ = train_lm(spec, packed, WORLD, 0, corpus_for(0, WORLD, packed), held, progress=False)
    b, _ = train_lm(spec, packed, WORLD, 0, corpus_for(0, WORLD, packed), held, progress=False)
    c, _ = train_lm(spec, padded, WORLD, 0, corpus_for(0, WORLD, padded), held, progress=False)
    assert _state_equal(a, b) and not _state_equal(a, c)
    # off, the option stays out of the dump that names a built set's folder; on, it changes it
    assert "pack" not in padded.model_dump() and packed.model_dump()["pack"] is True
    without_packing = QUICK.model_copy(
        update={"lm_train": QUICK.lm_train.model_copy(update={"pack": False})}
    )
    assert QUICK.lm_train.pack and without_packing.digest(0) != QUICK.digest(0)


def test_clip_pre_training_is_deterministic() -> None:
    a, _ = train_clip(QUICK.clip, QUICK.clip_train, WORLD, 0, progress=False)
    b, _ = train_clip(QUICK.clip, QUICK.clip_train, WORLD, 0, progress=False)
    assert _state_equal(a, b)


# -- caching -------------------------------------------------------------------------------------


def test_folder_name_follows_configuration(tmp_path: Path) -> None:
    same = backbone_dir(tmp_path, MiniBackbonesConfig.quick(), 0)
    assert same == backbone_dir(tmp_path, QUICK, 0) and same.name.startswith("quick-")
    changed = [
        backbone_dir(tmp_path, QUICK, 1),
        backbone_dir(tmp_path, QUICK.model_copy(update={"gate_images": 9}), 0),
        backbone_dir(
            tmp_path, QUICK.model_copy(update={"world": WorldConfig(background_noise=0.0)}), 0
        ),
    ]
    assert len({same, *changed}) == 4


def test_second_call_is_cached_and_touches_nothing(built, capsys) -> None:
    assert not built.cached
    before = {p: p.stat().st_mtime_ns for p in built.root.rglob("*")}
    again = build_backbones(built.root.parent, QUICK, seed=0, progress=False, parallel=False)
    assert again.cached and again.root == built.root and again.manifest == built.manifest
    assert main(["--out", str(built.root.parent), "--quick", "--quiet"]) == 0
    assert "cached" in capsys.readouterr().out
    assert {p: p.stat().st_mtime_ns for p in built.root.rglob("*")} == before


def test_the_command_builds_a_padded_set_beside_the_default_one(built, capsys) -> None:
    out = built.root.parent
    assert main(["--out", str(out), "--quick", "--quiet", "--padded", "--lm-steps", "4"]) == 0
    (line,) = [s for s in capsys.readouterr().out.splitlines() if s.startswith("built: ")]
    padded = Path(line.removeprefix("built: "))
    assert padded.parent == out and padded != built.root and built.root.is_dir()
    lm_train = json.loads((padded / MANIFEST).read_text())["config"]["lm_train"]
    assert "pack" not in lm_train and lm_train["steps"] == 4  # off: named as before packing
    assert json.loads((built.root / MANIFEST).read_text())["config"]["lm_train"]["pack"] is True
    assert main(["--out", str(out), "--quick", "--lm-steps", "0"]) != 0
    (error,) = capsys.readouterr().err.strip().splitlines()
    assert "steps" in error and "greater than or equal to 1" in error


def test_manifest_records_files_gates_and_timings(built) -> None:
    m = json.loads((built.root / MANIFEST).read_text())
    assert m["files"] == folder_hashes(built.root)
    assert set(m["lms"]) == {"mini-base", "mini-medium", "mini-large"}
    vision = m["gates"]["vision"]
    for k in ("colour", "shape", "size", "position", "heldout", "token_probe_shape"):
        assert 0.0 <= vision[k] <= 1.0
    assert set(m["gates"]["lm_perplexity"]) == set(m["lms"])
    assert m["timings_seconds"]["total"] > 0


@pytest.mark.slow
def test_interrupted_build_is_rebuilt_identically(built, tmp_path: Path) -> None:
    """A folder without manifest is a half-built one: rebuilt, and the same seed gives the same
    bytes (weights included), whether the vision encoder trains beside the LMs or after them."""
    stale = backbone_dir(tmp_path, QUICK, 0)
    (stale / "mini-base").mkdir(parents=True)
    (stale / "mini-base" / "junk").write_text("half written")
    again = build_backbones(tmp_path, QUICK, seed=0, progress=False, parallel=True)
    assert not again.cached and not (stale / "mini-base" / "junk").exists()
    assert again.manifest["files"] == built.manifest["files"]


# -- loading -------------------------------------------------------------------------------------


def test_lms_load_with_transformers_auto_classes(built) -> None:
    sizes = []
    for name, folder in built.lm_dirs.items():
        lm = AutoModelForCausalLM.from_pretrained(folder)
        tok = AutoTokenizer.from_pretrained(folder)
        assert type(lm).__name__ == "GPT2LMHeadModel"
        assert tok.eos_token == tok.bos_token == "<|endoftext|>" and tok.pad_token == "<pad>"
        assert lm.config.n_embd % 2 == 0, name
        sizes.append((lm.config.n_layer, lm.config.n_embd))
        for text in lm_sentences(0, WORLD, 50):
            ids = tok(text).input_ids
            assert tok.unk_token_id not in ids, text
            assert tok.decode(ids) == text.lower()
    assert sizes == sorted(sizes) and len(set(sizes)) == 3


def test_clip_loads_with_open_clip_local_dir(built) -> None:
    ref = f"local-dir:{built.vision_dir}"
    model, _, preprocess = open_clip.create_model_and_transforms(ref)
    tokenizer = open_clip.get_tokenizer(ref)
    texts = ["A small red circle to the left of a big violet rhombus.", "A star."]
    enc = TextEncoder(QUICK.clip.context_length)
    assert torch.equal(tokenizer(texts), enc(texts))
    img = render(sample_scene(item_rng(0, "gate", 0), WORLD, "any"), WORLD)
    pixels = preprocess(img).unsqueeze(0)
    assert torch.allclose(pixels, to_pixels([img], QUICK.clip), atol=1e-6)
    model.visual.output_tokens = True
    pooled, tokens = model.visual(pixels)
    grid = QUICK.clip.image_size // QUICK.clip.patch_size
    assert tokens.shape == (1, grid * grid, QUICK.clip.vision_width)
    with torch.no_grad():
        assert np.isfinite(model.encode_text(tokenizer(texts)).numpy()).all()


def test_backbones_plug_into_ituning(built) -> None:
    from ituning.backbones import load_lm
    from ituning.config import ITuningConfig
    from ituning.inject import ITuningModel
    from ituning.vision import load_vision

    vision = load_vision(built.vision_dir)
    img = render(sample_scene(item_rng(0, "gate", 1), WORLD, "any"), WORLD)
    visual = vision(vision.preprocess(img).unsqueeze(0))
    assert visual.shape == (1, vision.num_tokens, vision.width)
    lm, tok = load_lm(str(built.lm_dirs["mini-large"]))
    model = ITuningModel(lm, vision.width, ITuningConfig())
    ids = tok(["a red circle."], return_tensors="pt").input_ids
    with torch.no_grad():
        out = model(input_ids=ids, visual=visual)
    assert out.logits.shape == (1, ids.shape[1], len(tok))
    gen = model.generate(visual, max_new_tokens=4, do_sample=False)
    assert gen.shape[0] == 1


def test_trimmed_text_encoding_equals_open_clip() -> None:
    import open_clip as oc

    from bench.mini.clip import encode_text, model_cfg

    torch.manual_seed(0)
    model = oc.CLIP(**model_cfg(QUICK.clip)).eval()
    ids = TextEncoder(QUICK.clip.context_length)(
        ["A small red circle to the left of a big violet rhombus.", "A star."]
    )
    with torch.no_grad():
        assert torch.allclose(encode_text(model, ids), model.encode_text(ids), atol=1e-5)


def test_bad_swap_kind_is_rejected() -> None:
    from bench.mini.clip import ClipTrainConfig

    with pytest.raises(ValueError, match="unknown swap kinds"):
        ClipTrainConfig(hard_negatives=("colr",))


def test_a_world_written_under_other_rules_is_rewritten_in_place(tiny_assets, tmp_path) -> None:
    """A Shapes world left by another version of its rules (e.g. another mention order) would
    otherwise be trained on silently: the profile rewrites it, and leaves a current one alone."""
    import shutil

    from bench.sweep.profiles import get_profile

    runs = tmp_path / "runs"
    runs.mkdir()
    (runs / "backbones").symlink_to(tiny_assets / "backbones", target_is_directory=True)
    shutil.copytree(tiny_assets / "data", runs / "data")
    world = runs / "data" / "shapes-tiny"
    captions = (world / "dataset_shapes.json").read_bytes()
    summary = json.loads((world / "world.json").read_text())
    current = WorldConfig().mention_order
    summary["world"]["mention_order"] = "random" if current == "reading" else "reading"
    (world / "world.json").write_text(json.dumps(summary))
    (world / "dataset_shapes.json").write_text('{"images": []}')
    profile = get_profile("mini", runs_dir=runs, scale="tiny")
    profile.prepare(progress=False)
    assert (world / "dataset_shapes.json").read_bytes() == captions
    assert json.loads((world / "world.json").read_text())["world"] == WorldConfig().model_dump(
        mode="json"
    )
    stamp = (world / "dataset_shapes.json").stat().st_mtime_ns
    profile.prepare(progress=False)
    assert (world / "dataset_shapes.json").stat().st_mtime_ns == stamp


class _ColourMemory(torch.nn.Module):
    """A stand-in LM whose state at every position holds the colours named so far (``keeps``) or
    nothing but noise: what the named-colour probe must tell apart."""

    def __init__(self, vocab: list[str], keeps: bool) -> None:
        super().__init__()
        self.vocab, self.keeps = vocab, keeps
        self.colours = list(WORLD.colours)

    def forward(self, input_ids, attention_mask, output_hidden_states):
        from types import SimpleNamespace

        from ituning.data.shapes_vocab import WORD_CLASSES

        gen = torch.Generator().manual_seed(int(input_ids.sum()))
        state = torch.randn(*input_ids.shape, 2 * len(self.colours), generator=gen)
        for b, row in enumerate(input_ids.tolist()):
            named = []
            for t, token in enumerate(row):
                attribute, cls = WORD_CLASSES.get(self.vocab[token], ("", ""))
                if attribute == "colour":
                    named.append(self.colours.index(cls))
                if self.keeps:
                    for k, c in enumerate(named[:2]):
                        state[b, t, k * len(self.colours) + c] += 4.0
        return SimpleNamespace(hidden_states=(state, state))


def test_named_colour_probe_reads_a_state_that_keeps_colours_and_not_one_that_forgets() -> None:
    from bench.mini.gates import named_colour_probe
    from ituning.data.shapes_vocab import all_words

    vocab = ["<bos>", *all_words()]
    index = {w: i for i, w in enumerate(vocab)}
    captions = [
        "A red heart, a green cross and a blue circle.",
        "A yellow star, a red square and a purple diamond.",
    ]
    rng = np.random.default_rng(0)
    colours, shapes = list(WORLD.colours), list(WORLD.shapes)
    for _ in range(240):
        a, b, c = rng.choice(len(colours), 3, replace=False)
        s = rng.choice(len(shapes), 3)
        captions.append(
            f"A {colours[a]} {shapes[s[0]]}, a {colours[b]} {shapes[s[1]]} and a {colours[c]} "
            f"{shapes[s[2]]}."
        )

    def tokenize(text: str) -> list[int]:
        from ituning.data.shapes_captions import caption_words

        return [0, *(index[w] for w in caption_words(text))]

    kept = named_colour_probe(_ColourMemory(vocab, keeps=True), tokenize, captions, WORLD)
    lost = named_colour_probe(_ColourMemory(vocab, keeps=False), tokenize, captions, WORLD)
    assert kept is not None and kept > 0.95
    assert lost is not None and lost < 0.35  # chance is 1/6
    assert named_colour_probe(_ColourMemory(vocab, True), tokenize, captions[:5], WORLD) is None


class _CellMemory(torch.nn.Module):
    """A stand-in LM whose state holds the row and column words read so far (``keeps``), or
    noise: what the named-cell probe must tell apart."""

    def __init__(self, vocab: list[str], keeps: bool) -> None:
        super().__init__()
        self.vocab, self.keeps = vocab, keeps

    def forward(self, input_ids, attention_mask, output_hidden_states):
        from types import SimpleNamespace

        slots = {"top": 0, "bottom": 1, "left": 2, "right": 3}
        gen = torch.Generator().manual_seed(int(input_ids.sum()))
        noise = torch.randn(*input_ids.shape, 4, generator=gen)
        state = noise.clone()
        for b, row in enumerate(input_ids.tolist()):
            held = torch.zeros(4)
            for t, token in enumerate(row):
                word = self.vocab[token]
                if word in ("in", "on", "at"):  # a position phrase begins: its cell only
                    held = torch.zeros(4)
                if word in slots:
                    held[slots[word]] = 4.0
                if self.keeps:
                    state[b, t] = noise[b, t] + held
        return SimpleNamespace(hidden_states=(state, state))


def test_named_cell_probe_reads_a_state_that_keeps_the_cell_and_not_one_that_forgets() -> None:
    from bench.mini.gates import _named_cells, named_cell_probe
    from ituning.data.shapes_captions import caption_words
    from ituning.data.shapes_vocab import all_words

    words = caption_words(
        "There are three shapes: in the top left a red heart, in the bottom left a big green "
        "cross and on the right a blue circle."
    )
    # the first object is left out (no object named before it); "on the right": middle row
    assert [(words[i], r, c) for i, r, c in _named_cells(words)] == [
        ("green", 2, 0),
        ("blue", 1, 2),
    ]
    assert _named_cells(caption_words("A red heart at the top and a blue circle.")) == []
    vocab = ["<bos>", *all_words()]
    index = {w: i for i, w in enumerate(vocab)}
    rng = np.random.default_rng(0)
    cells = [
        "in the top left",
        "in the bottom left",
        "on the left",
        "at the top",
        "in the top right",
    ]
    captions = []
    for _ in range(200):
        first, second = rng.choice(len(cells), 2, replace=False)
        captions.append(f"{cells[first]} a red heart and {cells[second]} a blue circle.")

    def tokenize(text: str) -> list[int]:
        return [0, *(index[w] for w in caption_words(text))]

    kept = named_cell_probe(_CellMemory(vocab, keeps=True), tokenize, captions)
    lost = named_cell_probe(_CellMemory(vocab, keeps=False), tokenize, captions)
    assert kept is not None and min(kept.values()) > 0.95
    assert lost is not None and max(lost.values()) < 0.6  # chance is at most 1/2 here
    assert named_cell_probe(_CellMemory(vocab, True), tokenize, captions[:5]) is None
    # the gate on it: a state that forgets the row fails the set, a probe without data is skipped
    from bench.mini.gates import NAMED_ROW_TARGET, cell_probe_lines, named_row_pass

    probes = {"keeps": kept, "forgets": lost, "quick": None}
    assert named_row_pass(probes) == {"keeps": True, "forgets": False}
    lines = cell_probe_lines({"lm_named_cell_probe": probes, "lm_named_row_target": 0.7})
    assert [line.split(";")[-1] for line in lines[:2]] == [" row >= 0.7: ok)", " row >= 0.7: FAIL)"]
    assert "too few captions" in lines[2] and NAMED_ROW_TARGET == 0.7
    # a set built before the gate existed is shown as it was: reported, not judged
    assert "reported" in cell_probe_lines({"lm_named_cell_probe": {"a": kept}})[0]
