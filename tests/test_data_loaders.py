"""Each reader on small files written here in the real formats, and its error messages."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import pytest
from PIL import Image

from ituning.data.coco import build_coco_karpathy, pycocoevalcap_coco_archive
from ituning.data.images import load_image
from ituning.data.karpathy import read_karpathy
from ituning.data.nocaps import read_nocaps
from ituning.data.paths import resolve_image, safe_relpath
from ituning.data.records import CaptionDataset, CaptionRecord, natural_id
from ituning.data.visual_genome import read_visual_genome
from ituning.errors import DataError


def _png(path: Path, colour=(200, 30, 30)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (8, 8), colour).save(path)


def _write(path: Path, obj) -> Path:
    path.write_text(json.dumps(obj))
    return path


# --------------------------------------------------------------------------- COCO-style fixture
# (folder, file name, coco id, Karpathy split, captions) - what dataset_coco.json and the official
# annotations + lists must agree on.
COCO_IMAGES = [
    ("train2014", "COCO_train2014_000000000009.jpg", 9, "train", ["A plate of food.", "Food  "]),
    ("train2014", "COCO_train2014_000000000025.jpg", 25, "train", ["A giraffe.", "Tall animal."]),
    ("val2014", "COCO_val2014_000000000042.jpg", 42, "restval", ["A dog on a bed."]),
    ("val2014", "COCO_val2014_000000000073.jpg", 73, "val", ["A motorcycle.", "A bike parked."]),
    (
        "val2014",
        "COCO_val2014_000000391895.jpg",
        391895,
        "test",
        ["A man on a moped.", "Dirt road."],
    ),
]


def _karpathy_coco(tmp: Path, images=COCO_IMAGES, **extra) -> Path:
    entries, sentid = [], 0
    for imgid, (folder, name, cocoid, split, caps) in enumerate(images):
        sents = []
        for c in caps:
            sents.append({"raw": c, "tokens": c.lower().split(), "imgid": imgid, "sentid": sentid})
            sentid += 1
        entries.append(
            {
                "filepath": folder,
                "filename": name,
                "imgid": imgid,
                "cocoid": cocoid,
                "split": split,
                "sentids": [s["sentid"] for s in sents],
                "sentences": sents,
                **extra,
            }
        )
    return _write(tmp / "dataset_coco.json", {"dataset": "coco", "images": entries})


def _coco_images(root: Path, images=COCO_IMAGES) -> Path:
    for folder, name, *_ in images:
        _png(root / folder / name)
    return root


def test_karpathy_coco_reads_splits_ids_files_and_meta(tmp_path):
    root = _coco_images(tmp_path / "images")
    ds = read_karpathy(_karpathy_coco(tmp_path, objects=[{"shape": "circle"}]), root)
    assert ds.name == "coco" and len(ds) == 5 and ds.num_captions == 9
    assert ds.splits == ("train", "val", "test")
    assert [len(ds.split(s)) for s in ("train", "val", "test")] == [3, 1, 1]
    rec = ds.split("test")[0]
    assert rec.image_id == "coco:391895"
    assert rec.file == "val2014/COCO_val2014_000000391895.jpg"
    assert rec.captions == ("A man on a moped.", "Dirt road.")
    assert ds.image_path(rec) == root / "val2014" / "COCO_val2014_000000391895.jpg"
    restval = ds.get("coco:42")
    assert restval.split == "train" and restval.meta["karpathy_split"] == "restval"
    assert restval.meta["cocoid"] == 42 and restval.meta["objects"] == [{"shape": "circle"}]
    assert ds.get("coco:9").captions == ("A plate of food.", "Food")  # raw, stripped
    only = read_karpathy(tmp_path / "dataset_coco.json", root, splits=["val", "test"])
    assert [r.image_id for r in only] == ["coco:73", "coco:391895"]


def test_karpathy_flickr_ids_are_file_stems(tmp_path):
    _png(tmp_path / "img" / "1000092795.jpg")
    _png(tmp_path / "img" / "36979.jpg")
    sent = {"raw": "Two dogs.", "tokens": ["two", "dogs"], "imgid": 0, "sentid": 0}
    data = {
        "dataset": "flickr30k",
        "images": [
            {
                "filename": "1000092795.jpg",
                "imgid": 0,
                "split": "train",
                "sentids": [0],
                "sentences": [sent],
            },
            {
                "filename": "36979.jpg",
                "imgid": 1,
                "split": "test",
                "sentids": [1],
                "sentences": [sent],
            },
        ],
    }
    ds = read_karpathy(_write(tmp_path / "dataset_flickr30k.json", data), tmp_path / "img")
    assert [r.image_id for r in ds] == ["flickr30k:1000092795", "flickr30k:36979"]
    assert ds.split("test")[0].file == "36979.jpg"
    assert natural_id(ds[0].image_id) == "1000092795"


def test_karpathy_ids_without_cocoid_keep_the_folder(tmp_path):
    """The Shapes world names files train/000000.png and val/000000.png: ids must differ."""
    sent = {"raw": "A red circle.", "tokens": ["a", "red", "circle"], "imgid": 0, "sentid": 0}
    images = [
        {"filename": f"{s}/000000.png", "imgid": i, "split": s, "sentids": [i], "sentences": [sent]}
        for i, s in enumerate(("train", "val"))
    ]
    path = _write(tmp_path / "dataset_shapes.json", {"dataset": "shapes", "images": images})
    ds = read_karpathy(path, tmp_path, check_images=False)
    assert [r.image_id for r in ds] == ["shapes:train/000000", "shapes:val/000000"]


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (
            lambda d: d["images"][1].update(split="holdout"),
            r"images\[1\]\.split: unknown split 'holdout'",
        ),
        (
            lambda d: d["images"][2]["sentences"][0].pop("raw"),
            r"images\[2\]\.sentences\[0\]\.raw: missing",
        ),
        (lambda d: d["images"][0].pop("filename"), r"images\[0\]\.filename: missing"),
        (lambda d: d["images"][3].update(cocoid="73"), r"images\[3\]\.cocoid: expected int"),
        (lambda d: d.pop("images"), r"images: missing"),
        (lambda d: d["images"][4].update(cocoid=9), r"image_id 'coco:9' appears 2 times"),
    ],
)
def test_karpathy_errors_name_file_and_field(tmp_path, mutate, expected):
    path = _karpathy_coco(tmp_path)
    data = json.loads(path.read_text())
    mutate(data)
    _write(path, data)
    with pytest.raises(DataError, match=r"dataset_coco\.json.*" + expected):
        read_karpathy(path, tmp_path, check_images=False)


def test_karpathy_malformed_json_and_unknown_split_request(tmp_path):
    bad = tmp_path / "dataset_coco.json"
    bad.write_text('{"dataset": "coco", "images": [')
    with pytest.raises(DataError, match=r"dataset_coco\.json: malformed JSON"):
        read_karpathy(bad, tmp_path)
    with pytest.raises(DataError, match=r"nope\.json: file not found"):
        read_karpathy(tmp_path / "nope.json", tmp_path)
    path = _karpathy_coco(tmp_path)
    with pytest.raises(DataError, match="unknown split 'restval' requested"):
        read_karpathy(path, tmp_path, splits=["restval"], check_images=False)
    ds = read_karpathy(path, tmp_path, check_images=False)
    with pytest.raises(DataError, match="unknown split 'dev'"):
        ds.split("dev")
    with pytest.raises(DataError, match=r"has no 'vlp' split \(it has: train, val, test\)"):
        ds.split("vlp")


def test_missing_images_are_reported_with_path_field_and_count(tmp_path):
    root = _coco_images(tmp_path / "images")
    (root / "val2014" / "COCO_val2014_000000000073.jpg").unlink()
    (root / "train2014" / "COCO_train2014_000000000025.jpg").unlink()
    path = _karpathy_coco(tmp_path)
    with pytest.raises(DataError) as err:
        read_karpathy(path, root)
    msg = str(err.value)
    assert "dataset_coco.json: images[1].filename: image not found:" in msg
    assert "COCO_train2014_000000000025.jpg" in msg and "2 of 5 images missing" in msg
    assert len(read_karpathy(path, root, check_images=False)) == 5
    assert (
        len(read_karpathy(path, root, splits=["test"])) == 1
    )  # only the selected split is checked
    with pytest.raises(DataError, match="is not a directory"):
        read_karpathy(path, tmp_path / "no-such-root")


@pytest.mark.parametrize(
    ("filepath", "filename"),
    [
        (None, "../../etc/passwd"),
        ("val2014", "../../../etc/passwd"),
        ("/etc", "passwd"),
        (None, "a/../../b.jpg"),
        (None, "..\\..\\secret.jpg"),
        (None, "C:/x.jpg"),
    ],
)
def test_file_names_escaping_the_image_root_are_refused(tmp_path, filepath, filename):
    (tmp_path / "secret.jpg").write_bytes(b"outside the root")
    root = tmp_path / "root"
    root.mkdir()
    img = {"filename": filename, "imgid": 0, "split": "test", "sentences": [{"raw": "x"}]}
    if filepath:
        img["filepath"] = filepath
    path = _write(tmp_path / "dataset_evil.json", {"dataset": "evil", "images": [img]})
    with pytest.raises(DataError, match=r"dataset_evil\.json: images\[0\]\.filename: file name"):
        read_karpathy(path, root, check_images=False)


def test_records_and_paths_refuse_escapes_directly(tmp_path):
    with pytest.raises(DataError, match="escapes the image root"):
        CaptionRecord("x:1", "../x.jpg", "train", ("a",))
    with pytest.raises(DataError, match="is absolute"):
        resolve_image(tmp_path, "/etc/passwd")
    assert safe_relpath("./a//b.jpg", where="t") == "a/b.jpg"
    rec = CaptionRecord("x:1", "a.jpg", "train", ["a caption"])
    assert rec.captions == ("a caption",) and isinstance(hash(rec), int)
    with pytest.raises(DataError, match="unknown split 'restval'"):
        CaptionRecord("x:1", "a.jpg", "restval", ())
    with pytest.raises(DataError, match="appears 2 times"):
        CaptionDataset("x", tmp_path, (rec, rec))


# --------------------------------------------------------------------------- COCO from official
def _official(tmp: Path, images=COCO_IMAGES) -> tuple[Path, Path]:
    """captions_{train,val}2014.json and Karpathy lists for the COCO_IMAGES fixture."""
    ann_dir = tmp / "annotations"
    ann_dir.mkdir()
    lists = tmp / "lists"
    lists.mkdir()
    ann_id = 1000
    for folder in ("train2014", "val2014"):
        imgs, anns = [], []
        for f, name, cocoid, _split, caps in images:
            if f != folder:
                continue
            imgs.append(
                {"id": cocoid, "file_name": name, "width": 640, "height": 480, "license": 1}
            )
            # Annotation ids out of order on purpose: captions come back sorted by annotation id.
            for c in reversed(caps):
                ann_id -= 1
                anns.append({"image_id": cocoid, "id": ann_id, "caption": c})
        _write(
            ann_dir / f"captions_{folder}.json", {"info": {}, "images": imgs, "annotations": anns}
        )
    for split in ("test", "val"):
        names = [name for _f, name, _c, s, _caps in images if s == split]
        (lists / f"{split}_images.txt").write_text("\n".join(names) + "\n")
    return ann_dir, lists


def _same_records(a: CaptionDataset, b: CaptionDataset) -> None:
    key = lambda r: (r.image_id, r.file, r.split, r.captions, r.meta["karpathy_split"])  # noqa: E731
    assert sorted(map(key, a)) == sorted(map(key, b))


def test_build_coco_karpathy_matches_dataset_coco_json(tmp_path):
    root = _coco_images(tmp_path / "images")
    ann_dir, lists = _official(tmp_path)
    built = build_coco_karpathy(ann_dir, root, lists_dir=lists)
    assert built.name == "coco"
    _same_records(built, read_karpathy(_karpathy_coco(tmp_path), root))
    assert built.get("coco:9").meta["width"] == 640
    # the two files given explicitly, and a zip holding them, read the same
    files = [ann_dir / "captions_train2014.json", ann_dir / "captions_val2014.json"]
    _same_records(built, build_coco_karpathy(files, root, lists_dir=lists))
    jar = tmp_path / "ann.jar"
    with zipfile.ZipFile(jar, "w") as zf:
        for f in files:
            zf.write(f, f"coco/annotations/{f.name}")
    _same_records(built, build_coco_karpathy(jar, root, lists_dir=lists))
    test = build_coco_karpathy(jar, root, lists_dir=lists, splits=["test"])
    assert [r.image_id for r in test] == ["coco:391895"]


def test_build_coco_karpathy_errors(tmp_path):
    ann_dir, lists = _official(tmp_path)
    bad = tmp_path / "bad_lists"
    bad.mkdir()
    (bad / "val_images.txt").write_text((lists / "val_images.txt").read_text())
    (bad / "test_images.txt").write_text(
        "COCO_val2014_000000391895.jpg\nCOCO_val2014_000000999999.jpg\n"
    )
    with pytest.raises(
        DataError, match=r"test_images\.txt:2: COCO_val2014_000000999999\.jpg is not in"
    ):
        build_coco_karpathy(ann_dir, tmp_path, lists_dir=bad, check_images=False)
    (bad / "val_images.txt").write_text("COCO_val2014_000000391895.jpg\n")
    with pytest.raises(DataError, match=r"val_images\.txt:1: .* already listed in the test split"):
        build_coco_karpathy(ann_dir, tmp_path, lists_dir=bad, check_images=False)
    (ann_dir / "captions_val2014.json").unlink()
    with pytest.raises(DataError, match=r"captions_val2014\.json: file not found"):
        build_coco_karpathy(ann_dir, tmp_path, lists_dir=lists, check_images=False)
    with pytest.raises(DataError, match="not found"):
        build_coco_karpathy(tmp_path / "missing", tmp_path)


def test_shipped_karpathy_lists_are_package_data():
    from ituning.data.coco import _read_list

    for name in ("test_images.txt", "val_images.txt"):
        _, names = _read_list(name, None)
        assert len(names) == len(set(names)) == 5000
        assert all(n.startswith("COCO_val2014_") for n in names)


@pytest.mark.slow
def test_real_coco_annotations_give_the_karpathy_test_split():
    jar = pycocoevalcap_coco_archive()
    if jar is None:
        pytest.skip("pycocoevalcap's SPICE jar (with COCO 2014 captions) is not installed")
    ds = build_coco_karpathy(jar, "unused", check_images=False)
    test = ds.split("test")
    assert (len(test), test.num_captions) == (5000, 25010)
    assert (len(ds.split("val")), len(ds.split("train"))) == (5000, 113287)


# --------------------------------------------------------------------------- NoCaps
def _nocaps(tmp: Path) -> Path:
    images = [
        {
            "id": 0,
            "file_name": "0013ea2087020901.jpg",
            "domain": "in-domain",
            "height": 8,
            "width": 8,
            "open_images_id": "0013ea2087020901",
            "coco_url": "https://example/0.jpg",
        },
        {
            "id": 1,
            "file_name": "0019e8f6d2dbea0b.jpg",
            "domain": "near-domain",
            "height": 8,
            "width": 8,
        },
        {
            "id": 2,
            "file_name": "001b4ac8a1c6bb9e.jpg",
            "domain": "out-of-domain",
            "height": 8,
            "width": 8,
        },
    ]
    anns = [
        {"image_id": 2, "id": 21, "caption": "A red panda."},
        {"image_id": 0, "id": 2, "caption": "second"},
        {"image_id": 0, "id": 1, "caption": "first "},
        {"image_id": 1, "id": 11, "caption": "A sea lion."},
    ]
    for img in images:
        _png(tmp / "validation" / img["file_name"])
    return _write(
        tmp / "nocaps_val_4500_captions.json",
        {"info": {}, "licenses": [], "images": images, "annotations": anns},
    )


def test_nocaps_reads_domains_and_captions(tmp_path):
    ds = read_nocaps(_nocaps(tmp_path), tmp_path / "validation")
    assert [r.image_id for r in ds] == ["nocaps:0", "nocaps:1", "nocaps:2"]
    assert [r.domain for r in ds] == ["in-domain", "near-domain", "out-of-domain"]
    assert ds[0].captions == ("first", "second") and ds[0].split == "nocaps_val"
    assert ds[0].meta["open_images_id"] == "0013ea2087020901" and ds[0].meta["nocaps_id"] == 0
    assert ds.split("nocaps_val").num_captions == 4
    shapes = read_nocaps(
        tmp_path / "nocaps_val_4500_captions.json", tmp_path / "validation", name="shapes_nocaps"
    )
    assert shapes[0].image_id == "shapes_nocaps:0"


def test_nocaps_errors(tmp_path):
    path = _nocaps(tmp_path)
    data = json.loads(path.read_text())
    data["images"][1]["domain"] = "far-domain"
    _write(path, data)
    with pytest.raises(
        DataError,
        match=r"nocaps_val_4500_captions\.json: images\[1\]\.domain: unknown domain 'far-domain'",
    ):
        read_nocaps(path, tmp_path / "validation")
    data["images"][1]["domain"] = "near-domain"
    data["annotations"].append({"image_id": 7, "id": 99, "caption": "?"})
    _write(path, data)
    with pytest.raises(DataError, match=r"annotations\[4\]\.image_id: 7 is not in"):
        read_nocaps(path, tmp_path / "validation")
    data["annotations"].pop()
    data["images"][2]["file_name"] = "../../etc/passwd"
    _write(path, data)
    with pytest.raises(
        DataError, match=r"images\[2\]\.file_name: file name '../../etc/passwd' escapes"
    ):
        read_nocaps(path, tmp_path / "validation", check_images=False)
    data["images"][2]["file_name"] = "gone.jpg"
    _write(path, data)
    with pytest.raises(DataError, match=r"images\[2\]\.file_name: image not found: .*gone\.jpg"):
        read_nocaps(path, tmp_path / "validation")
    del data["annotations"]  # an image-info file (test split): records without captions
    _write(path, data)
    info = read_nocaps(path, tmp_path, check_images=False, split="nocaps_test")
    assert len(info) == 3 and info.num_captions == 0


# --------------------------------------------------------------------------- Visual Genome
def _vg(tmp: Path) -> tuple[Path, Path, Path]:
    root = tmp / "vg"
    _png(root / "VG_100K" / "1.jpg")
    _png(root / "VG_100K_2" / "2.jpg")
    _png(root / "3.jpg")  # a flattened layout is found too
    _png(root / "VG_100K" / "4.jpg")
    base = "https://cs.stanford.edu/people/rak248"
    image_data = [
        {
            "image_id": 1,
            "url": f"{base}/VG_100K/1.jpg",
            "width": 800,
            "height": 600,
            "coco_id": None,
            "flickr_id": 1,
        },
        {
            "image_id": 2,
            "url": f"{base}/VG_100K_2/2.jpg",
            "width": 800,
            "height": 600,
            "coco_id": 391895,
            "flickr_id": None,
        },
        {
            "image_id": 3,
            "url": f"{base}/VG_100K_2/3.jpg",
            "width": 500,
            "height": 400,
            "coco_id": 42,
            "flickr_id": None,
        },
        {
            "image_id": 4,
            "url": f"{base}/VG_100K/4.jpg",
            "width": 500,
            "height": 400,
            "coco_id": None,
            "flickr_id": None,
        },
    ]

    def reg(rid, iid, phrase, x):
        return {
            "region_id": rid,
            "image_id": iid,
            "phrase": phrase,
            "x": x,
            "y": 2,
            "width": 10,
            "height": 20,
        }

    regions = [
        {
            "id": 1,
            "regions": [
                reg(11, 1, "a man riding a horse", 0),
                reg(12, 1, "  ", 5),
                reg(13, 1, "green grass ", 9),
            ],
        },
        {"id": 2, "regions": [reg(21, 2, "a plate of food", 1)]},
        {"id": 3, "regions": [reg(31, 3, "white clouds", 3)]},
        {"id": 4, "regions": []},  # no phrase: no record
    ]
    return (
        _write(tmp / "region_descriptions.json", regions),
        _write(tmp / "image_data.json", image_data),
        root,
    )


def test_visual_genome_records_are_images_with_region_phrases(tmp_path):
    regions, image_data, root = _vg(tmp_path)
    ds = read_visual_genome(regions, image_data, root)
    assert ds.name == "visual_genome" and ds.splits == ("vlp",)
    assert [r.image_id for r in ds] == ["visual_genome:1", "visual_genome:2", "visual_genome:3"]
    first = ds[0]
    assert first.captions == ("a man riding a horse", "green grass")
    assert first.meta["boxes"] == ((0, 2, 10, 20), (9, 2, 10, 20)) and first.meta["region_ids"] == (
        11,
        13,
    )
    assert [r.file for r in ds] == ["VG_100K/1.jpg", "VG_100K_2/2.jpg", "3.jpg"]
    assert all(ds.image_path(r).is_file() for r in ds)
    kept = read_visual_genome(regions, image_data, root, exclude_coco_ids={391895, 7})
    assert [r.image_id for r in kept] == ["visual_genome:1", "visual_genome:3"]


def test_visual_genome_errors(tmp_path):
    regions, image_data, root = _vg(tmp_path)
    (root / "VG_100K_2" / "2.jpg").unlink()
    with pytest.raises(
        DataError, match=r"image_data\.json: \[1\]\.url: image not found: .*VG_100K_2/2\.jpg"
    ):
        read_visual_genome(regions, image_data, root)
    data = json.loads(regions.read_text())
    data.append({"id": 99, "regions": []})
    _write(regions, data)
    with pytest.raises(
        DataError,
        match=r"region_descriptions\.json: \[4\]\.id: image 99 is not in image_data\.json",
    ):
        read_visual_genome(regions, image_data, root, check_images=False)
    _write(image_data, {"not": "a list"})
    with pytest.raises(
        DataError, match=r"image_data\.json: top level is dict, expected a JSON array"
    ):
        read_visual_genome(regions, image_data, root)


# --------------------------------------------------------------------------- image decoding
def test_load_image_errors_name_the_path(tmp_path):
    good = tmp_path / "good.png"
    Image.new("L", (4, 4), 128).save(good)
    img = load_image(good)
    assert img.mode == "RGB" and img.size == (4, 4)
    with pytest.raises(DataError, match=r"image not found: .*absent\.jpg"):
        load_image(tmp_path / "absent.jpg")
    junk = tmp_path / "junk.jpg"
    junk.write_bytes(b"not an image at all")
    with pytest.raises(DataError, match=r"cannot read image .*junk\.jpg"):
        load_image(junk)
    big = tmp_path / "big.png"
    Image.new("RGB", (64, 64), (1, 2, 3)).save(big)
    truncated = tmp_path / "truncated.png"
    truncated.write_bytes(big.read_bytes()[:60])
    with pytest.raises(DataError, match=r"cannot read image .*truncated\.png"):
        load_image(truncated)


def test_tiny_scale_limits_evaluation_and_vlp_data_too(tmp_path):
    """A smoke test of the paper profile reads a few evaluation and VLP images, not all of COCO,
    NoCaps and Visual Genome: the limits apply before the image files are checked."""
    from bench.faults.inputs import write_paper_root
    from bench.sweep.profiles import get_profile
    from bench.sweep.spec import parse_spec
    from ituning.train import load_data

    root = write_paper_root(tmp_path / "data")
    profile = get_profile("paper", runs_dir=tmp_path / "runs", data_root=root, scale="tiny")
    (plan,) = profile.plan(parse_spec("name: t\naxes: {lm: [base], vlp: [true]}\n"))
    assert (plan.config.data.limit_eval_images, plan.config.data.limit_vlp_images) == (16, 16)
    config = plan.config.model_copy(
        update={
            "data": plan.config.data.model_copy(
                update={"limit_eval_images": 2, "limit_vlp_images": 1}
            )
        }
    )
    (root / "visual_genome" / "VG_100K" / "2.jpg").unlink()  # beyond the limit: never opened
    data = load_data(config)
    assert len(data.evals["nocaps"]) == 2
    assert {r.domain for r in data.evals["nocaps"]} == {"in-domain", "near-domain"}
    assert [r.image_id for r in data.vlp] == ["visual_genome:1"]
