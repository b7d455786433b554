"""Attribute directions (aerestore.attributes): CelebA's attribute file, prepared images'
file names, mean-code differences and their grids, on a made-up attribute file."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from aerestore import attributes as A
from aerestore import explore as X
from aerestore.params import ExploreParams

from helpers import fit_to, photo_images, tiny_model


def write_attr(path, files, names, values, count=None):
    lines = [str(len(files) if count is None else count), " ".join(names)]
    lines += [f"{f} " + " ".join(f"{v:2d}" for v in row) for f, row in zip(files, values)]
    path.write_text("\n".join(lines) + "\n")
    return path


def test_read_attributes_and_labels(tmp_path):
    p = write_attr(tmp_path / "list_attr_celeba.txt", ["000001.jpg", "000002.jpg"], ["Smiling", "Eyeglasses"],
                   [[1, -1], [-1, -1]])
    a = A.read_attributes(p)
    assert a.names == ["Smiling", "Eyeglasses"]
    labels = a.labels(["img_align_celeba/000002.jpg", "000001.jpg"], ["Eyeglasses", "Smiling"])
    np.testing.assert_array_equal(labels, [[False, False], [False, True]])
    with pytest.raises(ValueError, match=r"no attribute\(s\) \['Bald'\]"):
        a.labels(["000001.jpg"], ["Bald"])
    with pytest.raises(ValueError, match="no row for image '000003.jpg'"):
        a.labels(["000003.jpg"], ["Smiling"])


@pytest.mark.parametrize("count,rows,match", [
    (3, [[1, -1], [-1, -1]], "line 1 says 3 images, the file has 2 rows"),
    (2, [[1, -1], [-1, 0]], r":4: values must be 1 or -1"),
    (2, [[1, -1], [-1]], r":4: expected a file name and 2 values, got 2 fields"),
])
def test_malformed_attribute_files_name_the_file_and_line(tmp_path, count, rows, match):
    p = write_attr(tmp_path / "attr.txt", ["a.jpg", "b.jpg"], ["Smiling", "Young"], rows, count)
    with pytest.raises(ValueError, match=match):
        A.read_attributes(p)
    with pytest.raises(FileNotFoundError, match="attribute file not found"):
        A.read_attributes(tmp_path / "missing.txt")


def test_prepared_origins_follow_the_manifest_and_the_copies(tmp_path):
    (tmp_path / "manifest.csv").write_text(
        "file,split,width,height,sha256\nimages/b.jpg,train,9,9,x\nimages/c.jpg,test,9,9,y\nimages/a.jpg,train,9,9,z\n")
    (tmp_path / "origins.csv").write_text(
        "file,origin\nimages/a.jpg,img_align_celeba/000007.jpg\nimages/b.jpg,000003.jpg\nimages/c.jpg,000001.jpg\n")
    assert A.prepared_origins(tmp_path, "train", 2) == ["000003.jpg", "img_align_celeba/000007.jpg"]
    assert A.prepared_origins(tmp_path, "train", 4) == ["000003.jpg"] * 2 + ["img_align_celeba/000007.jpg"] * 2
    with pytest.raises(ValueError, match="lists 2 train images, the prepared split has 3 rows"):
        A.prepared_origins(tmp_path, "train", 3)


def test_params_validate_the_attribute_keys():
    assert ExploreParams(attributes=["Smiling"], attributes_file="a.txt").attributes == ["Smiling"]
    with pytest.raises(ValueError, match="explore.attributes needs explore.attributes_file"):
        ExploreParams(attributes=["Smiling"])
    with pytest.raises(ValueError, match="names repeat"):
        ExploreParams(attributes=["Smiling", "Smiling"], attributes_file="a.txt")
    with pytest.raises(ValueError, match="attribute_scales"):
        ExploreParams(attribute_scales=[])


def test_a_direction_moves_the_decoded_images_along_the_attribute(tmp_path):
    """A made-up attribute 'Dark' (the darker half of 32 photo crops): its direction is the
    mean code of the dark images minus that of the others, and decoding code + t * direction
    darkens the images as t grows."""
    torch.set_num_threads(1)
    images = photo_images(32, 32, seed=5)
    x = X.to_tensor(images)
    codec = X.LatentCodec(fit_to(tiny_model("vae", block=32, latent=16), x, steps=40))
    brightness = images.reshape(32, -1).mean(1)
    files = [f"{i:06d}.jpg" for i in range(32)]
    dark = brightness < np.median(brightness)
    p = write_attr(tmp_path / "attr.txt", files, ["Dark", "Odd"],
                   [[1 if d else -1, 1 if i % 2 else -1] for i, d in enumerate(dark)])
    labels = A.read_attributes(p).labels(files, ["Dark", "Odd"])
    d = A.directions(codec, x, labels)
    z = codec.encode(x)
    assert d.shape == (2, 1, 16)
    torch.testing.assert_close(d[0], z[torch.from_numpy(dark)].mean(0) - z[torch.from_numpy(~dark)].mean(0))
    shown = x[:4]
    scales = [-2.0, 0.0, 2.0]
    g = A.attribute_grid(codec, shown, d[0], scales)
    assert g.shape == (4 * 66 + 2, 4 * 66 + 2, 3)  # 4 rows: image + 3 frames of 64 px tiles
    means = [float(codec.decode(codec.encode(shown) + t * d[0], (32, 32)).mean()) for t in scales]
    assert means[0] > means[1] > means[2]  # brighter, reconstruction, darker
    np.testing.assert_array_equal(  # t = 0 is the reconstruction
        g[2 + 66 * 0 : 66, 2 + 66 * 2 : 66 * 3 : 2][::2], X.to_uint8(codec.reconstruct(shown[:1]))[0])
    with pytest.raises(ValueError, match="needs images with and without it"):
        A.directions(codec, x, np.ones((32, 1), bool))
