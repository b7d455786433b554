"""The standard Gaussian-denoising benchmark: CBSD68 at sigma 15, 25 and 50 (issue 22 item 5).

CBSD68 is the 68 colour test photographs of the Berkeley Segmentation Dataset (BSDS300,
Martin et al. ICCV 2001), 481x321 or 321x481, as the denoising literature uses them. Its
licence is non-commercial research and educational use: the images are never shipped with
the project; :func:`run_benchmark` reads them from a folder the user names, and every
table it writes says so (:data:`LICENCE`).

The protocol (what :func:`run_benchmark` does, stated in every output):

* **Noise**: additive white Gaussian noise of standard deviation ``sigma / 255`` on the clean
  image in [0, 1], drawn from ``numpy.random.default_rng([seed, sigma, index])``, ``index``
  the image's position in the sorted folder: the same noisy image for a given seed and
  sigma whatever the subset, the method or the machine (:func:`noisy_image`).
* **Clipping**: none by default: the noisy input is left in float, outside [0, 1] where
  the noise takes it. This is the literature's protocol (the DnCNN, FFDNet and DRUNet test
  code add ``np.random.normal(0, sigma / 255, shape)`` to the float image and feed it as
  is), so the published figures are comparable with ours. ``clip=True`` instead clips the
  noisy image to [0, 1] and rounds it to 8 bits, as a saved noisy photo would be (and as
  the project's ``prepare.degrade`` trains the networks: ``data/degrade.py`` clips and
  rounds): a stated alternative, not the published setting.
* **Outputs** are clipped to [0, 1] and rounded to 8 bits before scoring, as the literature's
  test code does (DRUNet's ``util.tensor2uint``).
* **PSNR**: :func:`aerestore.metrics.psnr` (data range 1) on the RGB image over all pixels,
  averaged over the images; one image's PSNR is capped at :data:`PSNR_CAP` dB (an exact
  restoration would be ``inf``).
* **Classical anchors** are given what their users would give them: CBM3D
  (``bm3d.bm3d_rgb``, the authors' reference package, profile ``np``, one thread) is told
  the true sigma. BM3D takes ~25 s per 481x321 image on one core, so ``anchor_images`` runs
  the slow anchors on that many evenly spaced images only, and every row is also averaged
  on exactly that subset (the comparison table).
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .metrics import psnr

SIGMAS = (15, 25, 50)
SEED = 0
PSNR_CAP = 100.0
IMAGE_SUFFIXES = (".png", ".bmp", ".tif", ".tiff", ".jpg", ".jpeg")
LICENCE = ("CBSD68 (the BSDS300 test images, Martin et al. ICCV 2001): for non-commercial research "
           "and educational use only; the images are not shipped with this project.")
BENCHMARK = "CBSD68 Gaussian denoising"
OTHER = "Gaussian denoising, CBSD68's protocol, other images"
OTHER_NOTE = ("These images are not CBSD68 (e.g. held-out validation photographs, on which a choice "
              "between networks is made): the published CBSD68 figures do not apply and are not shown.")
SOURCE = "the CBSD68 folder's README (/work/shared/datasets/cbsd68/README.md), from the tables named per row"

# Published PSNR (dB) on CBSD68, sigma 15 / 25 / 50, as listed in the dataset's README (which
# asks to check them against the papers before quoting): the DRUNet paper's colour table
# (Zhang et al., "Plug-and-Play Image Restoration with Deep Denoiser Prior", TPAMI 2021) and the
# Restormer paper's Gaussian colour denoising table (Zamir et al., CVPR 2022).
PUBLISHED: dict[str, dict[str, Any]] = {
    "CBM3D": {"psnr": {15: 33.52, 25: 30.71, 50: 27.38}, "source": "DRUNet paper (TPAMI 2021), colour table"},
    "DnCNN (colour, blind)": {"psnr": {15: 33.90, 25: 31.24, 50: 27.95}, "source": "DRUNet paper (TPAMI 2021)"},
    "FFDNet": {"psnr": {15: 33.87, 25: 31.21, 50: 27.96}, "source": "DRUNet paper (TPAMI 2021)"},
    "DRUNet": {"psnr": {15: 34.30, 25: 31.69, 50: 28.51}, "source": "DRUNet paper (TPAMI 2021)"},
    "Restormer": {"psnr": {15: 34.39, 25: 31.78, 50: 28.59}, "source": "Restormer paper (CVPR 2022), Gaussian colour table"},
}

# A denoiser: (noisy float32 (H, W, 3), unclipped unless clip=True, sigma on the 0..255 scale)
# -> restored float (H, W, 3) in about [0, 1].
Denoiser = Callable[[np.ndarray, float], np.ndarray]


@dataclass
class Method:
    name: str
    kind: str  # "ours" | "classical" | "reference"
    denoise: Denoiser
    slow: bool = False  # runs on the anchor subset only
    note: str = ""


@dataclass
class Row:
    name: str
    kind: str
    note: str
    images: list[int] = field(default_factory=list)  # indices into the sorted folder
    per_image: dict[int, list[float]] = field(default_factory=dict)  # sigma -> PSNR per image
    seconds: dict[int, float] = field(default_factory=dict)

    def mean(self, sigma: int, subset: Sequence[int] | None = None) -> float:
        values = self.per_image[sigma]
        if subset is not None:
            pos = {i: k for k, i in enumerate(self.images)}
            values = [values[pos[i]] for i in subset]
        return float(np.mean(values))


# ------------------------------------------------------------------ images
def list_images(folder: str | Path) -> list[Path]:
    """The images of ``folder``, sorted by name; a missing folder or one without images
    raises an error naming the path."""
    folder = Path(folder)
    if not folder.exists():
        raise FileNotFoundError(f"{folder}: no such folder (give the path of the CBSD68 images)")
    if not folder.is_dir():
        raise NotADirectoryError(f"{folder}: not a folder (give the folder that holds the CBSD68 images)")
    paths = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not paths:
        raise ValueError(f"{folder}: holds no images ({', '.join(IMAGE_SUFFIXES)})")
    return paths


def read_rgb(path: Path) -> np.ndarray:
    """uint8 (H, W, 3), read by the project's image reader (its checks and one-line errors
    naming the file); grey is repeated over three channels, alpha dropped."""
    from .data.images import read_image

    img = read_image(path)
    if img.ndim == 2:
        return np.repeat(img[..., None], 3, axis=-1)
    return np.ascontiguousarray(img[..., :3])


def spaced(n: int, k: int) -> list[int]:
    """``k`` evenly spaced indices of ``range(n)`` (first and last included); all for k <= 0 or
    k >= n: the evaluate stage's anchor subset rule, :func:`aerestore.evaluate.anchor_indices`."""
    from .evaluate import anchor_indices

    return anchor_indices(n, k).tolist()


