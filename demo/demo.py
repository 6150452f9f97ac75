"""Run a PolarRefine model on images, a video or a webcam and draw the predicted contours.

Examples (from anywhere; the default config is the repository's tiny Shapes config)::

    python demo/demo.py --input img1.jpg "photos/*.png" some_folder/ --output out_dir/ \\
        --opts MODEL.WEIGHTS output/shapes_tiny/model_final.pth
    python demo/demo.py --video-input clip.mp4 --output clip_vis.mp4 --show-coarse \\
        --opts MODEL.WEIGHTS output/shapes_tiny/model_final.pth
    python demo/demo.py --webcam --output recording.mp4 --opts MODEL.WEIGHTS model_final.pth
    python demo/demo.py --onnx exported/model.onnx --input img1.jpg --output out_dir/

With ``--onnx`` the model is an ONNX file written by ``export_model.py``, run by ONNX Runtime
(``pip install -e .[export]``); the config then only names the classes, and the score threshold
is the one the model was exported with.

Without ``--output`` the results are shown in a window (Esc quits). Exit status: 0 on success,
1 when some input image could not be read or written, 2 for a bad config, a source that cannot be
opened or an output that cannot be written, 130 when a video run is interrupted by Ctrl-C (a
webcam recording stopped by Ctrl-C is a normal end: status 0).
"""

import argparse
import glob
import itertools
import logging
import math
import os
import sys
import time

import cv2
import numpy as np
import torch
import tqdm
from detectron2.config import get_cfg
from detectron2.data.catalog import Metadata
from detectron2.data.detection_utils import read_image
from detectron2.utils.env import seed_all_rng
from detectron2.utils.logger import setup_logger
from PIL import UnidentifiedImageError

import polar_refine
from polar_refine.data.user_datasets import add_dataset_arguments, register_datasets_from_args
from polar_refine.export import ExportedModelError

try:  # `python demo/demo.py`: the script's folder is on sys.path
    from predictor import VisualizationDemo, read_frames
except ModuleNotFoundError:  # `python -m demo.demo` from the repository root
    from demo.predictor import VisualizationDemo, read_frames

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_CONFIG = os.path.join(REPO_ROOT, "configs", "Shapes", "polar_refine_tiny.yaml")
WINDOW_NAME = "PolarRefine detections"
IMAGE_EXTENSIONS = {
    ".bmp", ".gif", ".jpeg", ".jpg", ".pbm", ".pgm", ".png", ".ppm", ".tif", ".tiff", ".webp"
}  # fmt: skip
DEFAULT_FPS = 30.0  # for sources that do not report their frame rate (some cameras, streams)
PROG = "demo.py"

logger = logging.getLogger("polar_refine.demo")


class DemoError(Exception):
    """A user-facing error: reported as one line on stderr, with an exit status."""

    def __init__(self, message: str, status: int = 2):
        super().__init__(message)
        self.status = status


def report(message) -> None:
    """Print ``message`` on stderr as one line (whitespace and newlines collapsed)."""
    tqdm.tqdm.write(f"{PROG}: error: {' '.join(str(message).split())}", file=sys.stderr)


