"""Export to ONNX and TorchScript, and the ONNX Runtime predictor, on the CPU.

One tiny model (the Shapes config, refine on) is trained for a few Adam steps on two synthetic
images, saved as a checkpoint and exported by ``export_model.py`` (the user's entry point) on a
sample image. The exported files are then run on images of other sizes and compared with eager
PyTorch: same detections, polygons within 0.5 px, scores within 1e-4.
"""

import json
import os
import subprocess
import sys

import cv2
import numpy as np
import pytest
import torch
from conftest import ROOT, circle, draw_image, make_instances, tiny_cfg

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from detectron2.modeling import build_model  # noqa: E402
from detectron2.utils.events import EventStorage  # noqa: E402

import export_model  # noqa: E402
from polar_refine.export import (  # noqa: E402
    OUTPUT_NAMES,
    ExportedModelError,
    ONNXPredictor,
)

TRAIN_A = [[circle(48, 52, 26)], [[90, 20, 120, 24, 116, 60, 86, 56]]]
TRAIN_B = [[[20, 20, 70, 20, 70, 40, 40, 40, 40, 70, 20, 70]], [circle(95, 90, 20, n=5)]]
# two test images of different sizes (and different from the 192 x 192 export sample)
TEST_IMAGES = {
    "b": (150, 170, [[circle(60, 70, 30)], [[100, 20, 140, 25, 135, 70, 95, 60]]], 3),
    "c": (181, 131, [[circle(50, 50, 20)], [circle(80, 130, 25, n=5)]], 4),
}
# blank images: the pixel mean everywhere (no edges, not even at the padding)
GRAY = (104, 116, 124)  # BGR, about detectron2's PIXEL_MEAN
BLANK = torch.tensor(GRAY, dtype=torch.float32)[:, None, None].repeat(1, 120, 140)
BLANK_BGR = np.full((90, 100, 3), GRAY, np.uint8)  # the predictor resizes it to 192 x 213
TRAIN_STEPS = 12
# Two convs per head tower, not the shapes config's four: the fixture's 12 Adam steps separate the
# shapes from the blanks with two (with four the blanks still scored higher after 24 steps). The
# four-conv graph is exported in test_other_rows_export_and_match_eager (random weights).
OPTS = ["MODEL.POLAR_REFINE.CONTOUR.ENABLED", "False", "MODEL.POLAR_REFINE.NUM_CONVS", "2"]


def _train(model, steps):
    """A few Adam steps on two synthetic images and a blank one, so that the model detects
    shapes and not blanks."""
    blank = torch.tensor(GRAY, dtype=torch.float32)[:, None, None].repeat(1, 96, 96)
    batch = [
        {
            "image": draw_image(128, 128, polys, seed),
            "instances": make_instances(128, 128, polys, c),
        }
        for polys, seed, c in ((TRAIN_A, 0, [0, 1]), (TRAIN_B, 1, [2, 3]))
    ]
    batch.append({"image": blank, "instances": make_instances(96, 96, [], [])})
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    model.train()
    with EventStorage() as storage:
        for _ in range(steps):
            losses = model(batch)
            opt.zero_grad()
            sum(losses.values()).backward()
            opt.step()
            storage.step()
    return model.eval()


