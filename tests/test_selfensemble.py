"""The geometric self-ensemble (aerestore.cli.selfensemble) and its two commands'
``--self-ensemble`` (``aerestore restore``, ``aerestore cbsd68``)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from aerestore.cli import selfensemble as SE
from aerestore.cli import main


def _images(shape=(2, 3, 10, 14), seed=0) -> np.ndarray:
    return np.random.default_rng(seed).random(shape, dtype=np.float32)


def _reference(fn, x: np.ndarray) -> np.ndarray:
    """The same mean written independently with torch: T = rot90^k after a left-right flip,
    T^-1 = flip after rot90^-k."""
    t = torch.from_numpy(x)
    outs = []
    for m in (False, True):
        for k in range(4):
            a = torch.rot90(t.flip(-1) if m else t, k, (-2, -1))
            y = torch.rot90(torch.from_numpy(fn(a.numpy().copy())), -k, (-2, -1))
            outs.append(y.flip(-1) if m else y)
    return torch.stack(outs).double().mean(0).float().numpy()


def test_the_eight_orientations_are_distinct_and_each_is_undone():
    x = _images((1, 1, 5, 7))
    seen = set()
    for turns, mirrored in SE.ORIENTATIONS:
        o = SE.orient(x, turns, mirrored)
        seen.add(o.tobytes() + bytes(o.shape))
        np.testing.assert_array_equal(SE.unorient(o, turns, mirrored), x)
    assert len(SE.ORIENTATIONS) == 8 and len(seen) == 8


def test_an_equivariant_restorer_is_unchanged_and_another_is_averaged_over_the_group():
    x = _images()
    # a symmetric 3x3 box filter commutes with flips and quarter turns
    box = lambda a: torch.nn.functional.avg_pool2d(torch.from_numpy(a), 3, 1, 1, count_include_pad=False).numpy()  # noqa: E731
    np.testing.assert_allclose(SE.self_ensemble(box, x), box(x), atol=1e-6)
    # a restorer that is not equivariant (adds a ramp along the width, whichever way up the image is)
    ramp = lambda a: a + np.linspace(0, 1, a.shape[-1], dtype=np.float32)  # noqa: E731
    got = SE.self_ensemble(ramp, x)
    np.testing.assert_allclose(got, _reference(ramp, x), atol=1e-6)
    assert not np.allclose(got, ramp(x), atol=1e-3)
    # the eight ramps, turned back, average to 0.5 everywhere
    np.testing.assert_allclose(got - x, 0.5, atol=1e-6)


def test_a_restorer_that_changes_the_shape_is_refused():
    with pytest.raises(ValueError, match="returned shape"):
        SE.self_ensemble(lambda a: a[..., 1:], _images())
    with pytest.raises(ValueError, match=r"\(N, C, H, W\)"):
        SE.self_ensemble(lambda a: a, _images((3, 10, 14)))


@pytest.fixture(scope="module")
def restorer_dir(tmp_path_factory):
    from helpers import save_tiny_restorer

    model = tmp_path_factory.mktemp("se") / "models" / "conv_ae"
    save_tiny_restorer(model, block=16)
    return model


def test_restore_self_ensemble_writes_the_mean_of_the_eight_restores(restorer_dir, tmp_path):
    from aerestore.restore import Restorer

    img = np.random.default_rng(3).integers(0, 256, (30, 44, 3), dtype=np.uint8)
    Image.fromarray(img).save(tmp_path / "photo.png")
    for flag, out in (([], tmp_path / "one"), (["--self-ensemble"], tmp_path / "eight")):
        assert main(["restore", str(tmp_path / "photo.png"), "-m", str(restorer_dir), "-o", str(out),
                     "--no-progress", *flag]) == 0
    single = np.asarray(Image.open(tmp_path / "one" / "photo.png"))
    eight = np.asarray(Image.open(tmp_path / "eight" / "photo.png"))
    restorer = Restorer.load(restorer_dir)
    x = (img.astype(np.float32) / 255.0).transpose(2, 0, 1)[None]
    ref = _reference(lambda a: restorer.restore_float(torch.from_numpy(a)).numpy(), x)[0].transpose(1, 2, 0)
    ref = np.clip(np.rint(ref * 255.0), 0, 255).astype(np.uint8)
    assert eight.shape == img.shape
    assert np.abs(eight.astype(int) - ref).max() <= 1  # rounding at a .5 boundary
    assert (eight != single).mean() > 0.1  # the flag is not ignored


def test_cbsd68_scores_the_self_ensemble_as_a_row_of_its_own(restorer_dir, tmp_path, capsys):
    rng = np.random.default_rng(7)
    folder = tmp_path / "imgs"
    folder.mkdir()
    for i in range(2):
        Image.fromarray(rng.integers(64, 193, (32, 40, 3), dtype=np.uint8)).save(folder / f"{i:04d}.png")
    out = tmp_path / "bench"
    args = ["cbsd68", str(folder), "--classical", "--sigmas", "10", "-o", str(out)]
    assert main([*args, "--model", str(restorer_dir), "--label", "tiny", "--self-ensemble"]) == 0
    rows = json.loads(out.with_suffix(".json").read_text())["rows"]
    assert [r["name"] for r in rows] == ["noisy input", "tiny", "tiny, self-ensemble x8"]
    assert rows[1]["per_image"] != rows[2]["per_image"]
    assert main([*args, "--self-ensemble"]) == 2
    assert "give at least one --model" in capsys.readouterr().err


def test_the_cbm3d_self_ensemble_turns_each_of_its_eight_runs_back(monkeypatch):
    """bm3d_x8 (the anchor's side of --self-ensemble): CBM3D is called on (H, W, 3) images, so
    the orientations are taken over the right axes and undone; a stand-in that is not
    equivariant (a ramp along the width) averages to 0.5, and the real CBM3D differs a little
    from its single run."""
    from aerestore import benchmark_sets as B

    x = np.random.default_rng(1).random((24, 32, 3), dtype=np.float32)
    calls = []

    def ramp(a, sigma):
        calls.append(a.shape)
        return a + np.linspace(0, 1, a.shape[1], dtype=np.float32)[None, :, None]

    with monkeypatch.context() as m:
        m.setattr(B, "cbm3d", ramp)
        got = B.cbm3d_x8(x, 25.0)
    assert len(calls) == 8 and {(24, 32, 3), (32, 24, 3)} == set(calls)
    np.testing.assert_allclose(got - x, 0.5, atol=1e-6)
    method = B.classical_method("bm3d_x8")
    assert method.slow and "self-ensemble x8" in method.name
    noisy = B.noisy_image((x * 255).astype(np.uint8), 25, 0, 0)
    one, eight = B.cbm3d(noisy, 25.0), B.cbm3d_x8(noisy, 25.0)
    assert eight.shape == one.shape and 0 < np.abs(eight - one).max() < 0.1
