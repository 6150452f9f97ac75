"""Run a PolarRefine model on images or video frames and draw its polygons.

`VisualizationDemo` wraps detectron2's `DefaultPredictor` (weights from ``cfg.MODEL.WEIGHTS``,
test-time resizing, BGR input), or any predictor with its contract such as the ONNX Runtime
`polar_refine.export.ONNXPredictor`, and draws the refined contours with detectron2's `Visualizer`.
With ``show_coarse=True`` the coarse contours (before refinement) are drawn on top as thin
dashed lines in `COARSE_COLOR`, so that the effect of the refinement is visible, and, for a
model with deformation stages, the refined polar contours in `POLAR_COLOR` under the deformed
ones.
"""

import logging
from typing import Iterable, Iterator, Tuple, Union

import cv2
import matplotlib as mpl
import matplotlib.colors as mplc
import numpy as np
import torch
from detectron2.data import MetadataCatalog
from detectron2.data.catalog import Metadata
from detectron2.engine.defaults import DefaultPredictor
from detectron2.structures import Instances
from detectron2.utils.colormap import colormap
from detectron2.utils.video_visualizer import VideoVisualizer
from detectron2.utils.visualizer import ColorMode, GenericMask, VisImage, Visualizer

from polar_refine.modeling.postprocess import polygons_to_masks

__all__ = [
    "COARSE_COLOR",
    "POLAR_COLOR",
    "VisualizationDemo",
    "draw_coarse_polygons",
    "read_frames",
    "to_bgr",
]

logger = logging.getLogger("polar_refine.demo")

COARSE_COLOR = (1.0, 1.0, 0.0)
"""RGB colour (in [0, 1]) of the coarse contours drawn with ``show_coarse``."""
POLAR_COLOR = (0.0, 1.0, 1.0)
"""RGB colour of the refined polar contours drawn with ``show_coarse`` under deformed ones
(``MODEL.POLAR_REFINE.DEFORM``)."""

_INSTANCE_COLORS = colormap(rgb=True, maximum=1)


def to_bgr(image: np.ndarray) -> np.ndarray:
    """Return a 3-channel BGR uint8 version of a grayscale, BGR or BGRA image."""
    image = np.asarray(image)
    if image.dtype != np.uint8:
        image = np.clip(image, 0, 255).astype(np.uint8)
    if image.ndim == 2:
        return cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    if image.shape[2] == 1:
        return cv2.cvtColor(image[:, :, 0], cv2.COLOR_GRAY2BGR)
    if image.shape[2] == 4:
        return cv2.cvtColor(image, cv2.COLOR_BGRA2BGR)
    return image


def read_frames(video: cv2.VideoCapture) -> Iterator[np.ndarray]:
    """Yield the BGR frames of an opened `cv2.VideoCapture` until a read fails."""
    while video.isOpened():
        success, frame = video.read()
        if not success:
            break
        yield frame


def metadata_for(cfg) -> Metadata:
    """The metadata used to name the classes of a model built from ``cfg``.

    The first of ``cfg.DATASETS.TEST`` / ``cfg.DATASETS.TRAIN`` whose metadata has
    ``thing_classes`` provides the class names (and ``thing_colors`` if it has them). The result is
    a fresh `Metadata` (the catalog is not modified) with exactly one name per class of the model:
    missing names become the class index, so that drawing never fails on a class id.
    """
    names = list(cfg.DATASETS.TEST) + list(cfg.DATASETS.TRAIN)
    source = next((n for n in names if MetadataCatalog.get(n).get("thing_classes")), None)
    num_classes = cfg.MODEL.POLAR_REFINE.NUM_CLASSES
    meta = Metadata(name=source or "polar_refine_demo")
    classes = list(MetadataCatalog.get(source).thing_classes) if source else []
    if source is None:
        logger.warning("No thing_classes in the metadata of %s; using class indices.", names)
    elif len(classes) != num_classes:
        logger.warning(
            "Dataset '%s' has %d classes but the model has %d.", source, len(classes), num_classes
        )
    classes = classes[:num_classes] + [str(i) for i in range(len(classes), num_classes)]
    meta.set(thing_classes=classes)
    colors = MetadataCatalog.get(source).get("thing_colors") if source else None
    if colors is not None and len(colors) >= num_classes:
        meta.set(thing_colors=list(colors))
    return meta