def noisy_image(clean: np.ndarray, sigma: float, seed: int, index: int, clip: bool = False) -> np.ndarray:
    """``clean`` (uint8 or float in [0, 1]) plus white Gaussian noise of std ``sigma / 255``, as
    float32; the noise is drawn from ``default_rng([seed, round(sigma * 1000), index])``, so it
    depends on the seed, the sigma and the image's index only. ``clip``: clip to [0, 1] and
    round to 8 bits (a saved noisy photo)."""
    x = clean.astype(np.float64) / 255.0 if clean.dtype == np.uint8 else clean.astype(np.float64)
    rng = np.random.default_rng([int(seed), int(round(sigma * 1000)), int(index)])
    y = x + rng.standard_normal(x.shape) * (sigma / 255.0)
    if clip:
        y = np.rint(np.clip(y, 0.0, 1.0) * 255.0) / 255.0
    return y.astype(np.float32)


def to_8bit(x: np.ndarray) -> np.ndarray:
    """A restored float image clipped to [0, 1] and rounded to 8 bits (as float in [0, 1])."""
    return (np.rint(np.clip(np.asarray(x, np.float64), 0.0, 1.0) * 255.0) / 255.0).astype(np.float32)


def score(restored: np.ndarray, clean: np.ndarray) -> float:
    """PSNR (dB, data range 1, RGB, all pixels) of the 8-bit ``restored`` against ``clean``,
    capped at :data:`PSNR_CAP`."""
    ref = clean.astype(np.float32) / 255.0 if clean.dtype == np.uint8 else clean.astype(np.float32)
    value = psnr(to_8bit(restored), ref)
    return min(value, PSNR_CAP) if not math.isnan(value) else value


# ------------------------------------------------------------------ methods
def noisy_method() -> Method:
    return Method("noisy input", "reference", lambda x, s: x, note="the noisy input itself, 8-bit")


