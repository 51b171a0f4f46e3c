"""Shared fixtures: the demo data (ds_make_demo_data), the tiny random DINOv2
of the C tests' fixtures, and models fitted by the CLI and by Python.
env (set by CTest, else found from the repository): DS_BUILD, DS_FIXTURES."""
import os
import subprocess

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BUILD = os.environ.get("DS_BUILD", os.path.join(REPO, "build"))
FIXTURES = os.environ.get("DS_FIXTURES", os.path.join(REPO, "tests", "fixtures"))
CLI = os.path.join(BUILD, "dinoscope")
BACKBONE = os.path.join(FIXTURES, "vit", "plain.safetensors")  # D=128, 4 blocks, random weights
SIZE = 112

os.environ.setdefault("DINOSCOPE_LIBRARY", os.path.join(BUILD, "libdinoscope.so.0"))


def cli(*args):
    return subprocess.run([CLI, *map(str, args)], check=True, capture_output=True, text=True).stdout


@pytest.fixture(scope="session")
def demo(tmp_path_factory):
    d = tmp_path_factory.mktemp("demo") / "data"
    subprocess.run([os.path.join(BUILD, "ds_make_demo_data"), str(d)], check=True, capture_output=True)
    return d


@pytest.fixture(scope="session")
def cli_model(demo, tmp_path_factory):
    """`dinoscope fit` on the demo's labels.csv with every scorer, padim included."""
    m = tmp_path_factory.mktemp("cli") / "model.dsm"
    cli("fit", "--backbone", BACKBONE, "--size", SIZE, "--scorer", "all", "--gaussian-per-patch", "--out", m,
        demo / "labels.csv")
    return m


@pytest.fixture(scope="session")
def backbone():
    import dinoscope
    with dinoscope.Backbone(BACKBONE) as bb:
        yield bb
