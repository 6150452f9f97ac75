"""Time polar.polygon_radii: 1,000 points x 36 rays, 200-vertex polygon (target: < 50 ms).

.venv/bin/python benchmarks/polygon_radii_speed.py
"""

import math
import sys
import time

import torch

from polar_refine.polar import polygon_radii


def main(repeats: int = 30, doc: bool = False) -> None:
    torch.manual_seed(0)
    n = 200
    t = torch.arange(n, dtype=torch.float32) * 2 * math.pi / n
    rad = 100 + 30 * torch.rand(n)
    poly = torch.stack([200 + rad * t.cos(), 200 + rad * t.sin()], 1)
    pts = 200 + (torch.rand(1000, 2) - 0.5) * 120
    polygon_radii(poly, pts, 36)  # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        polygon_radii(poly, pts, 36)
        times.append(time.perf_counter() - t0)
    times.sort()
    line = (
        f"`polar.polygon_radii`, 1,000 points x 36 rays on a 200-vertex polygon: median "
        f"{1e3 * times[len(times) // 2]:.1f} ms, min {1e3 * times[0]:.1f} ms over {repeats} runs "
        f"(torch {torch.__version__}, {torch.get_num_threads()} threads)"
    )
    print(line)
    if doc:
        from doc_table import write_table

        write_table("polygon-radii", line)


if __name__ == "__main__":
    main(doc="--doc" in sys.argv[1:])
