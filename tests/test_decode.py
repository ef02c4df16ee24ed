"""Caption decoding (``ituning.decode``) and the evaluation of a finished run (``ituning.evaluate``).

Decoding runs on the tiny Shapes LM with random, non-zero modules, so captions depend on the image.
Evaluation is checked on ``tiny_finished_run`` (one complete tiny run with every evaluation option).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import nn

from ituning.backbones import load_lm
from ituning.config import ITuningConfig
from ituning.data.karpathy import read_karpathy
from ituning.data.nocaps import read_nocaps
from ituning.data.records import CaptionDataset, CaptionRecord, natural_id
from ituning.decode import DecodeSettings, caption_dataset, generate_captions
from ituning.evaluate import EvalOutput, grounding
from ituning.inject import ITuningModel
from ituning.module import ITuningModule
from ituning.text import CaptionCodec
from ituning.train import RESULT_FILE, finished_result

VIS = 32  # the tiny vision encoder's width (conftest)


@pytest.fixture(scope="module", autouse=True)
def _threads(one_thread):
    yield


@pytest.fixture(scope="module")
def captioner(tiny_shapes_lm_dir):
    lm, tokenizer = load_lm(str(tiny_shapes_lm_dir))
    torch.manual_seed(3)
    model = ITuningModel(lm, VIS, ITuningConfig(attn_scaling="none"))
    for module in model.itune.values():
        nn.init.normal_(module.o_up.weight, std=1.0)
        nn.init.normal_(module.o_up.bias, std=0.5)
    return model.eval(), CaptionCodec(tokenizer)


def _visual(n: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, 16, VIS, generator=torch.Generator().manual_seed(seed)) * 3


@pytest.mark.parametrize("beam", [1, 5])
def test_captions_of_a_batch_equal_captions_one_image_at_a_time(captioner, beam):
    model, codec = captioner
    visual = _visual(4)
    settings = DecodeSettings(beam=beam, max_new_tokens=8)
    batch = generate_captions(model, codec, visual, settings)
    alone = [generate_captions(model, codec, visual[i : i + 1], settings)[0] for i in range(4)]
    assert batch == alone
    assert len(set(batch)) > 1  # the image matters
    assert all(c.strip() for c in batch)


def test_greedy_decoding_is_the_argmax_at_every_step(captioner):
    model, codec = captioner
    visual, steps = _visual(3, seed=1), 8
    got = generate_captions(model, codec, visual, DecodeSettings(beam=1, max_new_tokens=steps))
    expected = []
    with torch.no_grad():
        for i in range(3):  # the reference: no cache, one image, the whole prefix every step
            ids = codec.prompt(1)
            for _ in range(steps):
                logits = model(input_ids=ids, visual=visual[i : i + 1]).logits[:, -1]
                ids = torch.cat([ids, logits.argmax(-1, keepdim=True)], dim=1)
                if ids[0, -1] == codec.eos_id:
                    break
            expected.extend(codec.decode(ids))
    assert got == expected


def test_beam_search_differs_from_greedy_and_honours_length_penalty(captioner):
    model, codec = captioner
    visual = _visual(8, seed=2)
    greedy = generate_captions(model, codec, visual, DecodeSettings(beam=1, max_new_tokens=10))
    beam = generate_captions(model, codec, visual, DecodeSettings(beam=4, max_new_tokens=10))
    assert beam != greedy

    def mean_words(length_penalty: float) -> float:
        settings = DecodeSettings(beam=4, max_new_tokens=10, length_penalty=length_penalty)
        caps = generate_captions(model, codec, visual, settings)
        return sum(len(c.split()) for c in caps) / len(caps)

    assert mean_words(3.0) > mean_words(-3.0)  # scores are log-probabilities / length**penalty


@pytest.mark.parametrize("max_new_tokens", [1, 3])
def test_max_new_tokens_bounds_the_caption(captioner, max_new_tokens):
    model, codec = captioner
    settings = DecodeSettings(beam=3, max_new_tokens=max_new_tokens)
    captions = generate_captions(model, codec, _visual(6), settings)
    lengths = [len(codec.tokenizer(c, add_special_tokens=False)["input_ids"]) for c in captions]
    assert max(lengths) <= max_new_tokens
    assert max(lengths) == max_new_tokens  # a random model seldom stops this early


def test_visual_keys_and_values_are_computed_once_per_image(captioner, monkeypatch):
    model, codec = captioner
    calls: list[tuple[str, int]] = []
    for key, module in model.itune.items():
        original = module.visual_kv

        def counted(visual, _key=key, _original=original):
            calls.append((_key, visual.shape[0]))
            return _original(visual)

        monkeypatch.setattr(module, "visual_kv", counted)
    generate_captions(model, codec, _visual(4), DecodeSettings(beam=5, max_new_tokens=8))
    # one call per module for the 4 images; no call per step, none per beam
    assert sorted(calls) == [(key, 4) for key in sorted(model.itune)]
    assert all(isinstance(m, ITuningModule) for m in model.itune.values())


def test_caption_dataset_batches_do_not_change_captions(captioner):
    model, codec = captioner
    visual = _visual(5, seed=4)
    ids = [f"img{i}" for i in range(5)]
    lookup = {image_id: visual[i] for i, image_id in enumerate(ids)}

    def source(batch):
        return torch.stack([lookup[i] for i in batch]).half()  # as the fp16 cache stores them

    small = caption_dataset(
        model, codec, ids, source, DecodeSettings(beam=2, batch_images=2), progress=False
    )
    whole = caption_dataset(
        model, codec, ids, source, DecodeSettings(beam=2, batch_images=5), progress=False
    )
    assert small == whole and list(small) == ids


def test_grounding_without_object_annotations_is_reported_unavailable():
    records = (CaptionRecord("x:1", "1.png", "test", ("a red square",)),)
    out = EvalOutput()
    grounding("test", CaptionDataset("x", Path("."), records), {"x:1": "a red square"}, {}, out)
    assert "records carry no 'objects'" in out.unavailable["grounding/test"]
    assert out.metrics == {}


# -- the evaluation of a finished run ---------------------------------------------------------


@pytest.fixture(scope="module")
def finished(tiny_finished_run):
    return tiny_finished_run, finished_result(tiny_finished_run)


@pytest.mark.slow
def test_a_finished_run_reports_the_papers_metrics(finished):
    _, result = finished
    for metric in ("bleu4", "meteor", "rouge_l", "cider"):
        assert 0 <= result.metrics[f"test/{metric}"] <= 100
    for domain in ("in-domain", "near-domain", "out-of-domain", "overall"):
        assert result.metrics[f"nocaps/{domain}/cider"] >= 0
    assert "spice" not in {k.rsplit("/", 1)[-1] for k in result.metrics}
    assert "corenlp" in result.unavailable["spice"].lower()
    assert result.metrics["train/final_loss"] > 0
    assert result.metrics["trainable_params"] > 0


@pytest.mark.slow
def test_controls_and_grounding_are_reported_when_requested(finished):
    _, result = finished
    assert result.metrics["control/test/blank_cider"] >= 0
    if result.metrics["control/test/blank_cider"] > 0:
        assert result.metrics["control/test/image_ratio"] == pytest.approx(
            result.metrics["test/cider"] / result.metrics["control/test/blank_cider"]
        )
    for attribute in ("shape", "colour"):
        assert result.metrics[f"grounding/test/{attribute}_mentions"] >= 0
    m = result.metrics
    per_count = [m.get(f"objects/test/n{n}/images", 0) for n in (1, 2, 3)]
    assert sum(per_count) == m["objects/test/images"] > 0
    assert 0 <= m["objects/test/recall"] <= 1
    assert not any(k.startswith(("grounding/nocaps", "control/nocaps")) for k in result.metrics)


@pytest.mark.slow
def test_predictions_are_coco_results_files_of_every_evaluated_image(finished):
    run, result = finished
    cfg = json.loads((run / "config.json").read_text())
    data = cfg["data"]
    expected = {
        "test": read_karpathy(Path(data["captions"]), Path(data["image_root"])).split("test"),
        "nocaps": read_nocaps(Path(data["nocaps"]), Path(data["image_root"])),
    }
    for name, dataset in expected.items():
        path = result.artifacts[f"predictions/{name}"]
        assert path == run / f"predictions_{name}.json"
        rows = json.loads(path.read_text())
        assert all(set(row) == {"image_id", "caption"} for row in rows)
        assert all(isinstance(row["caption"], str) for row in rows)
        ids = [str(row["image_id"]) for row in rows]
        assert sorted(ids) == sorted(natural_id(r.image_id) for r in dataset)
    stored = json.loads((run / RESULT_FILE).read_text())
    assert stored["artifacts"]["checkpoint"] == str(run / "checkpoint")
    assert (run / "checkpoint" / "modules.safetensors").is_file()
