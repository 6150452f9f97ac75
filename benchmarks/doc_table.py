# Copyright (c) 2026 The polar_refine Authors. Licensed under the Apache License 2.0 (see LICENSE).
"""Write a benchmark's table into docs/BENCHMARKS.md, replacing the previous run's.

Each table lives between ``<!-- table:NAME:begin -->`` and ``<!-- table:NAME:end -->``; a rerun
replaces what is between the markers (the table and the line above it that names the command,
the hardware, the date and the commit), so the document holds current tables only and git
holds their history. A table whose markers are missing is appended at the end of the file.
"""

import datetime
import os
import platform
import re
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOC = os.path.join(ROOT, "docs", "BENCHMARKS.md")


def hardware() -> str:
    """E.g. "2-core x86-64 CPU (AMD EPYC), no GPU" or the GPU's name."""
    try:
        import torch

        if torch.cuda.is_available():
            return f"{torch.cuda.get_device_name()} GPU"
    except ImportError:
        pass
    model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            names = [ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")]
        model = names[0] if names else model
    except OSError:
        pass
    arch = platform.machine().replace("_", "-")
    return f"{os.cpu_count()}-core {arch} CPU ({model}), no GPU"


def commit() -> str:
    """The short commit of the checkout, with "+changes" when its code differs from it."""
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
        ).stdout.strip()
        # changes to the docs (the tables this module writes) do not change what was measured
        status = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=ROOT,
            capture_output=True,
            text=True,
        ).stdout.splitlines()
        dirty = [line for line in status if not line[3:].startswith(("docs/", "README.md"))]
    except OSError:
        return "unknown"
    return (head or "unknown") + ("+changes" if dirty else "")


def provenance(command: str = None) -> str:
    """One line: command, hardware, date and commit of a measurement."""
    if command is None:
        env = []
        for key in ("OMP_NUM_THREADS", "DETECTRON2_DATASETS"):
            value = os.environ.get(key)
            if value:
                value = os.path.relpath(value, ROOT) if os.path.isabs(value) else value
                env.append(f"{key}={value}")
        argv = [os.path.relpath(sys.argv[0], ROOT)] + sys.argv[1:]
        command = " ".join(
            env + [".venv/bin/python"] + [a if " " not in a else repr(a) for a in argv]
        )
    date = datetime.date.today().isoformat()
    return f"`{command}` · {hardware()} · {date} · commit {commit()}"


def write_table(name: str, body: str, command: str = None, doc: str = DOC) -> None:
    """Replace table ``name`` in ``doc`` by ``body`` (markdown), under its provenance line."""
    begin, end = f"<!-- table:{name}:begin -->", f"<!-- table:{name}:end -->"
    block = f"{begin}\n{provenance(command)}\n\n{body.strip()}\n{end}"
    text = open(doc).read() if os.path.isfile(doc) else ""
    pattern = re.compile(re.escape(begin) + ".*?" + re.escape(end), re.S)
    if pattern.search(text):
        text = pattern.sub(lambda _: block, text)
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    with open(doc, "w") as f:
        f.write(text)
    print(f"[doc_table] wrote table {name!r} into {os.path.relpath(doc, ROOT)}")
