"""Every reader of a file a user supplies takes only a regular file of a sane size: a FIFO in
place of a dataset, an image or a spec would block the open forever, ``/dev/zero`` would fill the
memory, and JSON nested 100,000 deep ends in a RecursionError. Each is one error line."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from ituning.data.images import load_image
from ituning.data.jsonfile import read_json
from ituning.errors import DataError
from ituning.files import read_regular


def _within(seconds: float, fn: Callable[[], object]) -> BaseException | None:
    """Run ``fn`` in a thread; the exception it raised, failing the test if it blocks."""
    caught: list[BaseException | None] = [None]

    def run() -> None:
        try:
            fn()
        except BaseException as exc:  # the outcome under test
            caught[0] = exc

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), "the reader blocked"
    return caught[0]


@pytest.mark.parametrize("reader", [read_json, load_image], ids=["dataset JSON", "image"])
def test_a_fifo_a_device_or_a_folder_is_one_line_not_a_hang(tmp_path, reader):
    fifo = tmp_path / "thing"
    os.mkfifo(fifo)
    for path in (fifo, Path("/dev/zero"), tmp_path):
        exc = _within(10, lambda p=path: reader(p))
        assert isinstance(exc, DataError), exc
        assert "\n" not in str(exc) and str(path) in str(exc)


def test_dataset_json_nested_too_deeply_is_one_line(tmp_path):
    path = tmp_path / "dataset_coco.json"
    path.write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(DataError, match="nested too deeply"):
        read_json(path, top=list)


def test_a_file_over_the_limit_is_refused_without_reading_it(tmp_path):
    path = tmp_path / "big.json"
    with open(path, "wb") as fh:
        fh.truncate(10 << 20)  # sparse: 10 MB that are never read
    with pytest.raises(DataError, match=r"more than 1,048,576 bytes; a dataset is small"):
        read_regular(path, "dataset", 1 << 20, form="JSON file", size="small", error=DataError)


def test_a_folder_built_aside_appears_whole_once_and_a_peer_that_published_first_wins(tmp_path):
    from ituning.files import folder_aside

    dest = tmp_path / "built"
    with pytest.raises(RuntimeError), folder_aside(dest, "done") as tmp:
        (tmp / "half").write_text("x")
        raise RuntimeError("killed mid-build")
    assert not dest.exists() and list(tmp_path.iterdir()) == []  # nothing half-built is left
    with folder_aside(dest, "done") as tmp:
        (tmp / "done").write_text("mine")
        (dest / "inner").mkdir(parents=True)  # a peer publishes first (a non-empty folder)
        (dest / "done").write_text("peer")
    assert (dest / "done").read_text() == "peer" and list(tmp_path.iterdir()) == [dest]


def test_a_folder_is_built_aside_when_it_holds_its_last_file_and_refused_when_only_half(tmp_path):
    from ituning.files import built_aside

    def check(dest):
        return built_aside(dest, "done", unfinished="so delete it", error=DataError)

    assert check(tmp_path / "absent") is False
    (tmp_path / "whole").mkdir()
    (tmp_path / "whole" / "done").write_text("x")
    assert check(tmp_path / "whole") is True
    (tmp_path / "half").mkdir()
    with pytest.raises(DataError) as exc:
        check(tmp_path / "half")
    assert str(exc.value) == f"'{tmp_path / 'half'}' exists but holds no done, so delete it"
