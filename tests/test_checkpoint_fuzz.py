"""Fuzzing a checkpoint folder: generated metadata, bytes and damaged weights only ever load (when
valid and intact) or raise one CheckpointError line; the CLIs turn that into one ``error:`` line.

One real checkpoint is saved per module; each example works on a fresh copy of it.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from ituning import attention, caption
from ituning.backbones import load_lm
from ituning.checkpoint import META, WEIGHTS, load_checkpoint, save_checkpoint, verify_checkpoint
from ituning.config import ITuningConfig
from ituning.errors import BackboneError, CheckpointError
from ituning.inject import ITuningModel
from ituning.vision import load_vision


def fuzz(examples: int) -> settings:
    """Reproducible and quick: the same examples every run, no example database on disk."""
    return settings(
        derandomize=True,
        deadline=None,
        database=None,
        max_examples=examples,
        suppress_health_check=[HealthCheck.too_slow],
    )


#: Keys a checkpoint cannot load without, and keys whose JSON type is fixed (strict: no coercion).
REQUIRED = {("format",), ("config",), ("lm",), ("lm", "name_or_path"), ("vision",)}
REQUIRED |= {("vision", "name"), ("d_vis",)}
TYPED = {("format",): str, ("d_vis",): int, ("lm", "name_or_path"): str, ("vision", "name"): str}


@pytest.fixture(scope="module")
def saved(tiny_lm_dir, tiny_clip_dir, tmp_path_factory) -> Path:
    lm, _ = load_lm(str(tiny_lm_dir))
    vision = load_vision(tiny_clip_dir)
    model = ITuningModel(lm, vision.width, ITuningConfig(drop_first=1, bottleneck=8))
    ckpt = tmp_path_factory.mktemp("fuzz") / "ckpt"
    save_checkpoint(model, ckpt, lm_id=str(tiny_lm_dir), vision_id=vision.spec())
    return ckpt


@pytest.fixture(scope="module")
def image(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("img") / "x.png"
    Image.new("RGB", (32, 32), (120, 30, 200)).save(path)
    return path


@contextlib.contextmanager
def copy_of(ckpt: Path) -> Iterator[Path]:
    with tempfile.TemporaryDirectory() as tmp:
        yield Path(shutil.copytree(ckpt, Path(tmp) / "ckpt"))


def refused(check, ckpt: Path) -> str:
    """The one-line message ``check(ckpt)`` raises; fails the test on success or another error."""
    with pytest.raises(CheckpointError) as err:
        check(ckpt)
    message = str(err.value)
    assert message and len(message.splitlines()) == 1 and "\n" not in message, message
    return message


def run_cli(main, args: list[str]) -> tuple[int, str]:
    """A CLI's ``main`` in-process: exit status and stderr."""
    stderr, stdout = io.StringIO(), io.StringIO()
    with contextlib.redirect_stderr(stderr), contextlib.redirect_stdout(stdout):
        status = main(args)
    return status, stderr.getvalue()


def assert_one_error_line(status: int, stderr: str) -> str:
    assert status == 2, stderr
    lines = stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), stderr
    assert "Traceback" not in stderr
    return lines[0]


# -- generated values ----------------------------------------------------------------------------

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**40), max_value=10**40)
    | st.floats()
    | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)


#: A value of each JSON type (int and float apart: strict fields tell them apart).
ONE_OF_EACH_TYPE = [None, True, 32, 32.0, "32", [32], {"32": 32}]


def paths_of(value, prefix: tuple = ()) -> list[tuple]:
    """Every key path of a JSON object, nested objects included."""
    out = []
    for key, child in value.items():
        out.append((*prefix, key))
        if isinstance(child, dict):
            out.extend(paths_of(child, (*prefix, key)))
    return out


def mutate(meta: dict, path: tuple, op: str, value) -> dict:
    """``meta`` with the key at ``path`` deleted or replaced by ``value``."""
    meta = json.loads(json.dumps(meta))
    node = meta
    for key in path[:-1]:
        node = node[key]
    if op == "delete":
        del node[path[-1]]
    else:
        node[path[-1]] = value
    return meta


def write_meta(ckpt: Path, text: str | bytes) -> None:
    data = text.encode("utf-8", "surrogatepass") if isinstance(text, str) else text
    (ckpt / META).write_bytes(data)


# -- the properties ------------------------------------------------------------------------------