def draw_coarse_polygons(
    vis_image: VisImage, polygons: np.ndarray, color=COARSE_COLOR, linewidth: float = 1.0
) -> VisImage:
    """Draw (N, K, 2) polygons as closed, thin, dashed outlines on ``vis_image``.

    Args:
        vis_image: the output of a `Visualizer` / `VideoVisualizer` drawing call.
        polygons: (N, K, 2) (x, y) pixel coordinates in the image drawn by ``vis_image``.
        color: a matplotlib colour.
        linewidth: in pixels of the (unscaled) image.

    Returns:
        ``vis_image``, with the outlines added.
    """
    for poly in np.asarray(polygons, dtype=np.float64):
        vis_image.ax.add_patch(
            mpl.patches.Polygon(
                poly,
                closed=True,
                fill=False,
                edgecolor=mplc.to_rgb(color),
                linestyle="--",
                linewidth=max(linewidth * vis_image.scale, 1.0),
                zorder=5,  # above the filled contours, below the labels
            )
        )
    return vis_image


class VisualizationDemo:
    """Predict with a PolarRefine model and draw its polygons, for single images or videos."""

    def __init__(
        self,
        cfg,
        instance_mode=ColorMode.IMAGE,
        show_coarse: bool = False,
        predictor=None,
        min_score: float = 0.0,
    ):
        """
        Args:
            cfg (CfgNode): a PolarRefine config; ``cfg.MODEL.WEIGHTS`` is loaded ("" keeps the
                random initialisation) unless ``predictor`` is given. Its datasets name the
                classes.
            instance_mode (ColorMode): ``IMAGE`` (one colour per instance), ``SEGMENTATION`` (class
                colours when the metadata has ``thing_colors``) or ``IMAGE_BW`` (grey background).
                Videos support ``IMAGE`` and ``IMAGE_BW`` only (``SEGMENTATION`` falls back to
                ``IMAGE`` there).
            show_coarse (bool): also draw the coarse contours (``pred_coarse_polygons``).
            predictor: any callable BGR image -> ``{"instances": Instances}`` at the image's
                size, e.g. `polar_refine.export.ONNXPredictor`; default: detectron2's
                ``DefaultPredictor(cfg)``.
            min_score (float): instances scored below it are not drawn (a model applies its
                own ``SCORE_THRESH_TEST``; an exported one keeps the threshold it was exported
                with, so a higher one is applied here).
        """
        self.metadata = metadata_for(cfg)
        self.cpu_device = torch.device("cpu")
        self.instance_mode = instance_mode
        self.show_coarse = show_coarse
        self.predictor = predictor if predictor is not None else DefaultPredictor(cfg)
        self.min_score = float(min_score)

    def _predict(self, image: np.ndarray) -> Tuple[dict, Instances]:
        """The predictor's output, and its instances on the CPU scored at least ``min_score``."""
        predictions = self.predictor(image)
        instances = predictions["instances"].to(self.cpu_device)
        return predictions, instances[instances.scores >= self.min_score]

    def run_on_image(self, image: np.ndarray) -> Tuple[dict, VisImage]:
        """Predict on one image and draw the result.

        Args:
            image (np.ndarray): an image of shape (H, W, C) in BGR order (as read by OpenCV);
                grayscale (H, W) and BGRA images are converted to BGR.

        Returns:
            predictions (dict): the output of the model (``{"instances": Instances}``).
            vis_output (VisImage): the visualised image; ``vis_output.get_image()`` is RGB.
        """
        image = to_bgr(image)
        predictions, instances = self._predict(image)
        visualizer = Visualizer(image[:, :, ::-1], self.metadata, instance_mode=self.instance_mode)
        vis_output = self._draw_polygons(visualizer, instances)
        self._draw_contours(vis_output, instances)
        return predictions, vis_output

    def _draw_contours(self, vis, instances: Instances) -> None:
        """With ``show_coarse``: the coarse contours, and the polar ones under deformed ones."""
        if not self.show_coarse:
            return
        if instances.has("pred_coarse_polygons"):
            draw_coarse_polygons(vis, instances.pred_coarse_polygons.numpy())
        if instances.has("pred_polar_polygons"):
            draw_coarse_polygons(vis, instances.pred_polar_polygons.numpy(), color=POLAR_COLOR)

    def run_on_video(
        self, video: Union[cv2.VideoCapture, Iterable[np.ndarray]]
    ) -> Iterator[np.ndarray]:
        """Predict on every frame of a video and yield the visualised frames.

        Colours follow the instances from frame to frame (detectron2's `VideoVisualizer`). Nothing
        is kept across frames beyond the visualiser's short colour memory, so arbitrarily long
        streams can be processed.

        Args:
            video: an opened `cv2.VideoCapture`, or any iterable of BGR frames.

        Yields:
            np.ndarray: the visualised frames, BGR uint8, of the size of the input frames.
        """
        mode = self.instance_mode
        if mode not in (ColorMode.IMAGE, ColorMode.IMAGE_BW):
            logger.warning("%s is not supported for videos; using ColorMode.IMAGE.", mode)
            mode = ColorMode.IMAGE
        video_visualizer = VideoVisualizer(self.metadata, mode)
        frames = read_frames(video) if isinstance(video, cv2.VideoCapture) else video
        for frame in frames:
            yield self._process_frame(to_bgr(frame), video_visualizer)

    def _process_frame(self, frame: np.ndarray, video_visualizer: VideoVisualizer) -> np.ndarray:
        instances = self._predict(frame)[1]
        if not instances.has("pred_masks"):  # MODEL.MASK_ON False: rasterise the polygons
            instances.pred_masks = polygons_to_masks(instances.pred_polygons, *frame.shape[:2])
        frame_rgb = cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
        vis_frame = video_visualizer.draw_instance_predictions(frame_rgb, instances)
        self._draw_contours(vis_frame, instances)
        vis_bgr = cv2.cvtColor(vis_frame.get_image(), cv2.COLOR_RGB2BGR)
        height, width = frame.shape[:2]
        if vis_bgr.shape[:2] != (height, width):  # a video writer drops frames of another size
            vis_bgr = cv2.resize(vis_bgr, (width, height), interpolation=cv2.INTER_AREA)
        return vis_bgr

    def _colors(self, classes: np.ndarray) -> Tuple[list, float]:
        """Colours (RGB in [0, 1]) of the instances and the fill opacity, as detectron2 does.

        ``SEGMENTATION`` uses the class colours of the metadata when it has some; otherwise the
        instances get the colours of detectron2's colormap in order, so that a given image is
        always drawn the same way.
        """
        thing_colors = self.metadata.get("thing_colors")
        if self.instance_mode == ColorMode.SEGMENTATION and thing_colors:
            return [mplc.to_rgb([x / 255 for x in thing_colors[c]]) for c in classes], 0.8
        n = len(_INSTANCE_COLORS)
        colors = [tuple(_INSTANCE_COLORS[i % n]) for i in range(len(classes))]
        return colors, 0.3 if self.instance_mode == ColorMode.IMAGE_BW else 0.5

    def _draw_polygons(self, visualizer: Visualizer, instances: Instances) -> VisImage:
        """Draw the refined polygons of ``instances`` with "class score%" labels."""
        height, width = visualizer.output.height, visualizer.output.width
        polygons = instances.pred_polygons.numpy().astype(np.float64)
        classes = instances.pred_classes.numpy()
        scores = instances.scores.numpy()
        names = self.metadata.thing_classes
        masks, labels, keep = [], [], []
        for i, (poly, c, s) in enumerate(zip(polygons, classes, scores)):
            mask = GenericMask([poly.reshape(-1)], height, width)
            if not mask.mask.any():  # degenerate or outside the image: nothing to draw
                continue
            masks.append(mask)
            labels.append(f"{names[c] if c < len(names) else c} {s:.0%}")
            keep.append(i)
        colors, alpha = self._colors(classes)
        colors = [colors[i] for i in keep]
        if self.instance_mode == ColorMode.IMAGE_BW:
            visualizer.output.reset_image(
                _grayscale_outside(visualizer.img, [m.mask for m in masks])
            )
        return visualizer.overlay_instances(
            masks=masks, labels=labels, assigned_colors=colors, alpha=alpha
        )


def _grayscale_outside(image_rgb: np.ndarray, masks) -> np.ndarray:
    """``image_rgb`` in grey levels except inside the union of ``masks``."""
    gray = np.repeat(image_rgb.mean(axis=2, keepdims=True), 3, axis=2).astype(np.uint8)
    if masks:
        inside = np.any(np.stack(masks), axis=0)
        gray[inside] = image_rgb[inside]
    return gray
