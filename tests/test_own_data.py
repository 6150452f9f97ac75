"""Training on your own data: docs/OWN_DATA.md's commands run as written on a small COCO-format
folder made here, and the tiny config on coco128-seg (real COCO ids)."""

import json
import os
import re
import subprocess
import sys

import cv2
import numpy as np
import pytest
from conftest import ROOT

# ../shared/data beside the repository: the data sets the tests read when present
SHARED_DATA = os.path.normpath(os.path.join(ROOT, "..", "shared", "data"))

# dataset category id -> name: deliberately not 1..N
CATEGORIES = {3: "disc", 7: "block", 12: "wedge"}
IMAGE_SIZE = 128


def _polygon(kind, cx, cy, r):
    """Flat COCO polygon [x0, y0, ...] of a disc (24-gon), block (square) or wedge (triangle)."""
    if kind == "disc":
        t = np.linspace(0, 2 * np.pi, 24, endpoint=False)
        pts = np.stack([cx + r * np.cos(t), cy + r * np.sin(t)], 1)
    elif kind == "block":
        pts = np.array([[cx - r, cy - r], [cx + r, cy - r], [cx + r, cy + r], [cx - r, cy + r]])
    else:
        pts = np.array([[cx, cy - r], [cx + r, cy + r], [cx - r, cy + r]])
    return [float(v) for v in np.round(pts, 2).reshape(-1)]


def make_coco_folder(root, num_images=4, seed=0):
    """A COCO-format folder: ``root/images/*.jpg``, ``root/train.json`` and ``root/val.json``
    (the same annotations) with

    * category ids 3, 7 and 12 (not contiguous, not from 1);
    * an object made of two polygons (a block in two separate halves);
    * a crowd annotation (``iscrowd: 1``, uncompressed RLE, as COCO stores crowds);
    * one image without any annotation.

    Every category is drawn in its own colour, so a briefly trained model finds them.
    """
    rng = np.random.RandomState(seed)
    colours = {"disc": (40, 200, 240), "block": (230, 90, 40), "wedge": (60, 220, 60)}
    ids = {name: i for i, name in CATEGORIES.items()}
    os.makedirs(os.path.join(root, "images"), exist_ok=True)
    images, annotations = [], []

    def add(image_id, kind, segmentation, area, bbox, iscrowd=0):
        annotations.append(
            {
                "id": len(annotations) + 1,
                "image_id": image_id,
                "category_id": ids[kind],
                "segmentation": segmentation,
                "area": float(area),
                "bbox": [float(v) for v in bbox],
                "iscrowd": iscrowd,
            }
        )

    for image_id in range(1, num_images + 2):
        img = np.full((IMAGE_SIZE, IMAGE_SIZE, 3), 30, np.uint8)
        img += rng.randint(0, 20, img.shape).astype(np.uint8)
        if image_id <= num_images:  # the last image has no annotation
            for k, kind in enumerate(("disc", "block", "wedge")):
                r = rng.uniform(14, 20)
                cx, cy = 24 + 40 * k + rng.uniform(-3, 3), rng.uniform(28, 100)
                poly = _polygon(kind, cx, cy, r)
                pts = np.asarray(poly).reshape(-1, 2)
                if kind == "block" and image_id == 1:  # one object, two polygons
                    left = [cx - r, cy - r, cx - 2, cy - r, cx - 2, cy + r, cx - r, cy + r]
                    right = [cx + 2, cy - r, cx + r, cy - r, cx + r, cy + r, cx + 2, cy + r]
                    parts = [left, right]
                else:
                    parts = [poly]
                for part in parts:
                    p = np.round(np.asarray(part).reshape(-1, 2)).astype(np.int32)
                    cv2.fillPoly(img, [p], colours[kind])
                area = sum(cv2.contourArea(np.float32(np.reshape(p, (-1, 2)))) for p in parts)
                x0, y0 = pts.min(0)
                x1, y1 = pts.max(0)
                add(image_id, kind, parts, area, [x0, y0, x1 - x0, y1 - y0])
            if image_id == 2:  # a crowd of small discs in the corner, as uncompressed RLE
                crowd = np.zeros((IMAGE_SIZE, IMAGE_SIZE), np.uint8)
                for cx in (106, 114, 122):
                    cv2.circle(crowd, (cx, 8), 3, 1, -1)
                    cv2.circle(img, (cx, 8), 3, colours["disc"], -1)
                counts, last, run = [], 0, 0
                for v in crowd.flatten(order="F"):  # column-major, starting with zeros
                    if v != last:
                        counts.append(run)
                        last, run = v, 0
                    run += 1
                counts.append(run)
                ys, xs = np.nonzero(crowd)
                bbox = [xs.min(), ys.min(), xs.max() - xs.min() + 1, ys.max() - ys.min() + 1]
                rle = {"size": [IMAGE_SIZE, IMAGE_SIZE], "counts": [int(c) for c in counts]}
                add(image_id, "disc", rle, crowd.sum(), bbox, iscrowd=1)
        name = f"{image_id:03d}.jpg"
        cv2.imwrite(os.path.join(root, "images", name), img, [cv2.IMWRITE_JPEG_QUALITY, 95])
        images.append(
            {"id": image_id, "file_name": name, "height": IMAGE_SIZE, "width": IMAGE_SIZE}
        )
    data = {
        "images": images,
        "annotations": annotations,
        "categories": [
            {"id": i, "name": n, "supercategory": "shape"} for i, n in CATEGORIES.items()
        ],
    }
    for split in ("train", "val"):
        with open(os.path.join(root, f"{split}.json"), "w") as f:
            json.dump(data, f)
    return root


