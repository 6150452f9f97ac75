"""Checks of the project as a whole: the installed package, its metadata and its wording.

* A wheel built from the repository ships the configs: ``polar_refine.model_zoo`` finds and
  loads them (yacs and LazyConfig) from any working directory, with no checkout around.
* ``setup.py``'s ``python_requires`` and the interpreter check of ``scripts/setup.sh`` agree.
* No tracked file carries wording about how the project was made instead of what it does.
"""

import os
import re
import shutil
import subprocess
import sys
import zipfile

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONTOUR_R50 = "COCO-InstanceSegmentation/polar_refine_contour_R_50_FPN_1x"


def _git(*args):
    """stdout of ``git <args>`` run in the repository root; skips the test outside a checkout."""
    if shutil.which("git") is None:
        pytest.skip("git is not installed")
    proc = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True)
    if proc.returncode != 0:
        pytest.skip(f"not a git checkout: {proc.stderr.strip()}")
    return proc.stdout


# --------------------------------------------------------------------------------------------
# The wheel: configs installed with the package


# Run by the installed copy, in an empty working directory: argv[1] is the install target.
_INSTALLED_CHECK = f"""
import os, sys

site = os.path.realpath(sys.argv[1])
import polar_refine
from polar_refine import model_zoo

def inside(p):
    return os.path.realpath(p).startswith(site + os.sep)

assert inside(polar_refine.__file__), polar_refine.__file__

from detectron2.config import get_cfg

path = model_zoo.get_config_file("{CONTOUR_R50}.yaml")
assert os.path.isabs(path) and inside(path), path
cfg = get_cfg()
polar_refine.add_polar_refine_config(cfg)
cfg.merge_from_file(path)  # _BASE_: ../Base-PolarRefine.yaml, from the installed copy
assert cfg.MODEL.RESNETS.DEPTH == 50, cfg.MODEL.RESNETS.DEPTH
assert cfg.MODEL.POLAR_REFINE.REFINE.NUM_STAGES == 1

assert model_zoo.get_config("{CONTOUR_R50}.yaml").MODEL.POLAR_REFINE.CONTOUR.ENABLED
# the LazyConfig chain: relative imports of the sibling config and of ../common/*.py
lazy = model_zoo.get_config("{CONTOUR_R50}.py")
assert lazy.model.refiner.num_stages == 1, lazy.model.refiner.num_stages
assert lazy.model.contour is not None
assert lazy.dataloader.train.mapper.contour_stride == 8
print("installed model_zoo ok")
"""


def _config_files(configs_dir):
    return sorted(
        os.path.relpath(os.path.join(d, f), configs_dir)
        for d, _, files in os.walk(configs_dir)
        for f in files
        if f.endswith((".yaml", ".py"))
    )


