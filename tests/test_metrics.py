"""Caption metrics through the real pycocoevalcap jars and a real JVM (one METEOR start per module)."""

from __future__ import annotations

import json
import math

import pytest

from ituning.errors import ConfigError, DataError
from ituning.metrics import (
    SPICE_JARS_ENV,
    CaptionScorer,
    naming_precision,
    read_coco_results,
    sanitise_caption,
    spice_status,
    write_coco_results,
)
from ituning.metrics.scorer import ptb_tokenize
from ituning.metrics.spice import CORENLP_JARS, SPICE_LIB

java_metric = pytest.mark.slow  # starts JVMs: METEOR once per module, the PTB tokenizer per call


@pytest.fixture(scope="module")
def scorer():
    """One METEOR JVM for the module, started with GC logging on (``JDK_JAVA_OPTIONS``): every
    test scoring through it also checks that JVM log lines never reach METEOR's reply protocol."""
    with pytest.MonkeyPatch.context() as env, CaptionScorer() as s:
        env.setenv("JDK_JAVA_OPTIONS", "-Xlog:gc=info")
        s._ensure_meteor()
        env.undo()
        yield s


# Two images whose hand-computed CIDEr-D is 3.75: image 1 is exact (sim 1 for 1-, 2- and 3-grams,
# 0 for the absent 4-grams: 10 * 3/4 = 7.5); image 2 only shares "a" and "circle", which occur in
# both images' references, so their idf is log(2/2) = 0 and the image scores 0.
TINY_REFS = {"1": ["a red circle"], "2": ["a blue circle"]}
TINY_PREDS = {"1": "A red circle.", "2": "a green circle"}


@java_metric
def test_identical_captions_score_full_marks(scorer):
    refs = {"1": ["a red circle is above a blue square"], "2": ["two green triangles near a star"]}
    scores = scorer.score({k: v[0] for k, v in refs.items()}, refs)
    assert scores.values["bleu4"] == pytest.approx(100.0, abs=1e-4)
    assert scores.values["bleu1"] == pytest.approx(100.0, abs=1e-4)
    assert scores.values["meteor"] == pytest.approx(100.0)
    assert scores.values["rouge_l"] == pytest.approx(100.0)
    assert scores.values["cider"] == pytest.approx(
        1000.0
    )  # raw CIDEr-D 10 = 10 * mean of 4 cosines
    assert scores.raw["cider"] == pytest.approx(10.0)
    assert scores.n_images == 2
    assert set(scores.values) == {"bleu1", "bleu2", "bleu3", "bleu4", "meteor", "rouge_l", "cider"}


@java_metric
def test_cider_matches_hand_computation(scorer):
    scores = scorer.score(TINY_PREDS, TINY_REFS)
    assert scores.raw["cider"] == pytest.approx(3.75)
    assert scores.values["cider"] == pytest.approx(375.0)
    assert scores.per_image["cider"] == pytest.approx({"1": 7.5, "2": 0.0})
    assert scores.per_image["rouge_l"]["1"] == pytest.approx(1.0)  # PTB: lower-cased, '.' dropped


@java_metric
def test_caption_sharing_nothing_scores_zero(scorer):
    refs = {"1": ["a red circle"], "2": ["a blue square on grass"]}
    scores = scorer.score({"1": "zebra xylophone quartz", "2": "violin"}, refs)
    for key in ("bleu1", "bleu4", "meteor", "rouge_l", "cider"):
        assert scores.values[key] == pytest.approx(0.0, abs=1e-4), key


@java_metric
def test_line_breaks_and_separators_do_not_shift_captions(scorer):
    refs = {"1": ["a red circle"], "2": ["a blue square"], "3": ["a green star"]}
    preds = {"1": "a red\u2028circle", "2": "a blue\r\nsquare |||", "3": "a\x00 green\tstar"}
    scores = scorer.score(preds, refs)
    assert scores.per_image["rouge_l"] == pytest.approx({"1": 1.0, "2": 1.0, "3": 1.0})
    assert scores.per_image["meteor"] == pytest.approx({"1": 1.0, "2": 1.0, "3": 1.0})
    assert sanitise_caption(" a\u0085b ||| c\n") == "a b c"


