"""Blocks: split / merge (aerestore.blocks) and the blocks stage."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from aerestore.blocks import (
    block_grid,
    block_window,
    BlockGeometry,
    merge_blocks,
    read_geometry,
    reflect_indices,
    run_blocks,
    split_blocks,
    split_images_uint8,
)
from aerestore.data.layout import PrepareError
from aerestore.io import NpyWriter, open_array
from aerestore.params import Params


def test_block_grid_geometry():
    g = block_grid(64, 64, 18, 4)
    assert (g.stride, g.ny, g.nx, g.padded_h, g.padded_w) == (14, 5, 5, 74, 74)
    assert g.ys == (0, 14, 28, 42, 56) and g.per_image == 25
    g = block_grid(10, 33, 5, 0)
    assert (g.ny, g.nx, g.padded_h, g.padded_w) == (2, 7, 10, 35)
    g = block_grid(3, 1, 8, 2)  # smaller than one block: one padded block
    assert (g.ny, g.nx, g.padded_h, g.padded_w) == (1, 1, 8, 8)
    with pytest.raises(ValueError):
        block_grid(8, 8, 4, 4)
    with pytest.raises(ValueError):
        block_grid(0, 8, 4, 1)


def test_reflect_indices():
    # numpy's "reflect" (edge not repeated), periodic beyond one reflection
    for length in (1, 2, 3, 5):
        for padded in (length, length + 1, 3 * length + 4):
            expected = np.pad(np.arange(length), (0, padded - length), mode="reflect")
            np.testing.assert_array_equal(reflect_indices(length, padded), expected)


def naive_split(images: torch.Tensor, size: int, overlap: int) -> torch.Tensor:
    n, c, h, w = images.shape
    g = block_grid(h, w, size, overlap)
    rows = torch.from_numpy(reflect_indices(h, g.padded_h))
    cols = torch.from_numpy(reflect_indices(w, g.padded_w))
    blocks = []
    for i in range(n):
        padded = images[i][:, rows][:, :, cols]
        for y in g.ys:
            for x in g.xs:
                blocks.append(padded[:, y : y + size, x : x + size])
    return torch.stack(blocks)


@pytest.mark.parametrize("h,w,size,overlap", [(7, 9, 4, 1), (5, 5, 8, 3), (12, 6, 5, 0)])
def test_split_matches_naive_loop(h, w, size, overlap):
    x = torch.rand(2, 3, h, w, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(split_blocks(x, size, overlap), naive_split(x, size, overlap), rtol=0, atol=0)


@settings(max_examples=60, deadline=None)
@given(
    h=st.integers(1, 70),
    w=st.integers(1, 70),
    size=st.integers(2, 24),
    data=st.data(),
    channels=st.sampled_from([1, 3]),
    n=st.integers(1, 2),
)
def test_merge_split_round_trip(h, w, size, data, channels, n):
    overlap = data.draw(st.integers(0, size - 1), label="overlap")
    seed = data.draw(st.integers(0, 2**16), label="seed")
    x = torch.rand(n, channels, h, w, generator=torch.Generator().manual_seed(seed))
    blocks = split_blocks(x, size, overlap)
    g = block_grid(h, w, size, overlap)
    assert blocks.shape == (n * g.ny * g.nx, channels, size, size)
    y = merge_blocks(blocks, h, w, size, overlap)
    assert y.shape == x.shape
    torch.testing.assert_close(y, x, rtol=0, atol=1e-5)
    # the uint8 numpy path cuts exactly the same blocks
    u8 = (x * 255).round().to(torch.uint8)
    b_np, index = split_images_uint8(u8.permute(0, 2, 3, 1).numpy(), size, overlap)
    np.testing.assert_array_equal(b_np, split_blocks(u8.float(), size, overlap).to(torch.uint8).numpy())
    assert index.dtype == np.int32 and index.shape == (len(b_np), 3)


def test_merge_has_no_seams():
    # every block of a constant image holds the constant: the weighted average is it
    const = torch.full((1, 3, 37, 23), 0.37)
    y = merge_blocks(split_blocks(const, 9, 3), 37, 23, 9, 3)
    torch.testing.assert_close(y, const, rtol=0, atol=1e-6)
    # blocks that disagree (0 and 1 alternately) merge to convex combinations: the
    # window is positive everywhere, so no pixel (not even at a block edge) is undefined
    g = block_grid(40, 40, 10, 4)
    blocks = torch.zeros(g.per_image, 1, 10, 10)
    blocks[::2] = 1.0
    y = merge_blocks(blocks, 40, 40, 10, 4)
    assert torch.isfinite(y).all() and y.min() >= 0 and y.max() <= 1


def test_window_positive_and_peaked():
    w = block_window(8)
    assert (w > 0).all()
    assert w[3:5, 3:5].min() == w.max()
    assert w[0, 0] == w.min()
    torch.testing.assert_close(w, w.T)


def test_whole_image_blocks():
    x = torch.rand(3, 1, 16, 16)
    blocks = split_blocks(x, 16, 0)
    torch.testing.assert_close(blocks, x, rtol=0, atol=0)
    torch.testing.assert_close(merge_blocks(blocks, 16, 16, 16, 0), x, rtol=0, atol=1e-6)
    imgs = np.random.default_rng(0).integers(0, 256, (3, 16, 16, 3), dtype=np.uint8)
    b, index = split_images_uint8(imgs, 16, 0, first_image=5)
    np.testing.assert_array_equal(b, imgs.transpose(0, 3, 1, 2))
    np.testing.assert_array_equal(index, [[5, 0, 0], [6, 0, 0], [7, 0, 0]])


def test_split_images_uint8_index():
    imgs = np.random.default_rng(0).integers(0, 256, (2, 20, 20, 1), dtype=np.uint8)
    b, index = split_images_uint8(imgs, 8, 2)
    g = block_grid(20, 20, 8, 2)
    assert (g.ny, g.nx) == (3, 3)
    assert b.shape == (18, 1, 8, 8)
    for k, (i, y, x) in enumerate(index):
        if y + 8 <= 20 and x + 8 <= 20:
            np.testing.assert_array_equal(b[k, 0], imgs[i, y : y + 8, x : x + 8, 0])
    assert index[9].tolist() == [1, 0, 0] and index[5].tolist() == [0, 6, 12]


# -------------------------------------------------------------------- stage
def write_prepared(folder, rng, sizes, hw=20, c=3):
    for split, n in sizes.items():
        clean = rng.integers(0, 256, (n, hw, hw, c), dtype=np.uint8)
        degraded = rng.integers(0, 256, (n, hw, hw, c), dtype=np.uint8)
        mask = np.zeros((n, hw, hw, 2), np.uint8)  # channels: blur, noise
        if n:
            mask[0, 2:5, 3:6, 0] = 200  # only in the first image's top-left block
            mask[0, 0:6, 0:6, 1] = 255  # noise over most of that block (36 of its 64 pixels)
        for name, arr in (("clean", clean), ("degraded", degraded), ("mask", mask)):
            with NpyWriter(folder / split / f"{name}.npy", arr.shape) as w:
                w.write(0, arr)


def test_run_blocks(tmp_path, monkeypatch):
    import aerestore.blocks as blocks_mod

    monkeypatch.setattr(blocks_mod, "CHUNK_BYTES", 1)  # one image per chunk
    rng = np.random.default_rng(0)
    prepared = tmp_path / "prepared"
    write_prepared(prepared, rng, {"train": 3, "val": 0, "test": 2})
    params = Params.model_validate({"data": {"image_size": 20}, "blocks": {"size": 8, "overlap": 2}})
    out = tmp_path / "blocks"
    metrics = run_blocks(params, prepared, out, tmp_path / "blocks.json", progress=False)
    assert json.loads((tmp_path / "blocks.json").read_text()) == metrics
    for split, n_img in (("train", 3), ("val", 0), ("test", 2)):
        clean = open_array(out / split / "clean.npy")
        degraded = open_array(out / split / "degraded.npy")
        mask = open_array(out / split / "mask.npy")
        index = open_array(out / split / "index.npy")
        assert clean.shape == degraded.shape == (n_img * 9, 3, 8, 8) and clean.dtype == np.uint8
        assert mask.shape == (n_img * 9, 2, 8, 8) and index.shape == (n_img * 9, 3) and index.dtype == np.int32
        m = metrics["splits"][split]
        assert m["blocks"] == n_img * 9 and m["blocks_per_image"] == 9 and m["grid"] == [3, 3]
        if n_img:
            src = open_array(prepared / split / "degraded.npy")
            restored = merge_blocks(torch.from_numpy(np.array(degraded)).float(), 20, 20, 8, 2)
            np.testing.assert_array_equal(restored.round().to(torch.uint8).permute(0, 2, 3, 1).numpy(), src)
            assert index[:, 0].tolist() == sorted(index[:, 0].tolist())
            assert index[-1].tolist() == [n_img - 1, 12, 12]
            assert m["masked_share"] == pytest.approx(1 / (n_img * 9))
            assert mask[0].any() and not mask[1:].any()
            # block 0 is mostly noise (36 of 64 pixels); every other block is clean
            assert m["noise_blocks"] == pytest.approx(1 / (n_img * 9))
            assert m["blur_blocks"] == 0 and m["clean_blocks"] == pytest.approx(1 - 1 / (n_img * 9))
    assert metrics["splits"]["val"]["masked_share"] is None
    assert read_geometry(out) == BlockGeometry(size=8, overlap=2, image_size=20)


def test_read_geometry_names_a_missing_or_bad_file(tmp_path):
    with pytest.raises(PrepareError, match=r"geometry\.json: not found .*rerun the blocks stage"):
        read_geometry(tmp_path)
    (tmp_path / "geometry.json").write_text('{"size": 8}')
    with pytest.raises(PrepareError, match=r"geometry\.json: not a block geometry \(KeyError"):
        read_geometry(tmp_path)
    (tmp_path / "geometry.json").write_text('{"size": 8, "overlap": 8}')
    with pytest.raises(PrepareError, match=r"geometry\.json: size 8, overlap 8"):
        read_geometry(tmp_path)


def test_run_blocks_bad_input_keeps_previous_output(tmp_path):
    rng = np.random.default_rng(0)
    prepared = tmp_path / "prepared"
    write_prepared(prepared, rng, {"train": 1, "val": 1, "test": 1})
    params = Params.model_validate({"data": {"image_size": 20}, "blocks": {"size": 8, "overlap": 2}})
    out = tmp_path / "blocks"
    run_blocks(params, prepared, out, tmp_path / "m.json", progress=False)
    before = (out / "train" / "clean.npy").read_bytes()
    (prepared / "val" / "mask.npy").unlink()
    with pytest.raises(PrepareError, match=r"val/mask\.npy: not found"):
        run_blocks(params, prepared, out, tmp_path / "m.json", progress=False)
    np.save(prepared / "val" / "mask.npy", np.zeros((1, 20, 19, 2), np.uint8))
    with pytest.raises(PrepareError, match=r"val/mask\.npy: shape"):
        run_blocks(params, prepared, out, tmp_path / "m.json", progress=False)
    assert (out / "train" / "clean.npy").read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["blocks", "m.json", "prepared"]
