"""benchmarks/real_photos.py: the oracle row is told the damage with the denoiser the evaluate
stage gives it (BM3D whenever the package is there), whichever classical rows were asked for."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from aerestore.classical import RESTORERS
from helpers import save_tiny_restorer

ROOT = Path(__file__).resolve().parents[1]


def _load():
    spec = importlib.util.spec_from_file_location("real_photos", ROOT / "benchmarks" / "real_photos.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    """A tiny trained restorer and two photos (any RGB image the script can crop and resize)."""
    root = tmp_path_factory.mktemp("real_photos")
    save_tiny_restorer(root / "model")
    rng = np.random.default_rng(0)
    photos = []
    for i in range(2):
        photos.append(root / f"p{i}.png")
        Image.fromarray((rng.random((40, 48, 3)) * 255).astype(np.uint8)).save(photos[-1])
    return root / "model", photos


def test_the_oracle_denoiser_does_not_depend_on_the_rows_asked_for(inputs, monkeypatch, capsys):
    """Asked for TV only (no "bm3d" row), the oracle is still BM3D's: it bounds the classical side."""
    model_dir, photos = inputs
    mod = _load()
    told = []

    def fake_oracle(x, clean, mask, denoiser="bm3d", workers=None):
        told.append(denoiser)
        return x, {}

    monkeypatch.setattr(mod, "oracle_restore", fake_oracle)
    monkeypatch.setattr(sys, "argv", ["real_photos.py", *map(str, photos), "--model", str(model_dir),
                                      "--size", "32", "--classical", "tv", "--oracle"])
    mod.main()
    expected = "bm3d" if RESTORERS["bm3d"].missing() is None else "nlmeans"
    assert told == [expected, expected]
    out = capsys.readouterr().out
    assert f"oracle denoiser: {expected}" in out
    assert "oracle" in out.split("mean PSNR")[1]


def test_by_default_the_anchors_are_the_fair_ones_with_the_settings_chosen_on_validation(
        inputs, monkeypatch, capsys, tmp_path):
    """Without --classical and --settings: NL-means and BM3D at the estimated noise map (not at one
    level per image, which leaves the noisy regions as they are) and the evaluate stage's settings."""
    model_dir, photos = inputs
    mod = _load()
    chosen = tmp_path / "evaluate_details.json"
    chosen.write_text('{"classical_settings": {"tv": {"weight": 0.37}}}')
    monkeypatch.setattr(mod, "DEFAULT_SETTINGS", chosen)
    asked = []

    class Stub:
        """Stands in for a noise-level restorer: this test checks which rows run, fast."""
        tunable: dict = {}

        def __init__(self, name):
            self.name = name

        def missing(self):
            return None

        def with_settings(self, **kw):
            return self

        def __call__(self, x):
            asked.append(self.name)
            return x

    stubs = {n: Stub(n) for n in ("nlmeans", "bm3d", "nlmeans_map", "bm3d_map")}
    monkeypatch.setattr(mod, "RESTORERS", {**RESTORERS, **stubs})
    monkeypatch.setattr(sys, "argv", ["real_photos.py", *map(str, photos), "--model", str(model_dir),
                                      "--size", "32"])
    mod.main()
    out = capsys.readouterr().out
    assert sorted(set(asked)) == ["bm3d_map", "nlmeans_map"]
    assert f"settings from {chosen}" in out
    assert "'tv': {'weight': 0.37}" in out


def test_an_unknown_classical_row_is_refused_by_name(inputs, monkeypatch, capsys):
    model_dir, photos = inputs
    mod = _load()
    monkeypatch.setattr(sys, "argv", ["real_photos.py", *map(str, photos), "--model", str(model_dir),
                                      "--classical", "bm4d"])
    with pytest.raises(SystemExit):
        mod.main()
    assert "bm4d" in capsys.readouterr().err


def test_a_settings_file_that_is_not_evaluate_details_is_refused_by_name(inputs, monkeypatch, tmp_path):
    model_dir, photos = inputs
    mod = _load()
    bad = tmp_path / "details.json"
    bad.write_text("not json")
    for path in (bad, tmp_path / "missing.json"):
        monkeypatch.setattr(sys, "argv", ["real_photos.py", *map(str, photos), "--model", str(model_dir),
                                          "--classical", "tv", "--settings", str(path)])
        with pytest.raises(SystemExit, match=path.name):
            mod.main()