def _max_score(model, image):
    """The best sqrt(class x centre probability) of any location (the score the threshold
    reads)."""
    with torch.no_grad():
        images = model.preprocess_image([{"image": image}])
        feats = model.backbone(images.tensor)
        cls, ctr, _ = model.head([feats[f] for f in model.head_in_features])
    return max((c.sigmoid() * t.sigmoid()).sqrt().max().item() for c, t in zip(cls, ctr))


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """The trained eager model, its checkpoint and its ONNX / TorchScript exports.

    The score threshold is halfway between the blank images' best score and the test images'
    (checked apart), so the blanks have no detection at all (the empty path) while the shape
    images have detections.
    """
    torch.manual_seed(0)
    tmp = tmp_path_factory.mktemp("export")
    cfg = tiny_cfg()
    cfg.merge_from_list(OPTS)  # the same overrides the export commands get
    model = _train(build_model(cfg), TRAIN_STEPS)
    images = {k: draw_image(h, w, p, s) for k, (h, w, p, s) in TEST_IMAGES.items()}
    blanks = (BLANK, torch.tensor(GRAY, dtype=torch.float32)[:, None, None].repeat(1, 192, 213))
    blank_best = max(_max_score(model, b) for b in blanks)
    shapes_best = min(_max_score(model, x) for x in images.values())
    assert blank_best + 0.1 < shapes_best, (blank_best, shapes_best)
    thresh = round((blank_best + shapes_best) / 2, 4)
    model.test_score_thresh = thresh
    weights = str(tmp / "model.pth")
    torch.save({"model": model.state_dict()}, weights)
    sample = str(tmp / "sample.png")
    img = draw_image(128, 128, TRAIN_A, 7).permute(1, 2, 0).numpy().astype(np.uint8)
    cv2.imwrite(sample, img)
    paths = {}
    for fmt in ("onnx", "torchscript"):
        out = tmp / fmt
        args = ["--config-file", os.path.join(ROOT, "configs/Shapes/polar_refine_tiny.yaml")]
        args += ["--format", fmt, "--output", str(out), "--sample-image", sample]
        args += ["MODEL.WEIGHTS", weights, "MODEL.POLAR_REFINE.SCORE_THRESH_TEST", str(thresh)]
        assert export_model.main(args + OPTS) == 0
        paths[fmt] = str(out / ("model.onnx" if fmt == "onnx" else "model.ts"))
    images["blank"] = BLANK
    return {"model": model, "paths": paths, "images": images, "tmp": tmp, "thresh": thresh}


def _eager(model, image):
    """Eager outputs in the graph's order: polygons, scores, classes, boxes, coarse polygons."""
    with torch.no_grad():
        inst = model([{"image": image}])[0]["instances"]
    boxes = inst.pred_boxes.tensor
    return [inst.pred_polygons, inst.scores, inst.pred_classes, boxes, inst.pred_coarse_polygons]


def _assert_same_detections(got, want):
    """Same detections in the same order, but for the order among exactly tied scores (the
    graph's sort and eager's may break ties differently): each detection is matched to one of
    the same class whose score is within 1e-4 and whose polygons are within 0.5 px."""
    got = [torch.as_tensor(np.asarray(x)) for x in got]
    assert [tuple(g.shape) for g in got] == [tuple(w.shape) for w in want]
    polygons, scores, classes, boxes, coarse = got
    assert (scores - want[1]).abs().max().item() <= 1e-4 if len(scores) else True
    unmatched = set(range(len(scores)))
    for i in range(len(scores)):
        match = [
            j
            for j in unmatched
            if classes[i] == want[2][j]
            and abs(float(scores[i] - want[1][j])) <= 1e-4
            and (polygons[i] - want[0][j]).abs().max() <= 0.5
            and (coarse[i] - want[4][j]).abs().max() <= 0.5
            and (boxes[i] - want[3][j]).abs().max() <= 0.5
        ]
        assert match, f"detection {i} has no counterpart"
        unmatched.discard(min(match, key=lambda j: abs(j - i)))


