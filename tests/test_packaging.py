"""A non-editable install ships what ``python -m bench.run`` needs: every module of the project's
packages (the built-in ``tasks`` included) and the whole hydra config tree (``configs/``, shipped
as package data of ``bench`` through the link ``bench/configs``). Builds a wheel from a copy of the
sources (so no ``build/`` is left in the checkout and no stale one leaks in) and lists it.
``.ci/run`` goes further and composes a config with only an installed copy on the path."""
from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from bench import CONFIG_DIR

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = sorted(p.name for p in ROOT.iterdir() if (p / "__init__.py").is_file() and p.name != "tests")


def test_the_config_tree_is_top_level_and_the_bench_package_links_it():
    assert (ROOT / "configs").is_dir() and not (ROOT / "configs").is_symlink()
    assert CONFIG_DIR == ROOT / "bench" / "configs" and CONFIG_DIR.resolve() == ROOT / "configs"
    assert (CONFIG_DIR / "bench.yaml").is_file() and (CONFIG_DIR / "pretrain.yaml").is_file()


@pytest.fixture(scope="module")
def wheel_names(tmp_path_factory) -> set[str]:
    pytest.importorskip("setuptools")
    src = tmp_path_factory.mktemp("src")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, src / name)
    for pkg in PACKAGES:
        shutil.copytree(ROOT / pkg, src / pkg, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    out = tmp_path_factory.mktemp("wheel")
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                           "--no-index", "-q", "-w", str(out), str(src)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (wheel,) = out.glob("frozen4d-*.whl")
    return set(zipfile.ZipFile(wheel).namelist())


def test_wheel_ships_every_config_file(wheel_names):
    configs = sorted(p.relative_to(ROOT).as_posix() for p in CONFIG_DIR.rglob("*") if p.is_file())
    assert "bench/configs/bench.yaml" in configs and "bench/configs/data/davis.yaml" in configs
    missing = [c for c in configs if c not in wheel_names]
    assert not missing, f"config files not in the wheel (pyproject [tool.setuptools.package-data]): {missing}"


def test_wheel_ships_every_module(wheel_names):
    assert {"bench", "tasks", "pretrain", "leaderboard"} <= set(PACKAGES)
    modules = sorted(p.relative_to(ROOT).as_posix() for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py"))
    missing = [m for m in modules if m not in wheel_names]
    assert not missing, f"modules not in the wheel (pyproject [tool.setuptools.packages.find]): {missing}"
    assert "tasks/depth.py" in wheel_names  # the built-in tasks the registry imports
