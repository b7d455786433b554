"""Named data sources: official addresses and checksums, and the offline sample photographs.

Checksums
---------
None of these publishers gives a SHA-256, so each preset is verified with the MD5 that
torchvision records for the same file (``torchvision/datasets/{lfw,mnist,celeba}.py``),
the de-facto reference that every copy in use is checked against. MD5 is no defence
against a deliberately forged file; here it guards against truncated, corrupted or
wrong downloads, which is what a checksum can do for files published without a
stronger one.

* LFW ``lfw.tgz``: md5 ``a17d05bd522c52d84eca14327a23d494`` from torchvision's
  ``_LFW.file_dict["original"]`` (UMass publishes no SHA-256 for it).
* MNIST: the four IDX files' md5s from torchvision's ``MNIST.resources``. Only the two
  image files are fetched: restoration does not use the labels.
* CelebA ``img_align_celeba.zip``: md5 ``00d2c5bc6d35e252742224ab0c1e8fcb`` from
  torchvision's ``CelebA.file_list``. Its host (Google Drive) needs a browser for files
  this large, so the preset reads a local copy given as ``data.path``.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class RemoteFile:
    filename: str
    urls: tuple[str, ...]  # mirrors, tried in order
    algo: str  # hashlib name
    checksum: str


@dataclass(frozen=True)
class Preset:
    name: str
    kind: str  # "archive": one archive of image files; "idx": MNIST's IDX files
    files: tuple[RemoteFile, ...]
    description: str
    license: str


LFW = Preset(
    name="lfw",
    kind="archive",
    files=(
        RemoteFile(
            "lfw.tgz",
            ("http://vis-www.cs.umass.edu/lfw/lfw.tgz",),
            "md5",
            # torchvision datasets/lfw.py, _LFW.file_dict["original"]
            "a17d05bd522c52d84eca14327a23d494",
        ),
    ),
    description="Labeled Faces in the Wild: 13,233 face photographs, 250x250 JPEG",
    license="research use; see http://vis-www.cs.umass.edu/lfw/",
)

_MNIST_MIRRORS = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",  # torchvision's first mirror
    "http://yann.lecun.com/exdb/mnist/",  # the original address
)

MNIST = Preset(
    name="mnist",
    kind="idx",
    files=(
        # md5s: torchvision datasets/mnist.py, MNIST.resources
        RemoteFile(
            "train-images-idx3-ubyte.gz",
            tuple(m + "train-images-idx3-ubyte.gz" for m in _MNIST_MIRRORS),
            "md5",
            "f68b3c2dcbeaaa9fbdd348bbdeb94873",
        ),
        RemoteFile(
            "t10k-images-idx3-ubyte.gz",
            tuple(m + "t10k-images-idx3-ubyte.gz" for m in _MNIST_MIRRORS),
            "md5",
            "9fb629c4189551a2d022fa330f9573f3",
        ),
        # Not fetched (restoration needs no labels); recorded for a check by hand:
        # train-labels-idx1-ubyte.gz  d53e105ee54ea40749a09fcbcd1e9432
        # t10k-labels-idx1-ubyte.gz   ec29112dd5afa0611ce80d1b7f02629c
    ),
    description="MNIST handwritten digits: 70,000 grey 28x28 images (train + t10k files)",
    license="see http://yann.lecun.com/exdb/mnist/",
)

CELEBA = Preset(
    name="celeba",
    kind="archive",
    files=(
        RemoteFile(
            "img_align_celeba.zip",
            (),  # Google Drive: needs a browser; data.path must name a local copy
            "md5",
            "00d2c5bc6d35e252742224ab0c1e8fcb",  # torchvision datasets/celeba.py, file_list
        ),
    ),
    description="CelebA aligned faces: 202,599 photographs, 178x218 JPEG",
    license="non-commercial research use only; see https://mmlab.ie.cuhk.edu.hk/projects/CelebA.html",
)

PRESETS: dict[str, Preset] = {p.name: p for p in (LFW, MNIST, CELEBA)}


# ------------------------------------------------------------------ sample photos
@dataclass(frozen=True)
class SamplePhoto:
    """A photograph shipped inside scikit-image's wheel (loads with no network).

    ``band``: the split unit is a whole row band of the photo, across all its views,
    instead of a square region. Used for the rectified stereo pair, whose two views
    show the same scene shifted along rows only.
    """

    name: str  # function of skimage.data
    band: bool = False


# Real photographs and micrographs in scikit-image's wheel. Left out: skimage.data.cat
# (the same picture as chelsea), and eagle, kidney, lily, skin and the other images that
# scikit-image downloads on first use (they need the network).
SAMPLE_PHOTOS: tuple[SamplePhoto, ...] = (
    SamplePhoto("astronaut"),
    SamplePhoto("coffee"),
    SamplePhoto("chelsea"),
    SamplePhoto("rocket"),
    SamplePhoto("hubble_deep_field"),
    SamplePhoto("retina"),
    SamplePhoto("immunohistochemistry"),
    SamplePhoto("stereo_motorcycle", band=True),  # returns (left, right, disparity)
    SamplePhoto("camera"),
    SamplePhoto("moon"),
    SamplePhoto("brick"),
    SamplePhoto("grass"),
    SamplePhoto("gravel"),
    SamplePhoto("coins"),
    SamplePhoto("clock"),
    SamplePhoto("cell"),
)
