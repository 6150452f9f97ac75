#!/usr/bin/env python
"""Memory of the demo over a long video: RSS must not grow beyond 5 % after warm-up.

    .venv/bin/python benchmarks/video_memory.py --frames 500

Writes a generated video (moving shapes, 96 x 128 by default), runs ``demo/demo.py
--video-input`` on it as a user would (a subprocess, random weights unless ``--weights``), samples
the child's resident memory (VmRSS) every 0.1 s, and reports RSS at the end of warm-up (first
20 % of the run) against the maximum afterwards.
"""

import argparse
import os
import subprocess
import sys
import tempfile
import time

import cv2
import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def make_video(path, frames, h, w, fps=25.0):
    writer = cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*"mp4v"), fps, (w, h))
    rng = np.random.RandomState(0)
    for i in range(frames):
        img = np.full((h, w, 3), 40, np.uint8)
        img[:] += (rng.rand(h, w, 1) * 20).astype(np.uint8)
        cx = int((i * 2) % w)
        cv2.circle(img, (cx, h // 2), 14, (30, 200, 240), -1)
        cv2.rectangle(img, (w - cx - 12, 10), (w - cx + 12, 34), (240, 90, 40), -1)
        writer.write(img)
    writer.release()


def rss_mib(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except FileNotFoundError:
        return None
    return None


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--frames", type=int, default=500)
    ap.add_argument("--height", type=int, default=96)
    ap.add_argument("--width", type=int, default=128)
    ap.add_argument("--weights", default="")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        src, out = os.path.join(tmp, "long.mp4"), os.path.join(tmp, "out.mp4")
        make_video(src, args.frames, args.height, args.width)
        cmd = [sys.executable, os.path.join(ROOT, "demo/demo.py"), "--video-input", src,
               "--output", out, "--confidence-threshold", "0.0",
               "--opts", "MODEL.WEIGHTS", args.weights,
               "INPUT.MIN_SIZE_TEST", str(args.height)]  # fmt: skip
        t0 = time.time()
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        samples = []
        while proc.poll() is None:
            r = rss_mib(proc.pid)
            if r:
                samples.append((time.time() - t0, r))
            time.sleep(0.1)
        err = proc.stderr.read().decode()
        if proc.returncode != 0:
            sys.exit(f"demo failed ({proc.returncode}): {err[-2000:]}")
        n_out = int(cv2.VideoCapture(out).get(cv2.CAP_PROP_FRAME_COUNT))
    # the model and the first frames settle in the first part of the run
    start = samples[0][0] + 0.2 * (samples[-1][0] - samples[0][0])
    warm = [r for t, r in samples if t <= start]
    after = [r for t, r in samples if t > start]
    base, peak = warm[-1], max(after)
    print(
        f"frames in/out: {args.frames}/{n_out} at {args.height}x{args.width}, "
        f"{len(samples)} RSS samples over {samples[-1][0]:.1f} s"
    )
    span = samples[-1][0] - samples[0][0]
    marks = [
        min(samples, key=lambda s: abs(s[0] - samples[0][0] - q * span))[1]
        for q in (0.2, 0.4, 0.6, 0.8, 1.0)
    ]
    print("RSS at 20/40/60/80/100 % of the run: " + " / ".join(f"{m:.0f}" for m in marks) + " MiB")
    print(
        f"RSS at end of warm-up {base:.0f} MiB, max after {peak:.0f} MiB, final {after[-1]:.0f} "
        f"MiB: growth {100 * (peak / base - 1):+.1f} % (limit +5 %)"
    )


if __name__ == "__main__":
    main()
