"""pyproject.toml: metadata setuptools accepts without deprecation, and floors that CI proves.

The floors venv of `.ci/run` installs every dependency at exactly its floor
(`.ci/floors.py`) and runs the fast suite, which proves the floors; these tests keep the
pieces of that proof in step, so a floor cannot be lowered below what CI installs.
"""

import re
import subprocess
import sys
import tomllib
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = ROOT / "pyproject.toml"


def test_pyproject_applies_without_setuptools_warnings():
    """`project.license` as a TOML table is deprecated by setuptools (>= 77 wants an SPDX string)."""
    from setuptools.config.pyprojecttoml import apply_configuration
    from setuptools.dist import Distribution

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        dist = apply_configuration(Distribution(), PYPROJECT)
    about_pyproject = [str(w.message) for w in caught if "project" in str(w.message) or "license" in str(w.message)]
    assert about_pyproject == []
    assert tomllib.loads(PYPROJECT.read_text())["project"]["license"] == "Apache-2.0"
    assert getattr(dist.metadata, "license_expression", None) == "Apache-2.0"


def _torch_floor() -> str:
    deps = tomllib.loads(PYPROJECT.read_text())["project"]["dependencies"]
    (spec,) = [d for d in deps if re.match(r"torch\b", d)]
    return re.search(r">=\s*([\d.]+)", spec).group(1)


def test_torch_floor_is_the_torch_ci_installs_and_pins():
    """torch's floor is proven by CI: .ci/run installs exactly that torch in both venvs, and
    .ci/floors.py pins it in the floors venv."""
    floor = _torch_floor()
    installed = re.findall(r"pip install -q torch==([\d.]+)", (ROOT / ".ci" / "run").read_text())
    assert installed and all(_release(v) == _release(floor) for v in installed), (floor, installed)
    pins = subprocess.run([sys.executable, str(ROOT / ".ci" / "floors.py"), str(PYPROJECT)], check=True,
                          capture_output=True, text=True).stdout.split()
    assert f"torch=={floor}" in pins
    import torch

    assert _release(torch.__version__) >= _release(floor)


def _release(version: str) -> tuple[int, ...]:
    """`2.13.0+cpu` -> (2, 13): the release without its trailing zeros or local label."""
    parts = [int(p) for p in re.match(r"[\d.]+", version).group().strip(".").split(".")]
    while parts and parts[-1] == 0:
        parts.pop()
    return tuple(parts)