def get_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG, description="PolarRefine demo: draw predicted contours on images or videos."
    )
    parser.add_argument(
        "--config-file",
        default=DEFAULT_CONFIG,
        metavar="FILE",
        help="path to a config file (relative to the current folder, or else to the repository "
        "root; default: configs/Shapes/polar_refine_tiny.yaml of the repository)",
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument(
        "--input",
        nargs="+",
        metavar="PATH",
        help="image files, folders (all images inside) or glob patterns such as 'dir/*.jpg'",
    )
    source.add_argument("--video-input", metavar="FILE", help="a video file")
    source.add_argument(
        "--webcam",
        nargs="?",
        const="0",
        metavar="SOURCE",
        help="a camera index (default 0), a device path such as /dev/video1, or a stream URL or "
        "video file read as a live source",
    )
    parser.add_argument(
        "--output",
        metavar="PATH",
        help="a folder (images: one output per input, same name; video: <name>.mp4) or, when it "
        "has an extension, a file (single image; .mp4 for a video or webcam). Without it, the "
        "results are shown in a window.",
    )
    parser.add_argument(
        "--confidence-threshold",
        type=float,
        default=0.5,
        metavar="T",
        help="minimum score of the drawn instances (MODEL.POLAR_REFINE.SCORE_THRESH_TEST); "
        "default 0.5",
    )
    parser.add_argument(
        "--show-coarse",
        action="store_true",
        help="also draw the coarse contours (before refinement) as dashed yellow lines and, for "
        "a model with deformation stages, the polar contours they started from in cyan",
    )
    parser.add_argument(
        "--onnx",
        metavar="FILE",
        help="run this exported ONNX model with ONNX Runtime instead of building the model of "
        "the config (which then only names the classes)",
    )
    parser.add_argument(
        "--opts",
        default=[],
        nargs=argparse.REMAINDER,
        help="config overrides as KEY VALUE pairs, e.g. MODEL.WEIGHTS model_final.pth",
    )
    return add_dataset_arguments(parser)  # --coco-dataset NAME JSON IMAGE_ROOT


def resolve_config(path: str) -> str:
    """``path`` if it exists, else ``path`` relative to the repository root."""
    if os.path.isfile(path):
        return path
    in_repo = os.path.join(REPO_ROOT, path)
    if not os.path.isabs(path) and os.path.isfile(in_repo):
        return in_repo
    raise DemoError(f"config file not found: {path}")


def setup_cfg(args):
    """The frozen config: file, then ``--confidence-threshold``, then ``--opts`` (which win)."""
    config_file = resolve_config(args.config_file)
    cfg = get_cfg()
    polar_refine.add_polar_refine_config(cfg)
    try:
        cfg.merge_from_file(config_file)
        cfg.MODEL.POLAR_REFINE.SCORE_THRESH_TEST = args.confidence_threshold
        cfg.merge_from_list(args.opts)
    except Exception as e:  # yaml, unknown keys, bad values: all user errors here
        raise DemoError(f"invalid config ({config_file}, --opts {args.opts}): {e!r}") from e
    if cfg.MODEL.DEVICE.startswith("cuda") and not torch.cuda.is_available():
        logger.info("CUDA is not available: running on the CPU.")
        cfg.MODEL.DEVICE = "cpu"
    cfg.freeze()
    return cfg


def build_demo(cfg, args) -> VisualizationDemo:
    """The predictor; a missing or incompatible checkpoint is a `DemoError`."""
    # Seeded, so that a model without weights (MODEL.WEIGHTS "") is the same in every run.
    seed_all_rng(cfg.SEED if cfg.SEED >= 0 else 0)
    if args.onnx:
        return build_onnx_demo(cfg, args)
    try:
        return VisualizationDemo(
            cfg, show_coarse=args.show_coarse, min_score=args.confidence_threshold
        )
    except (AssertionError, OSError, RuntimeError, ValueError) as e:
        raise DemoError(f"cannot build the model from {cfg.MODEL.WEIGHTS!r}: {e}") from e


def build_onnx_demo(cfg, args) -> VisualizationDemo:
    """The demo around an ONNX Runtime predictor; an unusable file is a `DemoError`."""
    from polar_refine.export import ONNXPredictor

    try:
        predictor = ONNXPredictor(args.onnx)
    except ExportedModelError as e:
        raise DemoError(str(e)) from e
    exported = predictor.metadata.get("score_thresh_test")
    if exported is not None and args.confidence_threshold < exported - 1e-9:
        logger.warning(
            "--confidence-threshold %g is below the exported model's "
            "MODEL.POLAR_REFINE.SCORE_THRESH_TEST %g: detections under %g are not in its output",
            args.confidence_threshold,
            exported,
            exported,
        )
    demo = VisualizationDemo(
        cfg,
        show_coarse=args.show_coarse,
        predictor=predictor,
        min_score=args.confidence_threshold,
    )
    classes = predictor.metadata.get("thing_classes")
    if classes:  # the names stored at export win over the config's datasets
        demo.metadata = Metadata(name=os.path.basename(args.onnx), thing_classes=list(classes))
    return demo


def has_display() -> bool:
    """Whether a window can be opened (on Linux: an X11 or Wayland display is set)."""
    if sys.platform.startswith("linux"):
        return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))
    return True