def restorer_method(model: str, name: str | None = None, self_ensemble: bool = False) -> Method:
    """A trained restorer (``models/<arch>`` or an MLflow URI), fed the float noisy image as
    it is (unclipped unless ``clip``); PyTorch on one thread. ``self_ensemble``: the mean of
    its eight orientations (:mod:`aerestore.cli.selfensemble`; eight times the restore time)."""
    import torch

    from .cli.common import load_any_restorer
    from .cli.selfensemble import self_ensemble as ensemble

    restorer = load_any_restorer(model)
    if getattr(restorer, "channels", 3) != 3:
        raise ValueError(f"{model}: the benchmark is RGB; this restorer takes {restorer.channels} channel(s)")
    if hasattr(restorer, "runtime"):
        restorer.runtime = "torch"  # the float input as it is (OpenVINO agrees to ~1e-6)

    def restore(a: np.ndarray) -> np.ndarray:
        return restorer.restore_float(torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32))).numpy()

    def denoise(x: np.ndarray, sigma: float) -> np.ndarray:
        a = x.transpose(2, 0, 1)[None]
        return (ensemble(restore, a) if self_ensemble else restore(a))[0].transpose(1, 2, 0)

    label = name or f"{getattr(restorer, 'arch', 'model')} ({model})"
    if self_ensemble:
        return Method(f"{label}, self-ensemble x8", "ours", denoise,
                      note="blind: not told sigma; mean of its 8 orientations (8 restores)")
    return Method(label, "ours", denoise, note="blind: not told sigma")


def cbm3d(x: np.ndarray, sigma: float) -> np.ndarray:
    """CBM3D at the true ``sigma`` (0..255 scale): the evaluate stage's BM3D at a given sigma
    (:func:`aerestore.classical_methods._bm3d_at`: the package's opponent colour transform, profile
    ``np``, one thread)."""
    from .classical_methods import _bm3d_at

    return np.asarray(_bm3d_at(x.astype(np.float64), sigma / 255.0), np.float32)


def cbm3d_x8(x: np.ndarray, sigma: float) -> np.ndarray:
    """:func:`cbm3d` as a self-ensemble (the mean of its 8 orientations, 8 runs): the anchor's
    side of ``--self-ensemble``, so that the networks' test-time averaging is set beside the
    same averaging of CBM3D, not only beside its single pass."""
    from .cli.selfensemble import self_ensemble

    def one(a: np.ndarray) -> np.ndarray:
        return cbm3d(a[0].transpose(1, 2, 0), sigma).transpose(2, 0, 1)[None]

    return self_ensemble(one, x.transpose(2, 0, 1)[None])[0].transpose(1, 2, 0)


CLASSICAL: dict[str, tuple[Denoiser, bool, str, str]] = {
    "bm3d": (cbm3d, True, "CBM3D (run here)", "CBM3D, bm3d.bm3d_rgb 4.0.3, profile np, told the true sigma"),
    "bm3d_x8": (cbm3d_x8, True, "CBM3D (run here), self-ensemble x8",
                "CBM3D as above, the mean of its 8 orientations (8 runs)"),
}


def classical_method(name: str) -> Method:
    if name not in CLASSICAL:
        raise ValueError(f"unknown classical anchor {name!r}; known: {', '.join(CLASSICAL)}")
    fn, slow, label, note = CLASSICAL[name]
    return Method(label, "classical", fn, slow=slow, note=note)


# ------------------------------------------------------------------ running
def record_header(folder: str | Path, images_in_folder: int, sigmas: Sequence[int], seed: int = SEED,
                  clip: bool = False, other_images: bool = False) -> dict[str, Any]:
    """What a record states before any image is scored: the benchmark, folder, licence, sigmas
    and protocol. :func:`run_benchmark` writes it; ``aerestore cbsd68 --merge`` checks an
    earlier record against it (:func:`same_protocol`) before the slow scoring, not after."""
    return {
        "benchmark": OTHER if other_images else BENCHMARK,
        "folder": str(folder),
        "licence": OTHER_NOTE if other_images else LICENCE,
        "images_in_folder": images_in_folder,
        "sigmas": [int(s) for s in sigmas],
        "protocol": {
            "seed": seed,
            "noise": "x + N(0, (sigma/255)^2) per pixel and channel, rng = numpy default_rng([seed, sigma*1000, index])",
            "clip_noisy": clip,
            "clipping": ("noisy input clipped to [0, 1] and rounded to 8 bits" if clip else
                         "noisy input not clipped (float), as the literature's test code (DnCNN, FFDNet, DRUNet)"),
            "outputs": "clipped to [0, 1] and rounded to 8 bits before scoring",
            "psnr": f"RGB, all pixels, data range 1, mean over images; one image capped at {PSNR_CAP:g} dB",
        },
    }