def test_wheel_ships_configs_usable_from_anywhere(tmp_path):
    # Build from a copy of the files a clone would have (tracked, plus new files git does not
    # ignore), so the build neither writes build/ into the checkout nor picks up stale output.
    src = tmp_path / "src"
    files = _git("ls-files", "--cached", "--others", "--exclude-standard").splitlines()
    for rel in files:
        if os.path.isfile(os.path.join(ROOT, rel)):
            os.makedirs(src / os.path.dirname(rel), exist_ok=True)
            shutil.copy2(os.path.join(ROOT, rel), src / rel)

    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    env = dict(os.environ, PIP_NO_INDEX="1")
    wheel_dir, site = tmp_path / "wheel", tmp_path / "site"
    subprocess.run(
        pip + ["wheel", "--no-deps", "--no-build-isolation", "-w", str(wheel_dir), str(src)],
        check=True,
        env=env,
        timeout=300,
    )
    (wheel,) = wheel_dir.glob("polar_refine-*.whl")

    # every .yaml / .py under configs/ is in the wheel, at the same relative path
    prefix = "polar_refine/model_zoo/configs/"
    with zipfile.ZipFile(wheel) as zf:
        shipped = sorted(n[len(prefix) :] for n in zf.namelist() if n.startswith(prefix))
    assert shipped == _config_files(os.path.join(ROOT, "configs"))

    subprocess.run(
        pip + ["install", "--no-deps", "--target", str(site), str(wheel)],
        check=True,
        env=env,
        timeout=300,
    )
    workdir = tmp_path / "elsewhere"
    workdir.mkdir()
    env = dict(os.environ, PYTHONPATH=str(site))
    proc = subprocess.run(
        [sys.executable, "-c", _INSTALLED_CHECK, str(site)],
        cwd=workdir,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "installed model_zoo ok" in proc.stdout


def test_model_zoo_errors_name_the_config():
    from polar_refine import model_zoo

    with pytest.raises(RuntimeError, match="COCO-InstanceSegmentation/no_such_config.yaml"):
        model_zoo.get_config_file("COCO-InstanceSegmentation/no_such_config.yaml")
    with pytest.raises(RuntimeError, match="trained=True is not supported"):
        model_zoo.get_config(CONTOUR_R50 + ".yaml", trained=True)


# --------------------------------------------------------------------------------------------
# Supported Python versions


def _setup_py_min_python():
    text = open(os.path.join(ROOT, "setup.py"), encoding="utf-8").read()
    m = re.search(r"python_requires\s*=\s*[\"']\s*>=\s*(\d+)\.(\d+)\s*[\"']", text)
    assert m, "setup.py: no python_requires='>=X.Y'"
    return int(m.group(1)), int(m.group(2))


def _setup_sh_version_checks():
    """(kind, version) of every ``sys.version_info`` comparison in scripts/setup.sh."""
    text = open(os.path.join(ROOT, "scripts", "setup.sh"), encoding="utf-8").read()
    checks = []
    for line in text.splitlines():
        if "sys.version_info" not in line:
            continue
        m = re.search(r"sys\.version_info\s*>=\s*\(\s*(\d+)\s*,\s*(\d+)\s*\)", line)
        assert m, f"scripts/setup.sh: not a minimum-version check: {line.strip()}"
        checks.append((int(m.group(1)), int(m.group(2))))
    return text, checks


def test_setup_sh_accepts_what_setup_py_declares():
    minimum = _setup_py_min_python()
    text, checks = _setup_sh_version_checks()
    assert checks, "scripts/setup.sh does not check the interpreter version"
    assert set(checks) == {minimum}, (
        f"setup.py python_requires >= {minimum}, scripts/setup.sh checks {checks}"
    )
    # the default interpreter of setup.sh is one that both accept
    m = re.search(r"PY_BIN=\"\$\{PYTHON:-python(\d+)\.(\d+)\}\"", text)
    assert m, "scripts/setup.sh: no default PY_BIN=${PYTHON:-pythonX.Y}"
    assert (int(m.group(1)), int(m.group(2))) >= minimum


# --------------------------------------------------------------------------------------------
# Wording: comments, docstrings and docs describe the software, not how it was made.
# The patterns are assembled from fragments so that this file does not match them itself.

_SES = "ses" + "sion"
_SEED = "se" + "ed"
_ORDINALS = "this|that|earlier|previous|next|last|first|second|third|fourth|fifth"
PROCESS_WORDS = [
    re.compile(p, re.IGNORECASE)
    for p in (
        rf"\b(?:{_ORDINALS})\s+{_SES}\b",
        r"\b" + "iss" + r"ues?\s*[-#]?\s*\d+",  # a numbered tracker item
        r"\b" + "le" + r"nt\b",
        r"\bthis\s+" + "mach" + r"ine\b",
        r"\bdevelop" + r"ment\s+" + "mach" + r"ines?\b",
        rf"\bthe\s+{_SEED}\b",
        rf"\b{_SEED}'s\b",
        rf"\b{_SEED}\s+formula\b",
    )
]


def find_process_words(root, paths):
    """``file:line: 'phrase', ...`` for every line with process phrases in the text files
    ``paths`` (relative to ``root``); files that are missing, binary or not UTF-8 are skipped."""
    hits = []
    for rel in paths:
        full = os.path.join(root, rel)
        if not os.path.isfile(full):
            continue
        with open(full, "rb") as f:
            data = f.read()
        if b"\0" in data:
            continue
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            continue
        for lineno, line in enumerate(text.splitlines(), 1):
            found = [m.group(0) for p in PROCESS_WORDS for m in p.finditer(line)]
            if found:
                hits.append(f"{rel}:{lineno}: " + ", ".join(map(repr, found)))
    return hits


def test_no_process_words_in_tracked_files():
    hits = find_process_words(ROOT, _git("ls-files").splitlines())
    assert not hits, "wording about how the project was made:\n" + "\n".join(hits)


@pytest.mark.parametrize(
    "phrase",
    [
        "This " + _SES,
        "in an earlier " + _SES,
        "iss" + "ue 11",
        "iss" + "ue #12",
        "iss" + "ue-3",
        "iss" + "ues 4",
        "a GPU was " + "le" + "nt",
        "not on this " + "mach" + "ine",
        "the develop" + "ment " + "mach" + "ine",
        "as in The " + _SEED,
        "the " + _SEED + "'s NMS",
        _SEED + " formula (1)",
    ],
)
def test_process_word_checker_reports_a_phrase(tmp_path, phrase):
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "note.md").write_text(f"A clean first line.\nSee {phrase} here.\n")
    (tmp_path / "image.png").write_bytes(b"\x89PNG\r\n\x1a\n\0\0" + phrase.encode())
    hits = find_process_words(str(tmp_path), ["docs/note.md", "image.png", "deleted.py"])
    assert len(hits) == 1 and hits[0].startswith("docs/note.md:2: "), hits


def test_process_word_checker_passes_ordinary_text(tmp_path):
    text = (
        "torch.manual_"
        + _SEED
        + "(0); random "
        + _SEED
        + " 0; an onnxruntime Inference"
        + _SES.capitalize()
        + "; equival"
        + "ent; sil"
        + "ent; the patent's formula (1)\n"
    )
    (tmp_path / "ok.py").write_text(text)
    assert find_process_words(str(tmp_path), ["ok.py"]) == []
