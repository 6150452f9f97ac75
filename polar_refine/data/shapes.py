# Copyright (c) 2026 The polar_refine Authors. Licensed under the Apache License 2.0 (see LICENSE).
"""A deterministic synthetic instance-segmentation dataset of coloured shapes.

Every image is ``H x W`` RGB (192 x 192 by default): a textured background (gradient, smooth
noise and a few random lines) under 1..``max_instances`` filled shapes of the classes in
`SHAPE_CLASSES`, drawn one after another so that later shapes occlude earlier ones. Two of the
classes are concave: the 5-point ``star`` and the ``c_shape`` (a thick circular arc whose area
centroid lies in its opening, i.e. outside the shape).

Annotations are written in COCO format. Coordinates use COCO's pixel-edge convention: pixel
``(i, j)`` (row ``i``, column ``j``) is the square ``[j, j + 1] x [i, i + 1]``, its centre is
``(j + 0.5, i + 0.5)``. An instance's ``segmentation`` is traced from its *visible* mask (its own
mask minus the masks drawn after it), one polygon per connected part, so that pycocotools
rasterises the polygons back to exactly the visible mask (see `mask_to_polygons`).

The generator is a pure function of its arguments: the same call writes the same json bytes.
`ensure_shapes` builds a named split once into a cache folder and returns its paths.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from typing import Dict, List, Optional, Sequence, Tuple

import cv2
import numpy as np

__all__ = [
    "GENERATOR_VERSION",
    "SHAPE_CLASSES",
    "SHAPES_SPLITS",
    "shape_polygon",
    "rasterize_polygon",
    "mask_to_polygons",
    "polygons_area",
    "visible_masks",
    "annotate_instances",
    "generate_image",
    "generate_shapes",
    "shapes_cache_root",
    "ensure_shapes",
]

logger = logging.getLogger(__name__)

# Bump whenever the output of the generator changes: it is part of the cache folder name.
GENERATOR_VERSION = 1

# Category names; category ``i`` in this tuple has COCO ``category_id`` ``i + 1``.
SHAPE_CLASSES = ("circle", "ellipse", "square", "triangle", "star", "c_shape")

# Named splits: generate_shapes() keyword arguments.
SHAPES_SPLITS: Dict[str, Dict] = {
    "shapes_train": dict(num_images=200, seed=0, image_size=(192, 192), max_instances=6),
    "shapes_val": dict(num_images=50, seed=1, image_size=(192, 192), max_instances=6),
    # A third set from the training distribution, for choosing settings without looking at val.
    "shapes_tune": dict(num_images=50, seed=4, image_size=(192, 192), max_instances=6),
    "shapes_tiny_train": dict(num_images=8, seed=2, image_size=(192, 192), max_instances=6),
    "shapes_tiny_val": dict(num_images=4, seed=3, image_size=(192, 192), max_instances=6),
}

# Instances whose visible area is below this (in pixels) are not annotated.
MIN_VISIBLE_AREA = 20
# The generator rejects a new shape that would leave an earlier one with less than this fraction
# of its own area visible, or with a visible part smaller than _MIN_PART_AREA pixels.
_MIN_VISIBLE_FRACTION = 0.3
_MIN_PART_AREA = 8
# At least this fraction of a shape's area must lie inside the image.
_MIN_INSIDE_FRACTION = 0.6
# Shape "radius" (circumradius; outer radius for the star and the C) range, as a fraction of
# min(H, W): about 11.5 to 61 pixels for 192 x 192 images.
_RADIUS_RANGE = (0.06, 0.32)
# Tries to place one shape (position, size, ...) and to pick its colour before giving up on it.
_PLACE_TRIES = 30
_COLOR_TRIES = 20
# Minimum L2 distance (0..255 RGB) between a shape's colour and what it is drawn over.
_MIN_COLOR_DISTANCE = 90.0
_JPEG_QUALITY = 95


# ------------------------------------------------------------------------------------------------
# Geometry
# ------------------------------------------------------------------------------------------------
def _rotate(points: np.ndarray, angle: float) -> np.ndarray:
    c, s = np.cos(angle), np.sin(angle)
    return points @ np.array([[c, s], [-s, c]])


def _arc(radius: float, start: float, stop: float, num: int) -> np.ndarray:
    t = np.linspace(start, stop, num)
    return np.stack([radius * np.cos(t), radius * np.sin(t)], axis=1)


def shape_polygon(
    kind: str,
    center: Sequence[float],
    radius: float,
    angle: float = 0.0,
    aspect: float = 0.6,
    inner_ratio: float = 0.45,
    sweep: float = 4.7,
) -> np.ndarray:
    """The outline of one shape, a simple polygon.

    Args:
        kind: one of `SHAPE_CLASSES`.
        center: (x, y) of the shape's reference centre (the centre of the circumscribed circle).
        radius: circumradius; outer radius for "star" and "c_shape"; semi-major axis for
            "ellipse".
        angle: rotation in radians.
        aspect: "ellipse" only: semi-minor / semi-major axis.
        inner_ratio: "star": inner / outer vertex radius; "c_shape": inner / outer arc radius.
        sweep: "c_shape" only: the angle (radians) the arc covers; the opening is
            ``2*pi - sweep``.

    Returns:
        (M, 2) float64 vertices (x, y), in the pixel-edge convention of the module docstring.
    """
    if kind == "circle":
        pts = _arc(radius, 0.0, 2 * np.pi, 97)[:-1]
    elif kind == "ellipse":
        pts = _arc(1.0, 0.0, 2 * np.pi, 97)[:-1] * np.array([radius, radius * aspect])
    elif kind == "square":
        pts = _arc(radius, 0.0, 2 * np.pi, 5)[:-1]
    elif kind == "triangle":
        pts = _arc(radius, -np.pi / 2, 3 * np.pi / 2, 4)[:-1]
    elif kind == "star":
        t = -np.pi / 2 + np.arange(10) * (np.pi / 5)
        r = np.where(np.arange(10) % 2 == 0, radius, radius * inner_ratio)
        pts = np.stack([r * np.cos(t), r * np.sin(t)], axis=1)
    elif kind == "c_shape":
        # Opening centred on +x (before rotation): outer arc one way, inner arc back.
        half_gap = np.pi - sweep / 2
        outer = _arc(radius, half_gap, 2 * np.pi - half_gap, 65)
        inner = _arc(radius * inner_ratio, 2 * np.pi - half_gap, half_gap, 65)
        pts = np.concatenate([outer, inner], axis=0)
    else:
        raise ValueError(f"Unknown shape kind {kind!r}; expected one of {SHAPE_CLASSES}")
    return _rotate(pts, angle) + np.asarray(center, dtype=np.float64)


def rasterize_polygon(polygon: np.ndarray, image_size: Tuple[int, int]) -> np.ndarray:
    """Fill a polygon given in the pixel-edge convention (a pixel is set if its centre is inside).

    Args:
        polygon: (M, 2) vertices (x, y).
        image_size: (H, W).

    Returns:
        (H, W) uint8 mask of 0/1.
    """
    h, w = image_size
    mask = np.zeros((h, w), dtype=np.uint8)
    shift = 8
    # cv2 puts pixel centres at integer coordinates.
    pts = np.round((np.asarray(polygon, dtype=np.float64) - 0.5) * (1 << shift)).astype(np.int32)
    cv2.fillPoly(mask, [pts.reshape(-1, 1, 2)], 1, lineType=cv2.LINE_8, shift=shift)
    return mask


def mask_to_polygons(mask: np.ndarray) -> List[List[float]]:
    """Trace the outer boundary of each connected part (8-connectivity) of a binary mask.

    The mask is upsampled 2x (nearest) and traced with ``cv2.findContours(RETR_EXTERNAL,
    CHAIN_APPROX_SIMPLE)``; a contour point ``p`` of the upsampled mask maps back to
    ``(p + 0.5) / 2``. The polygons thus run a quarter pixel inside the mask's pixel edges, through
    no pixel centre, and pycocotools (or detectron2's ``polygons_to_bitmask``) rasterises them back
    to exactly the mask, for any shape, including 1-pixel-wide parts. (Tracing the mask itself
    and adding 0.5 puts the polygon through the centres of the boundary pixels, which rasterise
    ambiguously: a radius-5 disk comes back with IoU 0.81.) Holes are not represented.

    Args:
        mask: (H, W) array, nonzero = foreground.

    Returns:
        list[list[float]]: one flat polygon ``[x0, y0, x1, y1, ...]`` (at least 3 points) per
        connected part, in the pixel-edge convention; empty for an empty mask.
    """
    m = (np.asarray(mask) != 0).astype(np.uint8)
    up = np.repeat(np.repeat(m, 2, axis=0), 2, axis=1)
    contours, _ = cv2.findContours(up, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    polygons = []
    for c in contours:
        pts = (c.reshape(-1, 2).astype(np.float64) + 0.5) / 2
        if len(pts) >= 3:
            polygons.append([float(v) for v in pts.ravel()])
    return polygons


def polygons_area(polygons: Sequence[Sequence[float]]) -> float:
    """Sum of the (shoelace) areas of polygons, each flat ``[x0, y0, x1, y1, ...]`` or (M, 2)."""
    total = 0.0
    for poly in polygons:
        p = np.asarray(poly, dtype=np.float64).reshape(-1, 2)
        x, y = p[:, 0], p[:, 1]
        total += 0.5 * abs(float(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))))
    return total


def _has_holes(mask: np.ndarray) -> bool:
    _, hierarchy = cv2.findContours(mask.astype(np.uint8), cv2.RETR_CCOMP, cv2.CHAIN_APPROX_SIMPLE)
    return hierarchy is not None and bool((hierarchy[0][:, 3] >= 0).any())


def _smallest_part(mask: np.ndarray) -> int:
    """Pixel count of the smallest 8-connected part of a mask (0 if the mask is empty)."""
    n, _, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
    return int(stats[1:, cv2.CC_STAT_AREA].min()) if n > 1 else 0


def visible_masks(
    masks: Sequence[np.ndarray], min_area: int = MIN_VISIBLE_AREA
) -> List[Optional[np.ndarray]]:
    """Visible part of each of N masks drawn in order (later ones on top).

    Args:
        masks: N (H, W) masks in drawing order, nonzero = foreground.
        min_area: a visible part smaller than this many pixels is replaced by None.

    Returns:
        list of N (H, W) bool masks ``masks[i] & ~(masks[i+1] | ... | masks[N-1])``, or None.
    """
    out: List[Optional[np.ndarray]] = [None] * len(masks)
    covered = None
    for i in range(len(masks) - 1, -1, -1):
        m = np.asarray(masks[i]) != 0
        vis = m if covered is None else m & ~covered
        covered = m if covered is None else covered | m
        out[i] = vis if int(vis.sum()) >= min_area else None
    return out


def annotate_instances(
    masks: Sequence[np.ndarray],
    category_ids: Sequence[int],
    min_area: int = MIN_VISIBLE_AREA,
) -> Tuple[List[Dict], List[np.ndarray]]:
    """COCO annotations for N instances drawn in order (later ones occlude earlier ones).

    Args:
        masks: N (H, W) full masks in drawing order.
        category_ids: N COCO category ids.
        min_area: instances with fewer visible pixels are dropped.

    Returns:
        annotations: one dict per kept instance, in drawing order, with "category_id",
            "segmentation" (list of flat polygons, one per visible part, see `mask_to_polygons`),
            "bbox" ([x, y, w, h] pixel-edge box of the visible mask), "area" (total polygon area)
            and "iscrowd" (0). No "id" / "image_id".
        visible: the (H, W) bool visible mask of each kept instance.
    """
    annotations, kept = [], []
    for vis, cat in zip(visible_masks(masks, min_area), category_ids):
        if vis is None:
            continue
        polygons = mask_to_polygons(vis)
        ys, xs = np.nonzero(vis)
        x0, y0 = int(xs.min()), int(ys.min())
        bbox = [x0, y0, int(xs.max()) + 1 - x0, int(ys.max()) + 1 - y0]
        annotations.append(
            {
                "category_id": int(cat),
                "segmentation": polygons,
                "bbox": bbox,
                "area": round(polygons_area(polygons), 4),
                "iscrowd": 0,
            }
        )
        kept.append(vis)
    return annotations, kept


# ------------------------------------------------------------------------------------------------
# Rendering
# ------------------------------------------------------------------------------------------------
def _smooth_noise(rng: np.random.Generator, h: int, w: int, cells: int, channels: int = 3):
    grid = rng.normal(size=(cells, cells, channels)).astype(np.float32)
    out = cv2.resize(grid, (w, h), interpolation=cv2.INTER_CUBIC)
    return out.reshape(h, w, channels)


def _render_background(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """(H, W, 3) float32 RGB in [0, 255]: gradient + smooth noise + a few random lines."""
    c0, c1 = rng.uniform(0, 255, size=(2, 3))
    theta = rng.uniform(0, 2 * np.pi)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    t = xx * np.cos(theta) + yy * np.sin(theta)
    t = (t - t.min()) / max(float(t.max() - t.min()), 1e-6)
    img = c0[None, None] * (1 - t[..., None]) + c1[None, None] * t[..., None]
    img = img + rng.uniform(10, 40) * _smooth_noise(rng, h, w, int(rng.integers(3, 9)))
    img = np.clip(img, 0, 255).astype(np.float32)
    for _ in range(int(rng.integers(1, 6))):
        p0 = (int(rng.integers(0, w)), int(rng.integers(0, h)))
        p1 = (int(rng.integers(0, w)), int(rng.integers(0, h)))
        color = tuple(float(v) for v in rng.uniform(0, 255, size=3))
        cv2.line(img, p0, p1, color, int(rng.integers(1, 4)), lineType=cv2.LINE_AA)
    return img


def _random_shape(rng: np.random.Generator, kind: str, h: int, w: int) -> np.ndarray:
    s = min(h, w)
    lo, hi = _RADIUS_RANGE
    radius = float(np.exp(rng.uniform(np.log(lo * s), np.log(hi * s))))
    margin = 0.3 * radius
    center = (rng.uniform(-margin, w + margin), rng.uniform(-margin, h + margin))
    return shape_polygon(
        kind,
        center,
        radius,
        angle=float(rng.uniform(0, 2 * np.pi)),
        aspect=float(rng.uniform(0.4, 0.75)),
        inner_ratio=float(rng.uniform(0.4, 0.5) if kind == "star" else rng.uniform(0.45, 0.65)),
        sweep=float(np.deg2rad(rng.uniform(240, 300))),
    )


def _try_place(
    mask: np.ndarray, full: List[np.ndarray], visible: List[np.ndarray]
) -> Optional[List[np.ndarray]]:
    """New visible masks of the earlier instances if ``mask`` goes on top, or None to reject."""
    new_visible = []
    for f, v in zip(full, visible):
        if not (v & mask).any():
            new_visible.append(v)
            continue
        nv = v & ~mask
        area = int(nv.sum())
        if area < max(MIN_VISIBLE_AREA, _MIN_VISIBLE_FRACTION * int(f.sum())):
            return None
        if _smallest_part(nv) < _MIN_PART_AREA or _has_holes(nv):
            return None
        new_visible.append(nv)
    return new_visible


def generate_image(
    rng: np.random.Generator, image_size: Tuple[int, int] = (192, 192), max_instances: int = 6
) -> Tuple[np.ndarray, List[Dict]]:
    """Render one image and its annotations.

    A shape is placed only if at least 60% of it is inside the image, it leaves every earlier
    shape with at least 30% of its area (and >= `MIN_VISIBLE_AREA` pixels) visible, without
    visible parts under 8 pixels and without holes (which polygons from external contours could
    not represent). Up to 30 placements are tried per shape, so an image may get fewer shapes.

    Args:
        rng: the only source of randomness.
        image_size: (H, W).
        max_instances: the number of shapes tried is uniform in [1, max_instances].

    Returns:
        image: (H, W, 3) uint8 **BGR** (as cv2 writes it).
        annotations: as `annotate_instances`, in drawing order.
    """
    h, w = image_size
    img = _render_background(rng, h, w)
    bg_mean_src = img.copy()
    full: List[np.ndarray] = []
    visible: List[np.ndarray] = []
    colors: List[np.ndarray] = []
    categories: List[int] = []
    for _ in range(int(rng.integers(1, max_instances + 1))):
        cat = int(rng.integers(len(SHAPE_CLASSES)))
        for _ in range(_PLACE_TRIES):
            poly = _random_shape(rng, SHAPE_CLASSES[cat], h, w)
            mask = rasterize_polygon(poly, image_size).astype(bool)
            area = int(mask.sum())
            if area < max(2 * MIN_VISIBLE_AREA, _MIN_INSIDE_FRACTION * polygons_area([poly])):
                continue  # mostly outside the image
            if _has_holes(mask) or _smallest_part(mask) < _MIN_PART_AREA:
                continue
            new_visible = _try_place(mask, full, visible)
            if new_visible is not None:
                break
        else:
            continue
        # Colour: far from the background under it and from every shape it overlaps.
        refs = [bg_mean_src[mask].mean(axis=0)]
        refs += [c for c, v in zip(colors, visible) if (v & mask).any()]
        for _ in range(_COLOR_TRIES):
            color = rng.uniform(0, 255, size=3)
            if min(np.linalg.norm(color - r) for r in refs) >= _MIN_COLOR_DISTANCE:
                break
        texture = rng.uniform(5, 20) * _smooth_noise(rng, h, w, int(rng.integers(2, 6)))
        img[mask] = np.clip(color[None] + texture[mask], 0, 255)
        visible = new_visible + [mask]
        full.append(mask)
        colors.append(color)
        categories.append(cat + 1)
    img = img + rng.normal(0, rng.uniform(2, 8), size=img.shape)
    image = np.clip(np.round(img), 0, 255).astype(np.uint8)[..., ::-1].copy()
    annotations, _ = annotate_instances(full, categories)
    return image, annotations


def generate_shapes(
    out_dir: str,
    num_images: int,
    image_size: Tuple[int, int] = (192, 192),
    seed: int = 0,
    max_instances: int = 6,
) -> str:
    """Write a synthetic shapes dataset in COCO format.

    Writes ``out_dir/images/{image_id:06d}.jpg`` and ``out_dir/annotations.json``. Image ``i``
    (0-based) is drawn from ``np.random.default_rng([seed, i])`` alone, so the output is a pure
    function of the arguments (and of `GENERATOR_VERSION`).

    The json has "info", "images" (``id`` from 1, ``file_name`` relative to ``out_dir/images``,
    ``height``, ``width``), "annotations" (``id`` from 1, ``image_id``, ``category_id`` from 1,
    ``segmentation`` as a list of flat polygons, ``bbox`` [x, y, w, h], ``area``, ``iscrowd`` 0)
    and "categories" (``id``, ``name``, ``supercategory``), see `SHAPE_CLASSES`.

    Args:
        out_dir: output folder, created if needed.
        num_images: number of images.
        image_size: (H, W).
        seed: dataset seed.
        max_instances: at most this many shapes per image.

    Returns:
        str: path of the json file.
    """
    h, w = (int(v) for v in image_size)
    image_dir = os.path.join(out_dir, "images")
    os.makedirs(image_dir, exist_ok=True)
    images, annotations = [], []
    for i in range(num_images):
        rng = np.random.default_rng([int(seed), i])
        image, anns = generate_image(rng, (h, w), max_instances)
        image_id = i + 1
        file_name = f"{image_id:06d}.jpg"
        ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, _JPEG_QUALITY])
        if not ok:
            raise RuntimeError(f"cv2.imencode failed for image {image_id}")
        with open(os.path.join(image_dir, file_name), "wb") as f:
            f.write(buf.tobytes())
        images.append({"id": image_id, "file_name": file_name, "height": h, "width": w})
        for ann in anns:
            annotations.append({"id": len(annotations) + 1, "image_id": image_id, **ann})
    data = {
        "info": {
            "description": "polar_refine synthetic shapes",
            "version": str(GENERATOR_VERSION),
            "seed": int(seed),
            "max_instances": int(max_instances),
        },
        "images": images,
        "annotations": annotations,
        "categories": [
            {"id": i + 1, "name": name, "supercategory": "shape"}
            for i, name in enumerate(SHAPE_CLASSES)
        ],
    }
    json_path = os.path.join(out_dir, "annotations.json")
    with open(json_path, "w") as f:
        json.dump(data, f, separators=(",", ":"))
    return json_path


# ------------------------------------------------------------------------------------------------
# Cached named splits
# ------------------------------------------------------------------------------------------------
def shapes_cache_root() -> str:
    """``$POLAR_REFINE_CACHE`` if set, else ``~/.cache/polar_refine/shapes`` (read at call time)."""
    root = os.environ.get("POLAR_REFINE_CACHE")
    if root:
        return root
    return os.path.join(os.path.expanduser("~"), ".cache", "polar_refine", "shapes")


def _split_folder_name(split: str) -> str:
    p = SHAPES_SPLITS[split]
    h, w = p["image_size"]
    n, seed, m = p["num_images"], p["seed"], p["max_instances"]
    return f"{split}_v{GENERATOR_VERSION}_n{n}_s{seed}_{h}x{w}_m{m}"


def ensure_shapes(split: str, root: Optional[str] = None) -> Tuple[str, str]:
    """Build a named split (see `SHAPES_SPLITS`) once, and return its paths.

    The split is written to ``root/<split>_v<GENERATOR_VERSION>_n.._s.._HxW_m..``, so changing
    the generator version or a split's parameters builds a new folder. Building happens in a
    temporary folder next to it which is then renamed into place, so concurrent callers never see
    a partial split (the loser of a race discards its copy).

    Args:
        split: a key of `SHAPES_SPLITS`.
        root: cache folder; default `shapes_cache_root()`.

    Returns:
        (json_path, image_root): the ``file_name`` of each image in the json is relative to
        ``image_root``.
    """
    if split not in SHAPES_SPLITS:
        raise KeyError(f"Unknown shapes split {split!r}; expected one of {sorted(SHAPES_SPLITS)}")
    root = root or shapes_cache_root()
    folder = os.path.join(root, _split_folder_name(split))
    json_path = os.path.join(folder, "annotations.json")
    image_root = os.path.join(folder, "images")
    if os.path.isfile(json_path):
        return json_path, image_root
    os.makedirs(root, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=f".{os.path.basename(folder)}.tmp-", dir=root)
    os.chmod(tmp, 0o755)  # mkdtemp makes it private
    try:
        logger.info(f"Generating the {split} split into {folder} ...")
        generate_shapes(tmp, **SHAPES_SPLITS[split])
        try:
            os.rename(tmp, folder)
        except OSError:
            if not os.path.isfile(json_path):  # not a lost race: a real error
                raise
    finally:
        if os.path.isdir(tmp):
            shutil.rmtree(tmp, ignore_errors=True)
    return json_path, image_root