def run_benchmark(folder: str | Path, methods: Sequence[Method], sigmas: Sequence[int] = SIGMAS,
                  seed: int = SEED, clip: bool = False, max_images: int = 0, anchor_images: int = 0,
                  progress: bool = True, other_images: bool = False) -> dict[str, Any]:
    """Score every method on the folder's images at each sigma; returns the JSON-ready result.

    ``max_images``: evenly spaced images of the folder (0 = all); ``anchor_images``: the slow
    methods run on that many evenly spaced of those (0 = all of them). ``other_images``: the
    folder is not CBSD68 (a validation set): the same protocol, but the record is named
    :data:`OTHER`, carries :data:`OTHER_NOTE` instead of CBSD68's licence and no published
    figures, and is never merged or compared with a CBSD68 record (:func:`same_protocol`)."""
    from tqdm import tqdm

    paths = list_images(folder)
    chosen = spaced(len(paths), max_images)
    anchor = [chosen[i] for i in spaced(len(chosen), anchor_images)]
    if not any(m.slow for m in methods):
        anchor = list(chosen)
    sigmas = [int(s) for s in sigmas]
    rows = [Row(m.name, m.kind, m.note, images=list(anchor if m.slow else chosen)) for m in methods]
    total = sum(len(r.images) for r in rows) * len(sigmas)
    bar = tqdm(total=total, desc="cbsd68", unit="img", disable=not progress)
    clean_cache: dict[int, np.ndarray] = {}
    for sigma in sigmas:
        for method, row in zip(methods, rows):
            row.per_image[sigma] = []
            row.seconds[sigma] = 0.0
            bar.set_postfix_str(f"{method.name}, sigma {sigma}")
            for index in row.images:
                if index not in clean_cache:
                    clean_cache[index] = read_rgb(paths[index])
                clean = clean_cache[index]
                x = noisy_image(clean, sigma, seed, index, clip)
                t0 = time.perf_counter()
                y = method.denoise(x, float(sigma))
                row.seconds[sigma] += time.perf_counter() - t0
                if y.shape != clean.shape:
                    raise ValueError(f"{method.name} returned shape {y.shape} for {paths[index].name} {clean.shape}")
                row.per_image[sigma].append(score(y, clean))
                bar.update(1)
    bar.close()
    names = [paths[i].name for i in range(len(paths))]
    return {
        **record_header(folder, len(paths), sigmas, seed, clip, other_images),
        "images": [names[i] for i in chosen],
        "anchor_images": [names[i] for i in anchor],
        "rows": [{
            "name": r.name, "kind": r.kind, "note": r.note, "images": len(r.images),
            "psnr": {str(s): r.mean(s) for s in sigmas},
            "psnr_anchor_subset": {str(s): r.mean(s, anchor) for s in sigmas},
            "seconds": {str(s): r.seconds[s] for s in sigmas},
            "per_image": {str(s): dict(zip([names[i] for i in r.images], r.per_image[s])) for s in sigmas},
        } for r in rows],
        "published": {} if other_images else {
            k: {"psnr": {str(s): v["psnr"].get(s) for s in sigmas}, "source": v["source"]}
            for k, v in PUBLISHED.items()},
        "published_source": SOURCE,
    }


def same_protocol(result: dict[str, Any], other: dict[str, Any], what: str = "cannot compare") -> None:
    """``ValueError`` (starting with ``what``) unless two records (``OUT.json``) scored the same
    folder size with the same noise seed, clipping and noise: only then are their figures, per
    image too, comparable (any sigmas). A record of other images (``other_images``) is never
    comparable with a CBSD68 one."""
    if result.get("benchmark", BENCHMARK) != other.get("benchmark", BENCHMARK):
        raise ValueError(f"{what}: a record of {other.get('benchmark', BENCHMARK)!r} beside one of "
                         f"{result.get('benchmark', BENCHMARK)!r}")
    if result["images_in_folder"] != other["images_in_folder"]:
        raise ValueError(f"{what}: images_in_folder {other['images_in_folder']} differs from "
                         f"{result['images_in_folder']}")
    for key in ("seed", "clip_noisy", "noise"):
        if result["protocol"][key] != other["protocol"][key]:
            raise ValueError(f"{what}: protocol {key} {other['protocol'][key]!r} differs "
                             f"from {result['protocol'][key]!r}")