@fuzz(200)
@given(data=st.data())
def test_mutated_metadata_loads_as_written_or_is_one_line(saved, data):
    valid = json.loads((saved / META).read_text())
    path = data.draw(st.sampled_from(sorted(paths_of(valid), key=str)), label="path")
    op = data.draw(st.sampled_from(["delete", "replace", "retype"]), label="op")
    value = None
    if op == "replace":
        value = data.draw(json_values, label="value")
    elif op == "retype":
        original = type(_at(valid, path))
        others = [v for v in ONE_OF_EACH_TYPE if type(v) is not original]
        value = data.draw(st.sampled_from(others), label="value")
    meta = mutate(valid, path, op, value)
    must_fail = (op == "delete" and path in REQUIRED) or (op == "retype" and path in TYPED)
    with copy_of(saved) as ckpt:
        write_meta(ckpt, json.dumps(meta))
        try:
            config, loaded, _ = load_checkpoint(ckpt)
        except CheckpointError as exc:
            assert "\n" not in str(exc) and len(str(exc).splitlines()) == 1
            refused(verify_checkpoint, ckpt)  # the cheap check agrees
            return
        assert not must_fail, f"{op} {path} -> {value!r} loaded"
        verify_checkpoint(ckpt)
        # what loads is what the file says: no silent coercion of the fields loading uses
        assert loaded.d_vis == meta["d_vis"] and type(meta["d_vis"]) is int
        assert loaded.lm.name_or_path == meta["lm"]["name_or_path"]
        assert loaded.vision.name == meta["vision"]["name"]
        assert loaded.modules_sha256 in (None, valid["modules_sha256"])
        assert config == loaded.config


def _at(meta: dict, path: tuple):
    for key in path:
        meta = meta[key]
    return meta


@fuzz(150)
@given(
    content=json_values.map(json.dumps)
    | st.binary(max_size=200)
    | st.text(max_size=200)
    | st.integers(1, 200_000).flatmap(
        lambda n: st.sampled_from(["[" * n + "]" * n, '{"a":' * n + "1" + "}" * n, "[" * n])
    )
)
def test_arbitrary_metadata_files_are_one_line(saved, content):
    with copy_of(saved) as ckpt:
        write_meta(ckpt, content)
        for check in (verify_checkpoint, load_checkpoint):
            refused(check, ckpt)


@fuzz(150)
@given(data=st.data())
def test_flipped_or_cut_weights_are_refused(saved, data):
    raw = (saved / WEIGHTS).read_bytes()
    damage = data.draw(st.sampled_from(["flip", "truncate", "append"]), label="damage")
    if damage == "flip":
        at = data.draw(st.integers(0, len(raw) - 1), label="at")
        mask = data.draw(st.integers(1, 255), label="mask")
        bad = raw[:at] + bytes([raw[at] ^ mask]) + raw[at + 1 :]
    elif damage == "truncate":
        bad = raw[: data.draw(st.integers(0, len(raw) - 1), label="length")]
    else:
        bad = raw + data.draw(st.binary(min_size=1, max_size=64), label="tail")
    with copy_of(saved) as ckpt:
        (ckpt / WEIGHTS).write_bytes(bad)
        for check in (verify_checkpoint, load_checkpoint):
            refused(check, ckpt)


@fuzz(60)
@given(data=st.data())
def test_the_caption_cli_on_a_fuzzed_checkpoint_is_one_error_line(saved, image, data):
    valid = json.loads((saved / META).read_text())
    path = data.draw(st.sampled_from(sorted(paths_of(valid), key=str)), label="path")
    meta = mutate(valid, path, "replace", data.draw(json_values, label="value"))
    with copy_of(saved) as ckpt:
        write_meta(ckpt, json.dumps(meta))
        try:
            verify_checkpoint(ckpt)
        except CheckpointError:
            pass
        else:  # still valid metadata (e.g. an informational field): loads the backbones, slower
            return
        status, stderr = run_cli(caption.main, [str(image), "--checkpoint", str(ckpt)])
        assert_one_error_line(status, stderr)


# -- the cases issue #16 names, through the real CLIs ------------------------------------------


def _deep(ckpt: Path) -> None:
    write_meta(ckpt, "[" * 100_000 + "]" * 100_000)


def _set(**changes):
    def apply(ckpt: Path) -> None:
        meta = json.loads((ckpt / META).read_text())
        for dotted, value in changes.items():
            node = meta
            *parents, leaf = dotted.split("__")
            for key in parents:
                node = node[key]
            if value is KeyError:
                del node[leaf]
            else:
                node[leaf] = value
        write_meta(ckpt, json.dumps(meta))

    return apply


def _replace_with_dir(ckpt: Path) -> None:
    (ckpt / META).unlink()
    (ckpt / META).mkdir()


def _fifo(name: str):
    def apply(ckpt: Path) -> None:
        (ckpt / name).unlink()
        os.mkfifo(ckpt / name)

    return apply


