"""Image-grouped training batches (``ituning.batches``) and the caption codec (``ituning.text``)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ituning.batches import CaptionBatcher
from ituning.data.records import CaptionRecord
from ituning.errors import ConfigError
from ituning.text import CaptionCodec


def _records(n: int, captions: int = 6) -> list[CaptionRecord]:
    """Image ``i``'s captions start with the word ``w{i}``; caption ``j`` has ``j + 1`` more words."""
    return [
        CaptionRecord(
            image_id=f"img{i}",
            file=f"{i}.png",
            split="train",
            captions=tuple(" ".join([f"w{i}"] + [f"w{40 + j}"] * (j + 1)) for j in range(captions)),
        )
        for i in range(n)
    ]


@pytest.fixture
def codec(tiny_tokenizer) -> CaptionCodec:
    return CaptionCodec(tiny_tokenizer, max_tokens=16)


def _batcher(records, codec, **kw) -> CaptionBatcher:
    args = {
        "captions_per_image": 3,
        "images_per_step": 4,
        "micro_batch_images": 2,
        "seed": 0,
        "world_size": 1,
    }
    args.update(kw)
    return CaptionBatcher(records, codec, **args)


def _rows(codec: CaptionCodec, mb) -> list[str]:
    return [codec.decode(row[None])[0] for row in mb.input_ids]


def test_rows_are_grouped_by_image(codec):
    records = _records(10)
    by_id = {r.image_id: r for r in records}
    batcher = _batcher(
        records, codec, captions_per_image=3, images_per_step=5, micro_batch_images=2
    )
    for step in range(batcher.steps_per_epoch):
        for mb in batcher.step_micro_batches(0, step)[0]:
            assert mb.input_ids.shape[0] == 3 * len(mb.image_ids)
            rows = _rows(codec, mb)
            for i, image_id in enumerate(mb.image_ids):
                group = rows[i * 3 : (i + 1) * 3]
                # the k rows of image i are k distinct captions of image i
                assert all(c in by_id[image_id].captions for c in group)
                assert len(set(group)) == 3


def test_every_row_is_bos_caption_eos_then_padding(codec):
    batcher = _batcher(_records(4), codec, images_per_step=4, micro_batch_images=4)
    (mb,) = batcher.step_micro_batches(0, 0)[0]
    for ids, mask in zip(mb.input_ids, mb.attention_mask, strict=True):
        n = int(mask.sum())
        assert mask[:n].all() and not mask[n:].any()  # right padding
        assert ids[0] == codec.bos_id and ids[n - 1] == codec.eos_id
        assert (ids[n:] == codec.pad_id).all()


def test_plan_is_a_pure_function_of_seed_and_epoch(codec):
    records = _records(12)
    a = _batcher(records, codec, images_per_step=4, micro_batch_images=2, seed=7)
    b = _batcher(records, codec, images_per_step=4, micro_batch_images=2, seed=7)
    # b is asked in another order, as a resumed run would ask it
    later = b.step_micro_batches(1, 2)
    first = b.step_micro_batches(0, 0)
    for x, y in [(a.step_micro_batches(1, 2), later), (a.step_micro_batches(0, 0), first)]:
        for mx, my in zip(x[0], y[0], strict=True):
            assert mx.image_ids == my.image_ids
            assert torch.equal(mx.input_ids, my.input_ids)
            assert torch.equal(mx.attention_mask, my.attention_mask)
    assert not np.array_equal(a.epoch_order(0), a.epoch_order(1))
    other_seed = _batcher(records, codec, seed=8)
    assert not np.array_equal(a.epoch_order(0), other_seed.epoch_order(0))


def test_an_epoch_visits_distinct_images_in_whole_steps(codec):
    records = _records(11)
    batcher = _batcher(records, codec, images_per_step=4, micro_batch_images=3)
    assert batcher.steps_per_epoch == 2  # 11 // 4: the three left over wait for a later epoch
    for epoch in range(3):
        seen = [
            image_id
            for step in range(batcher.steps_per_epoch)
            for mb in batcher.step_micro_batches(epoch, step)[0]
            for image_id in mb.image_ids
        ]
        assert len(seen) == len(set(seen)) == 8
    with pytest.raises(IndexError):
        batcher.step_micro_batches(0, 2)


@pytest.mark.parametrize(
    ("n_images", "images_per_step", "micro", "world"),
    [
        (12, 6, 2, 2),  # even split
        (12, 5, 2, 2),  # 5 images over 2 ranks: shares 3 and 2
        (7, 3, 1, 2),  # one image per micro-batch, shares 2 and 1: no empty micro-batch
        (9, 9, 1, 3),
        (10, 7, 1, 3),  # shares 3, 2, 2
        (10, 4, 32, 4),  # one image per rank
        (20, 10, 3, 2),
    ],
)
def test_ranks_get_equal_length_lists_without_empty_micro_batches(
    codec, n_images, images_per_step, micro, world
):
    records = _records(n_images)
    batcher = _batcher(
        records,
        codec,
        images_per_step=images_per_step,
        micro_batch_images=micro,
        world_size=world,
    )
    single = _batcher(records, codec, images_per_step=images_per_step, micro_batch_images=micro)
    for step in range(batcher.steps_per_epoch):
        plan = batcher.step_micro_batches(0, step)
        assert len(plan) == world
        assert len({len(rank) for rank in plan}) == 1
        sizes = [len(mb.image_ids) for rank in plan for mb in rank]
        assert min(sizes) >= 1
        assert max(sizes) <= max(micro, 2)  # 2 only where micro=1 cannot be split evenly
        # the ranks together see exactly the step's images, each once, with the same rows
        rows = {
            image_id: mb.input_ids[i * 3 : (i + 1) * 3, : int(mb.attention_mask.sum(1).max())]
            for rank in plan
            for mb in rank
            for i, image_id in enumerate(mb.image_ids)
        }
        single_ids = [i for mb in single.step_micro_batches(0, step)[0] for i in mb.image_ids]
        assert sorted(rows) == sorted(single_ids)
        assert len(rows) == images_per_step
        # a step's token count does not depend on how it is split over ranks and micro-batches
        assert sum(mb.target_tokens for rank in plan for mb in rank) == sum(
            mb.target_tokens for mb in single.step_micro_batches(0, step)[0]
        )