def expand_inputs(patterns):
    """Expand ``--input`` into (image paths, arguments that gave no file).

    An existing file is taken as is (whatever its extension: it is reported later if it is not
    an image); a folder gives the image files directly inside it; anything else is a glob pattern
    (``~`` expanded), whose folders are expanded in turn. Duplicates are dropped, order is kept.
    """

    def images_in(folder):
        names = sorted(os.listdir(folder))
        return [
            os.path.join(folder, n)
            for n in names
            if os.path.splitext(n)[1].lower() in IMAGE_EXTENSIONS
            and os.path.isfile(os.path.join(folder, n))
        ]

    paths, unmatched = [], []
    for pattern in patterns:
        if os.path.isfile(pattern):
            found = [pattern]
        elif os.path.isdir(pattern):
            found = images_in(pattern)
        else:
            found = []
            for match in sorted(glob.glob(os.path.expanduser(pattern))):
                found.extend(images_in(match) if os.path.isdir(match) else [match])
        if not found:
            unmatched.append(pattern)
        paths.extend(found)
    return list(dict.fromkeys(paths)), unmatched


def names_a_file(output: str) -> bool:
    """Whether ``--output`` names a file: it has an extension and is not a folder."""
    if os.path.isdir(output) or output.endswith(("/", os.sep)):
        return False
    return bool(os.path.splitext(output)[1])


def image_output_path(output, path, single: bool):
    """Where the visualisation of input ``path`` goes; None for a window."""
    if output is None:
        return None
    if single and names_a_file(output):
        return output
    out_path = os.path.join(output, os.path.basename(path))
    if not cv2.haveImageWriter(out_path):  # e.g. .gif: OpenCV cannot write it
        out_path = os.path.splitext(out_path)[0] + ".png"
    return out_path


def run_images(args, cfg) -> int:
    """Process ``--input``; returns the exit status (1 when some input failed)."""
    paths, unmatched = expand_inputs(args.input)
    failed = 0
    for pattern in unmatched:
        report(f"no image file found for --input {pattern}")
        failed += 1
    if not paths:
        return 1
    single = len(paths) == 1
    out_dir = None  # the folder to create once the model is built
    if args.output is not None:
        if single and names_a_file(args.output):
            if not cv2.haveImageWriter(args.output):
                raise DemoError(f"cannot write an image with the extension of {args.output}")
            out_dir = os.path.dirname(os.path.abspath(args.output))
        else:
            if os.path.splitext(args.output.rstrip("/" + os.sep))[1].lower() in IMAGE_EXTENSIONS:
                raise DemoError(f"--output must be a folder for {len(paths)} inputs")
            out_dir = args.output

    demo = build_demo(cfg, args)
    if out_dir is not None:
        os.makedirs(out_dir, exist_ok=True)
    written = set()
    for path in paths:
        try:
            image = read_image(path, format="BGR")
        except Exception as e:  # PIL raises several types for broken or non-image files
            unidentified = isinstance(e, UnidentifiedImageError)
            reason = "not an image, or an unsupported format" if unidentified else e
            report(f"cannot read image {path}: {reason}")
            failed += 1
            continue
        start_time = time.time()
        try:
            predictions, vis_output = demo.run_on_image(image)
        except ExportedModelError as e:  # the ONNX predictor rejected or failed on it
            report(f"cannot process image {path}: {e}")
            failed += 1
            continue
        logger.info(
            "%s: detected %d instances in %.2fs",
            path,
            len(predictions["instances"]),
            time.time() - start_time,
        )
        vis_bgr = np.ascontiguousarray(vis_output.get_image()[:, :, ::-1])
        out_path = image_output_path(args.output, path, single)
        if out_path is None:
            cv2.namedWindow(WINDOW_NAME, cv2.WINDOW_NORMAL)
            cv2.imshow(WINDOW_NAME, vis_bgr)
            if cv2.waitKey(0) == 27:
                break  # Esc
            continue
        if out_path in written:
            logger.warning("%s is written again (inputs with the same name)", out_path)
        try:
            ok = cv2.imwrite(out_path, vis_bgr)
        except cv2.error as e:
            ok, reason = False, e
        else:
            reason = "cv2.imwrite failed"
        if not ok:
            report(f"cannot write {out_path} (for {path}): {reason}")
            failed += 1
            continue
        written.add(out_path)
    if args.output is None:
        cv2.destroyAllWindows()
    return 1 if failed else 0


def parse_source(source: str):
    """A camera index for digits, else the string (device path, file or stream URL)."""
    return int(source) if source.isdigit() else source