def test_onnx_file_is_checked_dynamic_and_described(exported):
    proto = onnx.load(exported["paths"]["onnx"])
    onnx.checker.check_model(proto, full_check=True)
    assert max(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")) >= 17
    dims = proto.graph.input[0].type.tensor_type.shape.dim
    assert [d.dim_param or d.dim_value for d in dims] == [3, "height", "width"]
    assert [o.name for o in proto.graph.output] == list(OUTPUT_NAMES)
    for out in proto.graph.output:
        assert out.type.tensor_type.shape.dim[0].dim_param == "detections"
    meta = json.loads({p.key: p.value for p in proto.metadata_props}["polar_refine"])
    assert meta["min_size_test"] == 192 and meta["input_format"] == "BGR"
    assert meta["score_thresh_test"] == exported["thresh"]


def test_onnx_matches_eager_on_other_sizes_and_bakes_nothing(exported):
    sess = ort.InferenceSession(exported["paths"]["onnx"], providers=["CPUExecutionProvider"])
    outs = {}
    for key in TEST_IMAGES:
        image = exported["images"][key]
        want = _eager(exported["model"], image)
        assert len(want[1]) > 0, "the trained model should detect the shapes"
        outs[key] = sess.run(list(OUTPUT_NAMES), {"image": image.numpy()})
        _assert_same_detections(outs[key], want)
    b, c = outs["b"], outs["c"]  # different inputs, different outputs: nothing is a constant
    assert b[0].shape != c[0].shape or not np.allclose(b[0], c[0])
    assert b[0][..., 0].max() <= 170 and c[0][..., 1].max() > 150  # each at its own size


def test_torchscript_loads_without_polar_refine_and_matches_eager(exported):
    tmp = exported["tmp"]
    torch.save({k: exported["images"][k] for k in ("b", "c", "blank")}, tmp / "inputs.pt")
    code = (
        "import sys, torch, torchvision\n"
        f"m = torch.jit.load({exported['paths']['torchscript']!r})\n"
        f"x = torch.load({str(tmp / 'inputs.pt')!r})\n"
        "assert not any(n.startswith(('polar_refine', 'detectron2')) for n in sys.modules)\n"
        f"torch.save({{k: [t for t in m(v)] for k, v in x.items()}}, {str(tmp / 'ts.pt')!r})\n"
    )
    env = dict(os.environ, PYTHONPATH="", OMP_NUM_THREADS="2")
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=str(tmp), env=env, capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    outs = torch.load(tmp / "ts.pt")
    for key in ("b", "c"):
        _assert_same_detections(outs[key], _eager(exported["model"], exported["images"][key]))
    assert [tuple(t.shape) for t in outs["blank"]] == [(0, 36, 2), (0,), (0,), (0, 4), (0, 36, 2)]


def test_image_without_detections_gives_empty_outputs(exported):
    assert len(_eager(exported["model"], BLANK)[1]) == 0
    sess = ort.InferenceSession(exported["paths"]["onnx"], providers=["CPUExecutionProvider"])
    out = sess.run(list(OUTPUT_NAMES), {"image": BLANK.numpy()})
    assert [o.shape for o in out] == [(0, 36, 2), (0,), (0,), (0, 4), (0, 36, 2)]
    pred = ONNXPredictor(exported["paths"]["onnx"])
    inst = pred(BLANK_BGR)["instances"]
    assert len(inst) == 0 and inst.pred_masks.shape == (0, 90, 100)


def test_predictor_matches_the_eager_predictor_with_masks(exported):
    """BGR image in, at its own size out (resize before the graph, masks after it)."""
    from detectron2.data import transforms as T

    model, pred = exported["model"], ONNXPredictor(exported["paths"]["onnx"])
    bgr = exported["images"]["c"].permute(1, 2, 0).numpy().astype(np.uint8)
    got = pred(bgr)["instances"]
    resized = T.ResizeShortestEdge([192, 192], 320).get_transform(bgr).apply_image(bgr)
    with torch.no_grad():
        image = torch.as_tensor(resized.astype("float32").transpose(2, 0, 1))
        want = model([{"image": image, "height": 181, "width": 131}])[0]["instances"]
    assert got.image_size == want.image_size == (181, 131) and len(got) == len(want) > 0
    assert torch.equal(got.pred_classes, want.pred_classes)
    assert (got.pred_polygons - want.pred_polygons).abs().max() <= 0.5
    assert (got.pred_boxes.tensor - want.pred_boxes.tensor).abs().max() <= 0.5
    differ = (got.pred_masks != want.pred_masks).sum().item()
    assert differ <= 0.001 * want.pred_masks.numel()


@pytest.mark.parametrize(
    "image,needle",
    [
        (np.zeros((40, 50), np.uint8), "shape (40, 50)"),
        (np.zeros((40, 50, 4), np.uint8), "shape (40, 50, 4)"),
        (np.zeros((0, 50, 3), np.uint8), "shape (0, 50, 3)"),
        ([[0, 1, 2]], "got list"),
        (np.full((40, 50, 3), np.nan, np.float32), "NaN"),
        (np.zeros((40, 50, 3), object), "dtype object"),
    ],
)
def test_predictor_rejects_bad_images_in_one_line(exported, image, needle):
    pred = ONNXPredictor(exported["paths"]["onnx"])
    with pytest.raises(ExportedModelError) as e:
        pred(image)
    assert needle in str(e.value) and "\n" not in str(e.value)


def test_predictor_rejects_bad_files_and_inputs_in_one_line(exported, tmp_path):
    corrupt = tmp_path / "corrupt.onnx"
    corrupt.write_bytes(b"\x08\x07not an onnx model" * 10)
    for path, needle in ((str(corrupt), "cannot load"), (str(tmp_path / "no.onnx"), "no such")):
        with pytest.raises(ExportedModelError) as e:
            ONNXPredictor(path)
        assert needle in str(e.value) and "\n" not in str(e.value)
    pred = ONNXPredictor(exported["paths"]["onnx"])
    with pytest.raises(ExportedModelError) as e:  # what ONNX Runtime itself refuses
        pred.run_network(np.zeros((1, 3, 64, 64), np.float32))
    assert "ONNX Runtime failed" in str(e.value) and "\n" not in str(e.value)


def test_demo_runs_the_onnx_model_on_images_video_and_webcam(exported, tmp_path):
    from demo import demo

    images = tmp_path / "images"
    images.mkdir()
    for key in ("b", "c"):
        img = exported["images"][key].permute(1, 2, 0).numpy().astype(np.uint8)
        cv2.imwrite(str(images / f"{key}.png"), img)
    (images / "broken.jpg").write_bytes(b"not an image")
    video = str(tmp_path / "clip.mp4")
    writer = cv2.VideoWriter(video, cv2.VideoWriter_fourcc(*"mp4v"), 5.0, (96, 80))
    for i in range(4):
        writer.write(np.full((80, 96, 3), 40 * i, np.uint8))
    writer.release()
    onnx_args = ["--onnx", exported["paths"]["onnx"], "--confidence-threshold", "0.0"]
    # a broken file is reported and the others are drawn (status 1, as with the eager model)
    assert demo.main(onnx_args + ["--input", str(images), "--output", str(tmp_path / "vis")]) == 1
    assert sorted(os.listdir(tmp_path / "vis")) == ["b.png", "c.png"]
    for source in ("--video-input", "--webcam"):
        out = str(tmp_path / f"{source[2:]}.mp4")
        assert demo.main(onnx_args + [source, video, "--output", out]) == 0
        cap = cv2.VideoCapture(out)
        assert int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == 4
        cap.release()
    corrupt = tmp_path / "bad.onnx"
    corrupt.write_bytes(b"garbage")
    args = ["--onnx", str(corrupt), "--input", str(images), "--output", str(tmp_path / "x")]
    assert demo.main(args) == 2


@pytest.mark.parametrize(
    "overrides",
    [
        {"MODEL__POLAR_REFINE__REFINE__ENABLED": False},
        {"MODEL__POLAR_REFINE__REFINE__NUM_STAGES": 2},
        {"MODEL__POLAR_REFINE__SCORE_FROM": "covered"},
        {"MODEL__POLAR_REFINE__DEFORM__ENABLED": True},
    ],
    ids=["coarse_only", "two_refine_stages", "covered_score", "deform"],
)
def test_other_rows_export_and_match_eager(tmp_path, overrides):
    """PolarMask (no refine), a 2-stage refine, the covered-locations score and the deformation
    stages export too (random weights, threshold 0)."""
    from polar_refine.export import export_onnx

    torch.manual_seed(0)
    model = build_model(tiny_cfg(MODEL__POLAR_REFINE__SCORE_THRESH_TEST=0.0, **overrides)).eval()
    if model.deformer is not None:  # its offsets start at zero: move the points for real
        for stage in model.deformer.stages:
            torch.nn.init.normal_(stage.offset.weight, std=0.2)
    path = export_onnx(model, draw_image(96, 128, TRAIN_A), str(tmp_path / "m.onnx"), {})
    sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    image = draw_image(130, 90, TRAIN_B, 2)
    _assert_same_detections(
        sess.run(list(OUTPUT_NAMES), {"image": image.numpy()}), _eager(model, image)
    )


def test_int8_model_matches_fp32_on_two_sizes(exported, tmp_path):
    """int8 static quantisation (convolutions only, calibrated on training-like images): on two
    images of other sizes than the calibration ones, every fp32 detection scoring at least 0.1
    above the threshold has an int8 one of the same class with its score within 0.1, each
    image's counts differ by at most 1, and so may its matches: all of an image's detections
    but one have their polygon within 2 px (the tolerance docs/EXPORT.md states). Near-equal
    candidates of neighbouring locations can swap places in NMS, so that one may be a
    neighbour's polygon, a few pixels off everywhere."""
    from polar_refine.export.quantize import quantize_int8

    calib = [
        draw_image(128, 128, TRAIN_A, s).permute(1, 2, 0).numpy().astype(np.uint8) for s in range(8)
    ] + [
        draw_image(128, 128, TRAIN_B, s).permute(1, 2, 0).numpy().astype(np.uint8) for s in range(8)
    ]
    path = quantize_int8(exported["paths"]["onnx"], str(tmp_path / "int8.onnx"), calib)
    fp32 = ONNXPredictor(exported["paths"]["onnx"])
    int8 = ONNXPredictor(path)
    assert int8.metadata["precision"] == "int8"
    worst_score, errors = 0.0, []
    for key in ("b", "c"):
        image = exported["images"][key].permute(1, 2, 0).numpy().astype(np.uint8)
        a = fp32(image)["instances"]
        b = int8(image)["instances"]
        assert len(a) > 0 and abs(len(a) - len(b)) <= 1, (len(a), len(b))
        # a detection within the score tolerance of the threshold may fall under it in int8
        errors.append([])
        for i in (a.scores >= exported["thresh"] + 0.1).nonzero().flatten().tolist():
            same = (b.pred_classes == a.pred_classes[i]).nonzero().flatten()
            assert len(same), f"no int8 detection of class {int(a.pred_classes[i])}"
            err = (b.pred_polygons[same] - a.pred_polygons[i]).abs().amax((1, 2))
            j = same[err.argmin()]
            errors[-1].append(float(err.min()))
            worst_score = max(worst_score, float((b.scores[j] - a.scores[i]).abs()))
    worst_poly = max(sorted(e)[-2] if len(e) > 1 else 0.0 for e in errors)
    print(f"int8 vs fp32: polygons {errors} px, worst score {worst_score:.3f}")
    assert worst_poly <= 2.0 and worst_score <= 0.1


def test_export_model_writes_the_int8_copy(exported, tmp_path):
    """``export_model.py --int8 N`` writes model_int8.onnx beside model.onnx, calibrated on
    DATASETS.TRAIN's first N images, that `ONNXPredictor` runs; with TorchScript it is a
    one-line error."""
    tmp = exported["tmp"]
    args = ["--config-file", os.path.join(ROOT, "configs/Shapes/polar_refine_tiny.yaml")]
    args += ["--sample-image", str(tmp / "sample.png"), "--int8", "4"]
    opts = ["MODEL.WEIGHTS", str(tmp / "model.pth"), *OPTS]
    assert export_model.main(args + ["--output", str(tmp_path)] + opts) == 0
    int8 = ONNXPredictor(str(tmp_path / "model_int8.onnx"))
    assert int8.metadata["precision"] == "int8"
    assert (tmp_path / "model.onnx").is_file()
    image = exported["images"]["b"].permute(1, 2, 0).numpy().astype(np.uint8)
    assert len(int8(image)["instances"]) > 0
    bad = args + ["--format", "torchscript", "--output", str(tmp_path / "ts")] + opts
    assert export_model.main(bad) == 1