OWN_DATA = os.path.join(ROOT, "docs", "OWN_DATA.md")
README_ITERS = 30  # enough for detections above the 0.05 score threshold on this easy folder


def readme_own_data_commands() -> str:
    """The bash commands between the ``own-data`` markers of docs/OWN_DATA.md."""
    with open(OWN_DATA) as f:
        text = f.read()
    m = re.search(
        r"<!-- own-data:begin -->\s*```bash\n(.*?)```\s*<!-- own-data:end -->", text, re.S
    )
    assert m, "docs/OWN_DATA.md has no ```bash block between <!-- own-data:begin/end --> markers"
    return m.group(1)


def test_readme_own_data_section_runs_as_written(tmp_path):
    """Train, evaluate and run the demo on a small COCO folder with the documented commands;
    only the variables they use (DATA, NUM_CLASSES, ITERS, OUT) are set, in the environment."""
    commands = readme_own_data_commands()
    assert "register_coco_instances" in open(OWN_DATA).read()
    data = make_coco_folder(str(tmp_path / "my_data"))
    out = str(tmp_path / "output" / "my_data")
    env = dict(
        os.environ,
        DATA=data,
        NUM_CLASSES=str(len(CATEGORIES)),
        ITERS=str(README_ITERS),
        OUT=out,
        PATH=os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", ""),
        POLAR_REFINE_CACHE=str(tmp_path / "cache"),
    )
    proc = subprocess.run(
        ["bash", "-e", "-c", commands],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, (proc.stdout[-3000:], proc.stderr[-3000:])

    assert os.path.isfile(os.path.join(out, "model_final.pth"))
    with open(os.path.join(out, "metrics.json")) as f:
        steps = [json.loads(line) for line in f]
    assert max(r["iteration"] for r in steps if "total_loss" in r) == README_ITERS - 1
    # evaluation: COCO results with the dataset's own (non-contiguous) category ids
    results_json = os.path.join(out, "inference", "my_val", "coco_instances_results.json")
    with open(results_json) as f:
        results = json.load(f)
    assert results, "no detection at all: train longer (README_ITERS)"
    assert {r["category_id"] for r in results} <= set(CATEGORIES)
    assert {r["image_id"] for r in results} <= set(range(1, 6))
    assert all(isinstance(r["segmentation"], dict) for r in results)  # RLE from polygons
    # the demo: one drawing per input image, the image without annotations included
    vis = sorted(os.listdir(os.path.join(out, "vis")))
    assert vis == sorted(os.listdir(os.path.join(data, "images")))
    assert cv2.imread(os.path.join(out, "vis", vis[0])) is not None


def test_num_classes_mismatch_is_named(tmp_path):
    """A NUM_CLASSES that is not the json's category count stops train_net.py with the fix."""
    from detectron2.engine import default_argument_parser

    import train_net
    from polar_refine.data.user_datasets import add_dataset_arguments

    data = make_coco_folder(str(tmp_path / "d"), num_images=1)
    argv = ["--config-file", os.path.join(ROOT, "configs/Shapes/polar_refine_tiny.yaml")]
    argv += ["--coco-dataset", "mismatch_train", f"{data}/train.json", f"{data}/images"]
    argv += ["DATASETS.TRAIN", "('mismatch_train',)", "MODEL.POLAR_REFINE.NUM_CLASSES", "12"]
    argv += ["OUTPUT_DIR", str(tmp_path / "out")]
    args = add_dataset_arguments(default_argument_parser()).parse_args(argv)
    with pytest.raises(ValueError, match="NUM_CLASSES 3"):
        train_net.main(args)


def test_register_coco_folder_metadata(tmp_path):
    """Class names and the id map are known at registration, in detectron2's order."""
    from detectron2.data import DatasetCatalog, MetadataCatalog

    from polar_refine.data.user_datasets import register_coco_folder

    data = make_coco_folder(str(tmp_path / "d"), num_images=2)
    meta = register_coco_folder("own_data_meta", f"{data}/train.json", f"{data}/images")
    assert meta.thing_classes == ["disc", "block", "wedge"]
    assert meta.thing_dataset_id_to_contiguous_id == {3: 0, 7: 1, 12: 2}
    assert meta.evaluator_type == "coco"
    dicts = DatasetCatalog.get("own_data_meta")  # load_coco_json agrees with the metadata
    assert len(dicts) == 3
    assert {a["category_id"] for d in dicts for a in d["annotations"]} == {0, 1, 2}
    assert sum(a.get("iscrowd", 0) for d in dicts for a in d["annotations"]) == 1
    assert MetadataCatalog.get("own_data_meta").thing_classes == ["disc", "block", "wedge"]
    register_coco_folder("own_data_meta", f"{data}/val.json", f"{data}/images")  # re-register
    with pytest.raises(ValueError, match="already registered"):
        register_coco_folder("coco_2017_val", f"{data}/val.json", f"{data}/images")


# coco128-seg images with one large object each (zebra 24, airplane 5, bed 65, toilet 70: real
# COCO ids, beyond the 80 contiguous ones for the last two)
COCO128_IMAGES = (34, 81, 514, 636)
COCO128_ITERS = 30


@pytest.mark.skipif(
    not os.path.isfile(os.path.join(SHARED_DATA, "coco128-seg", "annotations.json")),
    reason="../shared/data/coco128-seg is not available",
)
def test_tiny_config_on_coco128_reaches_ap_above_zero(tmp_path, tmp_cache, monkeypatch):
    """The tiny config (80 classes) trained briefly on 4 coco128_seg images, evaluated on them by
    `PolarCOCOEvaluator`: AP > 0, and the results carry the real COCO category ids."""
    from conftest import tiny_cfg
    from detectron2.data import DatasetCatalog, MetadataCatalog
    from detectron2.data.datasets.builtin_meta import COCO_CATEGORIES

    from polar_refine.engine import PolarRefineTrainer

    monkeypatch.setenv("DETECTRON2_DATASETS", SHARED_DATA)
    name = "coco128_seg_4_large"
    if name not in DatasetCatalog.list():
        DatasetCatalog.register(
            name,
            lambda: [
                d for d in DatasetCatalog.get("coco128_seg") if d["image_id"] in COCO128_IMAGES
            ],
        )
    full = MetadataCatalog.get("coco128_seg")
    MetadataCatalog.get(name).set(  # no json_file: the evaluator writes the subset's COCO json
        thing_classes=list(full.thing_classes),
        thing_dataset_id_to_contiguous_id=dict(full.thing_dataset_id_to_contiguous_id),
        evaluator_type="polar_coco",
    )
    out = str(tmp_path / "coco128")
    cfg = tiny_cfg(
        MODEL__POLAR_REFINE__NUM_CLASSES="80",
        DATASETS__TRAIN=f"('{name}',)",
        DATASETS__TEST=f"('{name}',)",
        INPUT__MIN_SIZE_TRAIN="(224,)",
        INPUT__MAX_SIZE_TRAIN="400",
        INPUT__MIN_SIZE_TEST="224",
        INPUT__MAX_SIZE_TEST="400",
        INPUT__RANDOM_FLIP="none",
        SOLVER__IMS_PER_BATCH="4",
        SOLVER__WARMUP_ITERS="10",
        SOLVER__STEPS="(1000,)",
        SOLVER__MAX_ITER=str(COCO128_ITERS),
        SOLVER__CHECKPOINT_PERIOD="100000",
        DATALOADER__NUM_WORKERS="0",
        SEED="0",
        OUTPUT_DIR=out,
    )
    trainer = PolarRefineTrainer(cfg)
    trainer.resume_or_load(resume=False)
    trainer.train()  # evaluates after the last iteration, into metrics.json
    with open(os.path.join(out, "metrics.json")) as f:
        final = [json.loads(line) for line in f][-1]
    assert final["segm/AP"] > 0 and final["bbox/AP"] > 0, final

    coco_ids = {c["id"] for c in COCO_CATEGORIES if c["isthing"]}
    with open(os.path.join(out, "inference", name, "coco_instances_results.json")) as f:
        results = json.load(f)
    assert results and {r["category_id"] for r in results} <= coco_ids
    assert {r["image_id"] for r in results} <= set(COCO128_IMAGES)
    gt_json = os.path.join(out, "inference", name, f"{name}_coco_format.json")
    with open(gt_json) as f:
        gt = json.load(f)
    assert {c["id"] for c in gt["categories"]} == coco_ids  # 1..90 with gaps, not 0..79
    assert {a["category_id"] for a in gt["annotations"]} == {24, 5, 65, 70}


def test_python_config_on_own_data(tmp_path, tmp_cache):
    """The ``.py`` variant of docs/OWN_DATA.md: ``--coco-dataset`` with a LazyConfig config and
    ``model.num_classes``; a wrong class count is named, a right one trains and evaluates."""
    from detectron2.engine import default_argument_parser

    import train_net
    from polar_refine.data.user_datasets import add_dataset_arguments

    data = make_coco_folder(str(tmp_path / "d"), num_images=2)
    argv = ["--config-file", os.path.join(ROOT, "configs/Shapes/polar_refine_tiny.py")]
    argv += ["--coco-dataset", "py_train", f"{data}/train.json", f"{data}/images"]
    argv += ["--coco-dataset", "py_val", f"{data}/val.json", f"{data}/images"]
    argv += ["dataloader.train.dataset.names=py_train", "dataloader.test.dataset.names=py_val"]
    argv += ["dataloader.train.total_batch_size=2", "dataloader.train.num_workers=0"]
    argv += ["train.max_iter=2", f"train.output_dir={tmp_path / 'out'}"]
    parser = add_dataset_arguments(default_argument_parser())
    with pytest.raises(ValueError, match=r"model.num_classes=3"):
        train_net.main(parser.parse_args(argv))  # the tiny config has 6 classes
    res = train_net.main(parser.parse_args(argv + ["model.num_classes=3"]))
    assert set(res) >= {"segm", "bbox"}