def _flip_weights(ckpt: Path) -> None:
    data = bytearray((ckpt / WEIGHTS).read_bytes())
    data[len(data) // 2] ^= 0x10
    (ckpt / WEIGHTS).write_bytes(bytes(data))


CASES = {
    "100000-deep list": (_deep, "recursion limit"),
    "a list": (lambda c: write_meta(c, "[1, 2]"), "Input should be an object"),
    "a string": (lambda c: write_meta(c, '"ckpt"'), "Input should be an object"),
    "a number": (lambda c: write_meta(c, "3"), "Input should be an object"),
    "config 3": (_set(config=3), "config: Input should be"),
    "lm 'x'": (_set(lm="x"), "lm: Input should be"),
    "d_vis 'abc'": (_set(d_vis="abc"), "d_vis: Input should be a valid integer"),
    "d_vis '32'": (_set(d_vis="32"), "d_vis: Input should be a valid integer"),
    "no lm": (_set(lm=KeyError), "lm: Field required"),
    "no vision": (_set(vision=KeyError), "vision: Field required"),
    "no d_vis": (_set(d_vis=KeyError), "d_vis: Field required"),
    "no config": (_set(config=KeyError), "config: Field required"),
    "no lm.name_or_path": (_set(lm__name_or_path=KeyError), "lm.name_or_path: Field required"),
    "a line break in a name": (_set(vision__name="a\nb"), "vision.name: must be printable"),
    "a line break in a key": (_set(**{"config__x\ny": 1}), "ITuningConfig.x y: Extra inputs"),
    "another format": (_set(format="ituning-modules/2"), "format: Input should be"),
    "a bad digest": (_set(modules_sha256="0" * 64), "do not match the sha256 recorded"),
    "huge": (lambda c: write_meta(c, " " * (1 << 20) + "{}"), "over 1 MiB"),
    "not UTF-8": (lambda c: write_meta(c, b'{"format": "\xff"}'), "byte 12: not UTF-8"),
    "a folder": (_replace_with_dir, "ituning.json is not a regular file"),
    "a FIFO": (_fifo(META), "ituning.json is not a regular file"),
    "weights a FIFO": (_fifo(WEIGHTS), "modules.safetensors is not a regular file"),
    "a flipped weight byte": (_flip_weights, "do not match the sha256"),
}


@pytest.mark.parametrize("damage", list(CASES), ids=list(CASES))
def test_each_malformed_checkpoint_is_one_error_line_from_caption(saved, image, damage):
    apply, expected = CASES[damage]
    with copy_of(saved) as ckpt:
        apply(ckpt)
        outcome: list = []
        worker = threading.Thread(  # a FIFO opened for reading would block: fail, do not hang
            target=lambda: outcome.append(
                run_cli(caption.main, [str(image), "--checkpoint", str(ckpt)])
            ),
            daemon=True,
        )
        worker.start()
        worker.join(timeout=30)
        assert outcome, "the CLI blocked"
        line = assert_one_error_line(*outcome[0])
    assert expected in line and "\\n" not in line, line


def test_attention_cli_shares_the_checks(saved, image, tmp_path):
    with copy_of(saved) as ckpt:
        _deep(ckpt)
        out = tmp_path / "fig.png"
        args = [str(image), "--checkpoint", str(ckpt), "--out", str(out)]
        line = assert_one_error_line(*run_cli(attention.main, args))
    assert "recursion limit" in line and not out.exists()


def test_an_lm_folder_with_pickle_weights_is_one_line(saved, image, tiny_lm_dir, tmp_path):
    """Only safetensors is read: a ``pytorch_model.bin`` is refused before transformers sees it."""
    lm_dir = Path(shutil.copytree(tiny_lm_dir, tmp_path / "lm"))
    state = {k: v.clone() for k, v in load_lm(str(lm_dir))[0].state_dict().items()}
    (lm_dir / "model.safetensors").unlink()
    torch.save(state, lm_dir / "pytorch_model.bin")
    with pytest.raises(BackboneError) as err:
        load_lm(str(lm_dir))
    assert str(err.value).startswith(
        f"language model folder '{lm_dir}' holds pickle weights (pytorch_model.bin); only "
        "safetensors weights are accepted: convert them once"
    )
    with copy_of(saved) as ckpt:
        _set(lm__name_or_path=str(lm_dir), lm__weights_sha256=None)(ckpt)
        line = assert_one_error_line(
            *run_cli(caption.main, [str(image), "--checkpoint", str(ckpt)])
        )
    assert "holds pickle weights" in line