def check_mergeable(result: dict[str, Any], earlier: dict[str, Any]) -> None:
    """``ValueError`` unless ``earlier``'s rows can join ``result`` (a record, or only its
    :func:`record_header`): the same sigmas and :func:`same_protocol`."""
    if result["sigmas"] != earlier["sigmas"]:
        raise ValueError(f"cannot merge: sigmas {earlier['sigmas']} differs from this run's {result['sigmas']}")
    same_protocol(result, earlier, "cannot merge")


def merge(result: dict[str, Any], earlier: dict[str, Any]) -> dict[str, Any]:
    """``result`` with the rows of an ``earlier`` run added (e.g. CBM3D scored once, slowly, and
    a newly trained network scored later): the same folder size, sigmas, seed and clipping, or
    ``ValueError``. A row whose name ``result`` already has is not added. The anchor subset
    becomes the images every row ran on, and each row's mean on it is recomputed."""
    check_mergeable(result, earlier)
    out = json.loads(json.dumps(result))
    names = {r["name"] for r in out["rows"]}
    out["rows"] += [json.loads(json.dumps(r)) for r in earlier["rows"] if r["name"] not in names]
    sigmas = [str(s) for s in out["sigmas"]]
    common = set(out["images"])
    for r in out["rows"]:
        common &= set(r["per_image"][sigmas[0]])
    if not common:
        raise ValueError("cannot merge: no image that every row ran on")
    out["anchor_images"] = sorted(common)
    for r in out["rows"]:
        r["psnr_anchor_subset"] = {s: float(np.mean([r["per_image"][s][n] for n in out["anchor_images"]]))
                                   for s in sigmas}
    return out


def _cell(v: float | None) -> str:
    return "–" if v is None else f"{v:.2f}"


def markdown(result: dict[str, Any]) -> str:
    """The result as Markdown: our rows (all images, and the anchor subset when it is smaller),
    the published figures beside them, the protocol and the licence."""
    sigmas = result["sigmas"]
    head = "| method | images | " + " | ".join(f"σ {s}" for s in sigmas) + " | note |\n"
    rule = "|---|---:|" + "---:|" * len(sigmas) + "---|\n"
    p = result["protocol"]
    n, n_anchor = len(result["images"]), len(result["anchor_images"])
    out = [f"# {result['benchmark']}: PSNR (dB)\n\n",
           f"*{result['licence']}*\n\n",
           f"Images: {n} of {result['images_in_folder']} in `{result['folder']}`",
           "" if n == result["images_in_folder"] else f" (evenly spaced: {', '.join(result['images'])})",
           ". Seed " + str(p["seed"]) + f"; {p['clipping']}; outputs {p['outputs']}; PSNR {p['psnr']}.\n\n"]
    out.append("## Measured here\n\n" + head + rule)
    for r in result["rows"]:
        out.append(f"| {r['name']} | {r['images']} | " + " | ".join(_cell(r['psnr'][str(s)]) for s in sigmas)
                   + f" | {r['note']} |\n")
    if n_anchor < n:
        out.append(f"\n## Every row on the {n_anchor} images the slow anchors ran on\n\n"
                   f"{', '.join(result['anchor_images'])}\n\n" + head + rule)
        for r in result["rows"]:
            out.append(f"| {r['name']} | {n_anchor} | "
                       + " | ".join(_cell(r['psnr_anchor_subset'][str(s)]) for s in sigmas) + f" | {r['note']} |\n")
    if result["published"]:
        out.append("\n## Published (all 68 images, unclipped noise)\n\n" + head + rule)
        for k, v in result["published"].items():
            out.append(f"| {k} | 68 | " + " | ".join(_cell(v['psnr'][str(s)]) for s in sigmas)
                       + f" | {v['source']} |\n")
        out.append(f"\nPublished figures as listed in {result['published_source']}.\n")
    return "".join(out)


def write_outputs(result: dict[str, Any], out: str | Path) -> tuple[Path, Path]:
    """``<out>.md`` and ``<out>.json`` (``out`` without suffix, or a folder: ``<out>/cbsd68``)."""
    out = Path(out)
    if out.is_dir() or str(out).endswith("/"):
        out = out / "cbsd68"
    out.parent.mkdir(parents=True, exist_ok=True)
    md, js = out.with_suffix(".md"), out.with_suffix(".json")
    md.write_text(markdown(result))
    js.write_text(json.dumps(result, indent=1) + "\n")
    return md, js