@java_metric
def test_domains_are_scored_with_their_own_references(scorer):
    refs = {
        **TINY_REFS,
        "3": ["a red square"],
        "4": ["a small square"],
        "5": ["a purple star"],
        "6": ["one yellow star"],
    }
    preds = {**TINY_PREDS, "3": "a red square", "4": "a small square", "5": "a star", "6": "a star"}
    domains = {"1": "in-domain", "2": "in-domain", "3": "near-domain", "4": "near-domain"}
    domains |= {"5": "out-of-domain", "6": "out-of-domain"}
    result = scorer.score_by_domain(preds, refs, domains)
    assert list(result) == ["in-domain", "near-domain", "out-of-domain", "overall"]
    assert result["in-domain"].values["cider"] == pytest.approx(375.0)  # as if scored alone
    assert result["near-domain"].values["cider"] == pytest.approx(750.0)
    # Among all six reference sets "circle" occurs in 2 (idf log 3), "a" in 5 (idf log 6/5), "blue"
    # and "green" in at most 1 (idf log 6); no bigram is shared, so only the unigram cosine counts:
    a, circle, colour = math.log(6 / 5), math.log(3), math.log(6)
    overall_2 = 10 * ((a**2 + circle**2) / (a**2 + circle**2 + colour**2)) / 4
    assert result["overall"].per_image["cider"]["2"] == pytest.approx(overall_2)
    assert result["in-domain"].per_image["cider"]["2"] == 0.0
    for name, ids in [("out-of-domain", ["5", "6"]), ("overall", list(preds))]:
        alone = scorer.score({i: preds[i] for i in ids}, {i: refs[i] for i in ids})
        assert result[name].values == pytest.approx(alone.values), name
        assert result[name].n_images == len(ids)


@java_metric
def test_meteor_jvm_is_started_once_and_reused(scorer):
    scorer.score(TINY_PREDS, TINY_REFS)
    process, pid = scorer._meteor, scorer._meteor.pid
    scorer.score(TINY_PREDS, TINY_REFS)
    scorer.score_by_domain(TINY_PREDS, TINY_REFS, {"1": "in-domain", "2": "out-of-domain"})
    assert scorer._meteor is process and process.pid == pid and process.alive
    assert scorer.meteor_starts == 1


@java_metric
def test_bad_inputs_raise_one_line_errors(scorer):
    starts = scorer.meteor_starts
    with pytest.raises(DataError, match=r"^2 predictions have no references \(e\.g\. '7', '9'\)"):
        scorer.score({**TINY_PREDS, "7": "x", "9": "y"}, TINY_REFS)
    with pytest.raises(DataError, match=r"^1 of 2 images with references have no prediction.*'2'"):
        scorer.score({"1": "a red circle"}, TINY_REFS)
    with pytest.raises(DataError, match="no usable references.*'2'"):
        scorer.score(TINY_PREDS, {"1": ["a red circle"], "2": "a bare string"})
    with pytest.raises(DataError, match="not strings"):
        scorer.score({"1": "a", "2": None}, TINY_REFS)
    with pytest.raises(DataError, match="empty"):
        scorer.score({}, {})
    with pytest.raises(DataError, match="1 scored images have no domain"):
        scorer.score_by_domain(TINY_PREDS, TINY_REFS, {"1": "in-domain"})
    with pytest.raises(ConfigError, match="unknown or no caption metrics"):
        CaptionScorer(metrics=("bleu", "cider-d"))
    assert scorer.meteor_starts == starts  # validation happens before any process starts


@java_metric
def test_spice_unavailable_without_jars_and_never_constructed(tmp_path, monkeypatch):
    if all((SPICE_LIB / name).is_file() for name in CORENLP_JARS):
        pytest.skip("CoreNLP jars are installed here, so SPICE is available")
    import pycocoevalcap.spice.spice as pycoco_spice

    def forbidden(*args, **kwargs):
        raise AssertionError("Spice()/its downloader must not run without the CoreNLP jars")

    monkeypatch.setattr(pycoco_spice.Spice, "__init__", forbidden)
    monkeypatch.setattr(pycoco_spice, "get_stanford_models", forbidden)
    monkeypatch.delenv(SPICE_JARS_ENV, raising=False)

    ok, reason = spice_status()
    assert not ok and "stanford-corenlp-3.6.0.jar" in reason and SPICE_JARS_ENV in reason
    with CaptionScorer(metrics=("bleu", "spice"), spice_jars=tmp_path) as s:  # no METEOR JVM
        scores = s.score(TINY_PREDS, TINY_REFS)
        assert s._meteor is None
    assert "spice" not in scores.values and "bleu4" in scores.values
    assert str(tmp_path) in scores.unavailable["spice"]
    assert "SPICE n/a" in scores.summary()

    for name in CORENLP_JARS:  # status is a pure file check: placeholder jars satisfy it
        (tmp_path / name).write_bytes(b"")
    assert spice_status(tmp_path)[0]
    monkeypatch.setenv(SPICE_JARS_ENV, str(tmp_path))
    assert spice_status()[0]