def test_target_tokens_count_every_word_and_the_eos(codec):
    records = _records(3)
    batcher = _batcher(records, codec, images_per_step=3, micro_batch_images=3)
    (mb,) = batcher.step_micro_batches(0, 0)[0]
    words = sum(len(caption.split()) for caption in _rows(codec, mb))
    assert mb.target_tokens == words + mb.input_ids.shape[0]  # bos is given, never predicted


def test_images_with_fewer_captions_than_k_repeat_theirs_evenly(codec):
    few = CaptionRecord("few", "few.png", "train", ("w1 w2", "w3 w4"))
    one = CaptionRecord("one", "one.png", "train", ("w5",))
    batcher = _batcher([few, one], codec, captions_per_image=5, images_per_step=2)
    (mb,) = batcher.step_micro_batches(0, 0)[0]
    assert mb.input_ids.shape[0] == 10
    rows = _rows(codec, mb)
    groups = {mb.image_ids[0]: rows[:5], mb.image_ids[1]: rows[5:]}
    assert sorted(groups["few"].count(c) for c in few.captions) == [2, 3]
    assert groups["one"] == ["w5"] * 5


def test_more_images_per_step_than_images_means_one_step(codec):
    batcher = _batcher(_records(3), codec, images_per_step=100, micro_batch_images=2)
    assert batcher.images_per_step == 3 and batcher.steps_per_epoch == 1
    assert sum(len(mb.image_ids) for mb in batcher.step_micro_batches(0, 0)[0]) == 3


def test_bad_batch_plans_are_one_line_config_errors(codec):
    with pytest.raises(ConfigError, match="cannot be shared by 4 ranks"):
        _batcher(_records(10), codec, images_per_step=3, world_size=4)
    with pytest.raises(ConfigError, match="cannot be shared by 3 ranks"):
        _batcher(_records(2), codec, images_per_step=8, world_size=3)  # capped to 2 images
    with pytest.raises(ConfigError, match="training split is empty"):
        _batcher([], codec)
    bare = CaptionRecord("bare", "bare.png", "train", ())
    with pytest.raises(ConfigError, match="have no caption"):
        _batcher([*_records(2), bare], codec)
    with pytest.raises(ConfigError, match=">= 1"):
        _batcher(_records(2), codec, micro_batch_images=0)


def test_codec_truncates_long_captions_but_keeps_their_eos(tiny_tokenizer):
    codec = CaptionCodec(tiny_tokenizer, max_tokens=5)
    ids, mask = codec.encode(["w1 w2 w3 w4 w5 w6", "  w7  "])
    assert ids.tolist()[0] == [codec.bos_id, 5, 6, 7, codec.eos_id]  # w1 is id 5
    assert ids.tolist()[1][:3] == [codec.bos_id, 11, codec.eos_id]
    assert mask.tolist() == [[1] * 5, [1, 1, 1, 0, 0]]


def test_codec_decode_cuts_at_the_first_eos(tiny_tokenizer):
    codec = CaptionCodec(tiny_tokenizer)
    bos, eos = codec.bos_id, codec.eos_id
    seqs = torch.tensor([[bos, 5, 6, eos, 7, 8], [bos, 9, 10, 11, 12, 13], [bos, eos, 5, 5, 5, 5]])
    assert codec.decode(seqs) == ["w1 w2", "w5 w6 w7 w8 w9", ""]
    assert codec.prompt(3).tolist() == [[bos]] * 3


def test_micro_batches_of_a_step_are_split_by_caption_length(codec):
    """Same images per step as the epoch order says, grouped so that short captions pad short."""
    records = [
        CaptionRecord(
            image_id=f"img{i}",
            file=f"{i}.png",
            split="train",
            captions=(" ".join(["w5"] * (1 + (i * 7) % 12)),),
        )
        for i in range(24)
    ]
    batcher = _batcher(
        records, codec, captions_per_image=1, images_per_step=12, micro_batch_images=3
    )
    for step in range(batcher.steps_per_epoch):
        (mbs,) = batcher.step_micro_batches(0, step)
        order = batcher.epoch_order(0)[step * 12 : (step + 1) * 12]
        assert sorted(i for mb in mbs for i in mb.image_ids) == sorted(
            records[i].image_id for i in order
        )
        widths = [mb.input_ids.shape[1] for mb in mbs]
        assert widths == sorted(widths) and widths[0] < widths[-1]
        padded = sum(mb.input_ids.numel() for mb in mbs)
        real = sum(int(mb.attention_mask.sum()) for mb in mbs)
        assert real / padded > 0.8  # the same 12 images in random groups of 3: ~0.7