def open_source(source, what: str):
    """Open a capture and read its first frame; a `DemoError` if either fails.

    OpenCV's own log is silenced meanwhile: its multi-line warnings are replaced by one error.
    """
    level = cv2.getLogLevel()
    cv2.setLogLevel(0)
    try:
        capture = cv2.VideoCapture(source)
        ok, frame = capture.read() if capture.isOpened() else (False, None)
    finally:
        cv2.setLogLevel(level)
    if not ok or frame is None:
        capture.release()
        raise DemoError(f"cannot open {what} {source!r} (or it has no frame)")
    return capture, frame


def video_output_path(output, name: str) -> str:
    """``output`` itself if it names a file, else ``output/<name>.mp4`` (folder created)."""
    if not names_a_file(output):
        os.makedirs(output, exist_ok=True)
        return os.path.join(output, name + ".mp4")
    os.makedirs(os.path.dirname(os.path.abspath(output)), exist_ok=True)
    return output


def run_video(args, cfg) -> int:
    """Process ``--video-input`` or ``--webcam``; returns the exit status."""
    webcam = args.video_input is None
    if webcam:
        source, what = parse_source(args.webcam), "webcam source"
        name = "webcam"
    else:
        if not os.path.isfile(args.video_input):
            raise DemoError(f"no such video file: {args.video_input}")
        source, what = args.video_input, "video file"
        name = os.path.splitext(os.path.basename(args.video_input))[0]
    capture, first_frame = open_source(source, what)
    fps = capture.get(cv2.CAP_PROP_FPS)
    if not (math.isfinite(fps) and fps > 0):
        logger.warning("The source reports no frame rate; writing at %.0f frames/s", DEFAULT_FPS)
        fps = DEFAULT_FPS
    num_frames = int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
    height, width = first_frame.shape[:2]

    writer, out_path, count, status = None, None, 0, 0
    start_time = time.time()  # reset once the model is built
    try:
        demo = build_demo(cfg, args)
        if args.output is not None:
            out_path = video_output_path(args.output, name)
            writer = cv2.VideoWriter(
                out_path, cv2.VideoWriter_fourcc(*"mp4v"), fps, (width, height), isColor=True
            )
            if not writer.isOpened():
                raise DemoError(f"cannot write the video {out_path}")
        else:
            cv2.namedWindow(WINDOW_NAME, cv2.WINDOW_NORMAL)
        frames = itertools.chain([first_frame], read_frames(capture))
        total = num_frames if num_frames > 0 and not webcam else None
        start_time = time.time()
        for vis_frame in tqdm.tqdm(demo.run_on_video(frames), total=total, unit="frame"):
            count += 1
            if writer is not None:
                writer.write(vis_frame)
            else:
                cv2.imshow(WINDOW_NAME, vis_frame)
                if cv2.waitKey(1) == 27:
                    break  # Esc
    except ExportedModelError as e:  # the ONNX predictor failed on a frame
        raise DemoError(f"frame {count + 1} of {what} {source!r}: {e}") from e
    except KeyboardInterrupt:
        if webcam:
            logger.info("Stopped by Ctrl-C.")
        else:
            logger.warning("Interrupted by Ctrl-C after %d frames.", count)
            status = 130
    finally:
        capture.release()
        if writer is not None:
            writer.release()
        if args.output is None:
            cv2.destroyAllWindows()
    elapsed = max(time.time() - start_time, 1e-9)
    where = f" to {out_path}" if out_path else ""
    logger.info("%d frames%s in %.1fs (%.2f frames/s)", count, where, elapsed, count / elapsed)
    return status


def main(argv=None) -> int:
    args = get_parser().parse_args(argv)
    setup_logger(name="fvcore")
    setup_logger(name="detectron2")
    setup_logger(name="polar_refine")
    logger.info("Arguments: %s", args)
    try:
        try:
            register_datasets_from_args(args)  # names the classes of a user's dataset
        except (OSError, ValueError) as e:
            raise DemoError(f"--coco-dataset: {e}") from e
        cfg = setup_cfg(args)
        if args.output is None and not has_display():
            raise DemoError("no display to show the results on: use --output")
        if args.input:
            return run_images(args, cfg)
        return run_video(args, cfg)
    except DemoError as e:
        report(e)
        return e.status
    except KeyboardInterrupt:
        report("interrupted")
        return 130


if __name__ == "__main__":
    sys.exit(main())