def test_results_file_round_trip(tmp_path):
    path = tmp_path / "out" / "captions.json"
    write_coco_results({"42": "a red circle", "7": "a blue square"}, path)
    rows = json.loads(path.read_text())
    assert rows == [
        {"image_id": 7, "caption": "a blue square"},
        {"image_id": 42, "caption": "a red circle"},
    ]
    assert read_coco_results(path) == {"7": "a blue square", "42": "a red circle"}
    assert [p.name for p in path.parent.iterdir()] == ["captions.json"]  # no temporary left over

    write_coco_results(
        {"shapes_000_1": "ünïcode", "12": "x"}, path
    )  # overwrite; mixed ids stay str
    assert json.loads(path.read_text())[0]["image_id"] == "12"
    assert read_coco_results(path) == {"12": "x", "shapes_000_1": "ünïcode"}


def test_results_file_errors(tmp_path):
    with pytest.raises(DataError, match="not found"):
        read_coco_results(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(DataError, match="not valid JSON"):
        read_coco_results(bad)
    bad.write_text(json.dumps([{"image_id": 1, "caption": "a"}, {"image_id": 1, "caption": "b"}]))
    with pytest.raises(DataError, match="image_id 1 twice"):
        read_coco_results(bad)
    bad.write_text(json.dumps([{"image_id": 1, "text": "a"}]))
    with pytest.raises(DataError, match="entry 0"):
        read_coco_results(bad)


LEXICON = {"circle": "circle", "ball": "circle", "square": "square", "box": "square"}
PRESENT = {"a": {"circle", "square"}, "b": {"square"}, "c": {"triangle"}, "d": {"triangle"}}


def test_naming_precision_on_hand_made_example():
    preds = {
        "a": "A red ball above two squares",  # ball -> circle (right), squares -> square (right)
        "b": "a circle and a circle",  # two wrong mentions
        "c": "nothing to see",  # no mention
        "d": "a big Box.",  # box -> square (wrong)
    }
    counts = naming_precision(preds, PRESENT, LEXICON)
    assert (counts.correct, counts.mentions) == (2, 5)
    assert counts.precision == pytest.approx(0.4)
    assert counts.per_class == {"circle": (1, 3), "square": (1, 2)}
    assert counts.images == 4 and counts.images_with_mentions == 3
    assert (counts.present_named, counts.present_nameable) == (2, 3)  # triangle is not nameable
    no_plural = naming_precision(preds, PRESENT, LEXICON, plurals=False)
    assert (no_plural.correct, no_plural.mentions) == (1, 4)
    assert naming_precision({"c": "nothing"}, PRESENT, LEXICON).precision is None


def test_naming_prefers_longest_phrase_and_validates():
    lexicon = {"traffic light": "signal", "light": "lamp"}
    counts = naming_precision({"x": "a traffic light and a light"}, {"x": {"signal"}}, lexicon)
    assert counts.per_class == {"lamp": (0, 1), "signal": (1, 1)}
    with pytest.raises(ConfigError, match="both"):
        naming_precision({}, {}, {"Ball": "circle", "ball": "sphere"})
    with pytest.raises(DataError, match="1 captioned images have no object list"):
        naming_precision({"zz": "a ball"}, PRESENT, LEXICON)


@java_metric
def test_jvm_log_lines_never_reach_the_ptb_tokenizers_answers(monkeypatch):
    """The PTB tokenizer's answers are read by line number, like METEOR's (``ituning.metrics.jvm``)."""
    monkeypatch.setenv("JDK_JAVA_OPTIONS", "-Xlog:gc=info")  # a log line at every JVM start
    res, gts = ptb_tokenize({"1": "A red circle."}, {"1": ["a blue square", "two (green) stars"]})
    assert res == {"1": ["a red circle"]}
    assert gts == {"1": ["a blue square", "two -lrb- green -rrb- stars"]}  # pycocoevalcap's own
