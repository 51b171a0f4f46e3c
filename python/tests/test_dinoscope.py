"""dinoscope's Python package against the `dinoscope` CLI on the demo data:
the CLI is the reference (its scores, maps, model files and reports), the
package must give the same numbers through the shared library."""
import csv
import gc
import json
import os
import subprocess
import sys
import tracemalloc

import numpy as np
import pytest
from conftest import BACKBONE, REPO, SIZE, cli

import dinoscope


def cli_scores(model, inputs, *extra):
    out = cli("score", "--model", model, *extra, *inputs)
    rows = list(csv.DictReader(out.splitlines()))
    return rows


def test_python_scores_equal_the_cli_scores_on_the_demo_data(demo, cli_model, tmp_path):
    rows = cli_scores(cli_model, ["--recursive", demo / "test"], "--maps", tmp_path / "maps")
    m = dinoscope.load(cli_model)
    out = m.score(demo / "test", recursive=True)
    assert out["paths"] == [r["path"] for r in rows]
    assert m.scorers == ("knn", "gaussian", "patchbank", "padim")
    for name in m.scorers:
        # the CLI prints %.9g: a float32 survives it exactly
        want = np.array([float(r[name]) for r in rows], dtype=np.float32)
        np.testing.assert_array_equal(out["scores"][name], want, err_msg=name)
        decided = np.array([r[name + "_anomalous"] == "1" for r in rows])
        np.testing.assert_array_equal(out["anomalous"][name], decided, err_msg=name)
    # maps: the CLI's <stem>.npy (float32 [H, W] at the original size), bit for bit
    for path, got in zip(out["paths"], out["maps"]):
        stem = os.path.splitext(os.path.basename(path))[0]
        np.testing.assert_array_equal(got, np.load(tmp_path / "maps" / (stem + ".npy")), err_msg=stem)
    assert out["patch_scores"].shape == (len(rows), SIZE // 14, SIZE // 14)


def test_python_fit_writes_the_model_file_the_cli_writes(demo, cli_model, backbone, tmp_path):
    m = dinoscope.fit(backbone, demo / "labels.csv", scorers=("knn", "gaussian", "patchbank", "padim"), size=SIZE)
    m.save(tmp_path / "py.dsm")
    assert (tmp_path / "py.dsm").read_bytes() == cli_model.read_bytes()
    # and the in-memory model scores like the loaded file
    loaded = dinoscope.load(tmp_path / "py.dsm")
    imgs = sorted(str(p) for p in (demo / "test" / "anomaly").iterdir())[:4]
    a, b = m.score(imgs), loaded.score(imgs)
    for name in m.scorers:
        np.testing.assert_array_equal(a["scores"][name], b["scores"][name])
    assert m.thresholds == loaded.thresholds and m.thresholds.keys() == set(m.scorers)


def test_fit_options_map_to_the_cli_flags(demo, backbone, tmp_path):
    cli("fit", "--backbone", BACKBONE, "--size", SIZE, "--scorer", "patchbank,knn", "--coreset", 0.25,
        "--metric", "l2", "--reduce", "max", "--knn-k", 3, "--val-split", 0.2, "--fpr", 0.05, "--seed", 7,
        "--bank", "f16", "--out", tmp_path / "cli.dsm", demo / "train" / "normal")
    m = dinoscope.fit(backbone, demo / "train" / "normal", scorers="patchbank,knn", size=SIZE, coreset=0.25,
                      metric="l2", reduce="max", knn_k=3, val_split=0.2, fpr=0.05, seed=7, bank="f16")
    m.save(tmp_path / "py.dsm")
    assert (tmp_path / "py.dsm").read_bytes() == (tmp_path / "cli.dsm").read_bytes()


def test_evaluate_gives_the_figures_of_the_cli_report(demo, cli_model, tmp_path):
    cli("eval", "--model", cli_model, "--data", demo / "labels.csv", "--out", tmp_path / "report")
    want = json.loads((tmp_path / "report" / "report.json").read_text())
    got = dinoscope.evaluate(dinoscope.load(cli_model), demo / "labels.csv")
    assert [s["name"] for s in got["scorers"]] == [s["name"] for s in want["scorers"]]
    assert got["test_set"] == want["test_set"]
    for g, w in zip(got["scorers"], want["scorers"]):
        for key in ("image_auroc", "average_precision", "f1_max", "f1_threshold", "pixel_auroc", "aupro"):
            assert g[key] == w[key], (g["name"], key)
    assert got["scorers"][2]["pixel_auroc"] is not None  # patchbank maps against the demo's masks


def test_features_of_arrays_equal_features_of_their_files(demo, backbone):
    paths = sorted(str(p) for p in (demo / "train" / "normal").iterdir())[:3]
    from_files = backbone.features(paths, size=SIZE)
    assert from_files.shape == (3, (SIZE // 14) ** 2, 128) and from_files.dtype == np.float32
    arrays = [dinoscope.imread(p) for p in paths]
    assert arrays[0].dtype == np.uint8 and arrays[0].shape == (128, 128, 3)
    np.testing.assert_array_equal(backbone.features(arrays, size=SIZE), from_files)
    np.testing.assert_array_equal(backbone.features(np.stack(arrays), size=SIZE), from_files)  # a [B,H,W,3] batch
    # float in [0, 1] is the same image; a grey [H, W] is replicated to RGB as the files' grey is
    np.testing.assert_array_equal(backbone.features([a / 255.0 for a in arrays], size=SIZE), from_files)
    grey = np.ascontiguousarray(arrays[0][:, :, 0])
    np.testing.assert_array_equal(backbone.features(grey, size=SIZE),
                                  backbone.features(np.repeat(grey[:, :, None], 3, axis=2), size=SIZE))
    cls = backbone.features(paths, size=SIZE, cls=True)
    assert cls.shape == (3, 128)


def test_uint8_arrays_are_used_without_a_copy():
    a = np.zeros((28, 42, 3), dtype=np.uint8)
    inputs = dinoscope._Inputs([a])
    assert inputs.arrays[0] is a
    assert inputs._structs[0].width == 42 and inputs._structs[0].height == 28
    assert inputs._c_images[0].contents.pixels[0] == 0
    a[0, 0, 0] = 7
    assert inputs._c_images[0].contents.pixels[0] == 7  # the library reads numpy's buffer itself


def test_scores_and_maps_of_arrays_round_trip_through_a_saved_model(demo, cli_model, tmp_path):
    m = dinoscope.load(cli_model)
    paths = sorted(str(p) for p in (demo / "test" / "anomaly").iterdir())[:3]
    by_path = m.score(paths)
    by_array = m.score([dinoscope.imread(p) for p in paths])
    for name in m.scorers:
        np.testing.assert_array_equal(by_array["scores"][name], by_path["scores"][name])
    for a, b in zip(by_array["maps"], by_path["maps"]):
        np.testing.assert_array_equal(a, b)
    # features -> score_features is the same as score()
    f = m.backbone.features(paths, size=m.size, layers=m.layers)
    sf = m.score_features(f)
    for name in m.scorers:
        np.testing.assert_array_equal(sf["scores"][name], by_path["scores"][name])
    np.testing.assert_array_equal(sf["patch_scores"], by_path["patch_scores"])
    m.save(tmp_path / "again.dsm")
    assert (tmp_path / "again.dsm").read_bytes() == cli_model.read_bytes()


def test_bad_input_raises_with_the_library_message(demo, cli_model, backbone, tmp_path):
    with pytest.raises(dinoscope.Error, match="nope.safetensors"):
        dinoscope.Backbone(tmp_path / "nope.safetensors")
    with pytest.raises(dinoscope.Error, match="missing.png"):
        backbone.features([str(tmp_path / "missing.png")], size=SIZE)
    (tmp_path / "text.png").write_text("not an image")
    with pytest.raises(dinoscope.Error, match="not an image"):
        backbone.features([str(tmp_path / "text.png")], size=SIZE)
    with pytest.raises(dinoscope.Error, match="multiple of 14|multiple"):
        backbone.features(np.zeros((20, 20), np.uint8), size=100)
    bad = tmp_path / "bad.dsm"
    bad.write_bytes(cli_model.read_bytes()[:1000])
    with pytest.raises(dinoscope.Error, match="bad.dsm"):
        dinoscope.load(bad)
    with pytest.raises(dinoscope.Error, match="unknown|scorer"):
        dinoscope.fit(backbone, demo / "train" / "normal", scorers=("knn", "bogus"), size=SIZE)
    with pytest.raises(dinoscope.Error, match="twice"):
        dinoscope.fit(backbone, demo / "train" / "normal", scorers=("knn", "knn"), size=SIZE)
    with pytest.raises(ValueError, match=r"\[H, W\]"):
        backbone.features(np.zeros((4, 4, 4, 2), np.uint8), size=SIZE)
    with pytest.raises(ValueError, match="NaN"):
        backbone.features(np.full((28, 28), np.nan), size=SIZE)
    with pytest.raises(TypeError):
        backbone.features([1, 2], size=SIZE)
    m = dinoscope.load(cli_model)
    with pytest.raises(ValueError, match="features must be"):
        m.score_features(np.zeros((1, 3, 128), np.float32))
    m.close()
    with pytest.raises(ValueError, match="closed"):
        m.score_features(np.zeros((1, 64, 128), np.float32))


def test_a_model_refuses_a_different_backbone(cli_model, tmp_path):
    other = dinoscope.Backbone(os.path.join(REPO, "tests", "fixtures", "vit", "reg_swiglu.safetensors"))
    m = dinoscope.load(cli_model, backbone=other)
    with pytest.raises(dinoscope.Error, match="backbone"):
        m.score([np.zeros((112, 112), np.uint8)])


def _rss_bytes():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def test_no_leaks_over_1000_calls(demo, cli_model):
    bb = dinoscope.Backbone(BACKBONE, threads=1)
    img = dinoscope.imread(sorted((demo / "test" / "anomaly").iterdir())[0])
    small = np.zeros((28, 28), np.uint8)
    m = dinoscope.load(cli_model, backbone=bb)
    f = bb.features(img, size=SIZE)

    def calls(n):
        for _ in range(n):
            bb.features(small, size=28)          # pipeline + sink callback
            m.score_features(f)
            m.score([img])                       # pipeline, scorers, maps
            with dinoscope.load(cli_model, backbone=bb) as m2:
                m2.thresholds
            try:
                bb.features(small, size=100)     # an error from the library
            except dinoscope.Error:
                pass

    calls(50)  # warm-up: allocator pools, libvips caches, ctypes thunks
    gc.collect()
    tracemalloc.start()
    rss0 = _rss_bytes()
    snap0 = tracemalloc.take_snapshot()
    calls(1000)
    gc.collect()
    py_growth = sum(s.size_diff for s in tracemalloc.take_snapshot().compare_to(snap0, "filename"))
    tracemalloc.stop()
    rss_growth = _rss_bytes() - rss0
    print("1000 calls: python heap %+d bytes, RSS %+d bytes" % (py_growth, rss_growth))
    assert py_growth < 256 * 1024
    # one call allocates ~40 kB of numpy arrays and a model mapping: a leak of any of them x1000 exceeds this
    assert rss_growth < 8 * 1024 * 1024


def test_pip_installs_the_package_offline(tmp_path):
    venv = tmp_path / "venv"
    # Debian's python3 is externally managed (PEP 668): install into a venv that sees its numpy and
    # setuptools, with Debian's pip (--python), from nothing but the source folder
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", "--system-site-packages", str(venv)], check=True)
    pip = [sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python"), "install", "-q", "--no-index",
           "--no-build-isolation", os.path.join(REPO, "python")]
    subprocess.run(pip, check=True, capture_output=True)
    env = {k: v for k, v in os.environ.items() if k != "DINOSCOPE_LIBRARY" and k != "PYTHONPATH"}
    code = "import dinoscope, os; print(dinoscope.__file__, dinoscope.version(), dinoscope._lib.lib.path)"
    out = subprocess.run([str(venv / "bin" / "python"), "-c", code], check=True, capture_output=True, text=True,
                         cwd=str(tmp_path), env=env).stdout
    assert str(venv) in out.split()[0] and out.split()[1] == dinoscope.version()
