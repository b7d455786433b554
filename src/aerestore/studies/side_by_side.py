"""The studies' headline figures beside ours in the study's own setting (``aerestore side-by-side``).

Each figure a study reports as a number (:data:`FIGURES`: the value, where the text gives it,
the run of ours that measures it, :data:`SETTINGS`, and where that run keeps the quantity) is
set beside the figure of our run: a DVC experiment of a study preset (``aerestore preset NAME
--run``, or ``--queue``), read at its revision with :func:`aerestore.studies.revisions.read_revision`
(``metrics/evaluate.json`` and ``metrics/evaluate_details.json``). The verdict:

* **reproduced** when ``|ours - theirs| <= tolerance`` (each figure states its tolerance: 1 dB
  of PSNR, 0.05 of SSIM or UQI, 10 points of a share, 25 % of an MSE);
* **not reproduced** otherwise, with the likely reason (:attr:`Figure.reason`: what in our
  setting still differs from the study's);
* **not run here** when no run of its preset was given, with what it needs
  (:attr:`Figure.needs`: the data a study used that the offline machine does not have).

The values are quoted from the texts in ``/work/shared/studies/`` (section or table named in
:attr:`Figure.source`), checked by ``tests/test_side_by_side.py`` where the texts are at hand.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from .. import stats as S
from ..io import write_json, write_text
from .revisions import read_revision

EVALUATE = "metrics/evaluate.json"
DETAILS = "metrics/evaluate_details.json"
PARAMS = "params.yaml"
OUT_DIR = Path("reports")


@dataclass(frozen=True)
class Figure:
    """One number of a study: ``value`` in ``unit``; ``setting`` names the run of ours
    (:data:`SETTINGS`: a preset and its command) that measures it; ``path`` is
    where our run keeps the same quantity (keys into ``metrics/evaluate.json``;
    ``("mse", row)``: the mean per-image MSE of that row from the per-image PSNR;
    ``("share", row_a, row_b, metric)``: the % of images on which row_a beats row_b); ``scale``
    multiplies ours (a share 0-1 -> %); ``quote`` the words of the text the value is read from."""

    study: str
    what: str
    value: float
    unit: str
    source: str
    quote: str
    setting: str  # a name of :data:`SETTINGS`: the run that gives ours
    path: tuple[str, ...]
    tolerance: float
    relative: bool = False  # tolerance as a share of the study's value
    scale: float = 1.0
    reason: str = ""  # what in our run still differs, should it not reproduce
    needs: str = ""  # what running it here needs (data the offline machine lacks)


CELEBA = "CelebA block study (001)"
BOTTLENECK = "bottleneck study (004)"
CELEBA_REASON = ("2 epochs over the training blocks where the study trained 100 (celeba-256-noise's scaling; "
                 "-S train.blocks.epochs=100 runs the study's); the first 400 faces of the local copy, not the "
                 "study's 300; our noise draw (std 0.35) for its 'random noise'")
SHARE_REASON = ("our single decoder is the equal-budget control (the shared decoder fine-tuned as long as the "
                "per-cluster ones), a stronger rival than the study's single decoder; " + CELEBA_REASON)
AS_TRAINED_REASON = ("the network as trained with the study's loss (MSE + the pixel-wise KL t log(t/y), which "
                     "falls as the output brightens: our shared decoder's output is washed out) against filters "
                     "fine-tuned with MSE; " + CELEBA_REASON)
CELEBA_NEEDS = "CelebA faces: data.source=celeba with img_align_celeba.zip, or a folder of them (data.source=folder)"
ANIMAL_NEEDS = ("Animal Faces-HQ (Kaggle, an account) or LFW (data.source=lfw, a download); neither is on the "
                "offline machine, and LFW faces would be a stand-in")
MSE_REASON = ("the network as trained (the study has no per-cluster filters); a stand-in for Animal Faces-HQ "
              "(LFW or other faces), our distortion values where the study gives none")

# The runs the figures come from: a name -> the command that makes it (a DVC experiment).
SETTINGS: dict[str, str] = {
    "celeba-256-noise": "aerestore preset celeba-256-noise --run",
    # the VAE's figures need no classical rows (the conv AE's run has them)
    "celeba-256-noise-vae": "aerestore preset celeba-256-noise --run -S 'architectures=[vae]' -S 'evaluate.classical=[]'",
    "animal-undistorted": "aerestore preset animal-all --run -S 'prepare.degrade=[]'",
    "animal-all": "aerestore preset animal-all --run",
    "animal-fcn": "aerestore preset animal-fcn --run",
}

FIGURES: tuple[Figure, ...] = (
    Figure(CELEBA, "noisy input, PSNR", 11.37, "dB", "Table (4.8), Blurred/Noise", "11.37",
           "celeba-256-noise", ("degraded", "psnr"), 1.0, reason="our Gaussian noise std 0.35 for its noise",
           needs=CELEBA_NEEDS),
    Figure(CELEBA, "noisy input, SSIM", 0.5593, "", "Table (4.8), Blurred/Noise", "0.5593",
           "celeba-256-noise", ("degraded", "ssim"), 0.05, reason="our noise draw; SSIM's window and constants "
           "are not stated in the study", needs=CELEBA_NEEDS),
    Figure(CELEBA, "noisy input, UQI", 0.5965, "", "Table (4.8), Blurred/Noise", "0.5965",
           "celeba-256-noise", ("degraded", "uqi"), 0.05, reason="our noise draw; UQI's window is not stated",
           needs=CELEBA_NEEDS),
    Figure(CELEBA, "conv AE (per-cluster filters), PSNR", 29.07, "dB", "Table (4.8), Conv AE", "29.07",
           "celeba-256-noise", ("conv_ae", "multi", "psnr"), 1.0, reason=CELEBA_REASON, needs=CELEBA_NEEDS),
    Figure(CELEBA, "conv AE (per-cluster filters), SSIM", 0.8428, "", "Table (4.8), Conv AE", "0.8428",
           "celeba-256-noise", ("conv_ae", "multi", "ssim"), 0.05, reason=CELEBA_REASON, needs=CELEBA_NEEDS),
    Figure(CELEBA, "conv AE (per-cluster filters), UQI", 0.9763, "", "Table (4.8), Conv AE", "0.9763",
           "celeba-256-noise", ("conv_ae", "multi", "uqi"), 0.05, reason=CELEBA_REASON, needs=CELEBA_NEEDS),
    Figure(CELEBA, "per-cluster better than single, share of images (PSNR)", 93.33, "%", "Table (4.8), Conv AE",
           "93.33%", "celeba-256-noise", ("conv_ae", "multi_vs_single", "psnr", "share"), 10.0, scale=100.0,
           reason=SHARE_REASON, needs=CELEBA_NEEDS),
    Figure(CELEBA, "per-cluster better than single, share of images (SSIM)", 100.0, "%", "Table (4.8), Conv AE",
           "100%", "celeba-256-noise", ("conv_ae", "multi_vs_single", "ssim", "share"), 10.0, scale=100.0,
           reason=SHARE_REASON, needs=CELEBA_NEEDS),
    Figure(CELEBA, "per-cluster better than single, share of images (UQI)", 94.7, "%", "Table (4.8), Conv AE",
           "94.7%", "celeba-256-noise", ("conv_ae", "multi_vs_single", "uqi", "share"), 10.0, scale=100.0,
           reason=SHARE_REASON, needs=CELEBA_NEEDS),
    # The study's "single decoder" may be the network as trained (its filters were trained with MSE
    # alone, the encoder with MSE + the pixel KL): the same shares against our shared decoder.
    *(Figure(CELEBA, f"per-cluster better than the network as trained, share of images ({m.upper()})", v, "%",
             "Table (4.8), Conv AE", q, "celeba-256-noise", ("share", "conv_ae.multi", "conv_ae.base", m), 10.0,
             reason=AS_TRAINED_REASON, needs=CELEBA_NEEDS)
      for m, v, q in (("psnr", 93.33, "93.33%"), ("ssim", 100.0, "100%"), ("uqi", 94.7, "94.7%"))),
    Figure(CELEBA, "VAE, PSNR", 10.37, "dB", "Table (4.8), VAE; 4.1 'around 10, which is unexpected'", "10.37",
           "celeba-256-noise-vae", ("vae", "multi", "psnr"), 1.0, reason=CELEBA_REASON, needs=CELEBA_NEEDS),
    Figure(CELEBA, "VAE: per-cluster better than single, share of images (PSNR)", 96.3, "%",
           "Table (4.8), VAE; 4.1 'in 96 percent of time'", "96.3%", "celeba-256-noise-vae",
           ("vae", "multi_vs_single", "psnr", "share"), 10.0, scale=100.0, reason=SHARE_REASON,
           needs=CELEBA_NEEDS),
    Figure(CELEBA, "VAE as trained (shared decoder), PSNR", 10.37, "dB",
           "Table (4.8), VAE; 4.1 'around 10, which is unexpected'", "10.37", "celeba-256-noise-vae",
           ("vae", "base", "psnr"), 1.0, reason=AS_TRAINED_REASON, needs=CELEBA_NEEDS),
    Figure(CELEBA, "VAE: per-cluster better than the network as trained, share of images (PSNR)", 96.3, "%",
           "Table (4.8), VAE; 4.1 'in 96 percent of time'", "96.3%", "celeba-256-noise-vae",
           ("share", "vae.multi", "vae.base", "psnr"), 10.0, reason=AS_TRAINED_REASON, needs=CELEBA_NEEDS),
    Figure(BOTTLENECK, "dense AE, latent 1000, undistorted: MSE", 0.0058, "", "3.1.1, Figure 4", "0.0058",
           "animal-undistorted", ("mse", "ccp_ae.base"), 0.25, relative=True, reason=MSE_REASON,
           needs=ANIMAL_NEEDS),
    Figure(BOTTLENECK, "dense AE, latent 1000, three distortions: test MSE", 0.00668, "", "Table 2, last row",
           "0.00668", "animal-all", ("mse", "ccp_ae.base"), 0.25, relative=True, reason=MSE_REASON,
           needs=ANIMAL_NEEDS),
    Figure(BOTTLENECK, "fully convolutional AE (code 4096), three distortions: MSE", 0.0037, "",
           "section 4", "0.0037", "animal-fcn", ("mse", "fcn_ae.base"), 0.25, relative=True,
           reason=MSE_REASON, needs=ANIMAL_NEEDS),
)


# ------------------------------------------------------------------ reading a run
Reader = Callable[[str], dict[str, Any]]


def read_run(rev: str, repo: str | Path = ".") -> dict[str, Any]:
    """``{"rev", "sha", "evaluate", "details"}`` of one DVC experiment or git revision."""
    sha, files = read_revision(rev, (EVALUATE, DETAILS), repo, what="a DVC experiment or git revision",
                               hint=" (did the evaluate stage run in that experiment?)")
    return {"rev": rev, "sha": sha, "evaluate": json.loads(files[EVALUATE]), "details": json.loads(files[DETAILS])}


def _floats(values: list) -> np.ndarray:
    return np.asarray([math.nan if v is None else v for v in values], dtype=np.float64)


def ours(figure: Figure, run: dict[str, Any]) -> float:
    """Our value of ``figure`` in ``run`` (:func:`read_run`); ``KeyError`` naming the path
    when the run does not have it (e.g. another architecture)."""
    if figure.path[0] == "share":  # share of images on which one row beats another, in %
        _, a, b, metric = figure.path
        rows = run["details"].get("per_image", {})
        if metric not in rows.get(a, {}) or metric not in rows.get(b, {}):
            raise KeyError(f"{run['rev']}: {DETAILS} has no per-image {metric} of rows {a!r} and {b!r}")
        c = S.paired_comparison(_floats(rows[a][metric]), _floats(rows[b][metric]), higher_is_better=True)
        return 100.0 * float(c["share_better"])
    if figure.path[0] == "mse":
        row = figure.path[1]
        psnr = run["details"].get("per_image", {}).get(row, {}).get("psnr")
        if psnr is None:
            raise KeyError(f"{run['rev']}: {DETAILS} has no per-image psnr of row {row!r}")
        return float(np.nanmean(10.0 ** (-_floats(psnr) / 10.0)))  # PSNR on [0, 1] images: MSE = 10^(-PSNR/10)
    node: Any = run["evaluate"]
    for key in figure.path:
        if not isinstance(node, dict) or key not in node:
            raise KeyError(f"{run['rev']}: {EVALUATE} has no {'.'.join(figure.path)}")
        node = node[key]
    return float(node) * figure.scale


def verdict(figure: Figure, value: float | None) -> str:
    if value is None:
        return "not run here"
    tol = figure.tolerance * abs(figure.value) if figure.relative else figure.tolerance
    return "reproduced" if abs(value - figure.value) <= tol else "not reproduced"


def side_by_side(runs: dict[str, str], reader: Reader | None = None) -> list[dict[str, Any]]:
    """One row per :data:`FIGURES` entry, ``runs`` mapping a setting of :data:`SETTINGS` to
    the revision of our run of it (settings without a run give "not run here")."""
    unknown = sorted(set(runs) - set(SETTINGS))
    if unknown:
        raise ValueError(f"unknown setting(s) {unknown}: the settings are {sorted(SETTINGS)}")
    reader = reader or read_run
    loaded = {preset: reader(rev) for preset, rev in runs.items()}
    rows = []
    for f in FIGURES:
        run = loaded.get(f.setting)
        value = ours(f, run) if run is not None else None
        v = verdict(f, value)
        tol = f"{f.tolerance:.0%} of it" if f.relative else f"{f.tolerance:g}{(' ' + f.unit) if f.unit else ''}"
        rows.append({"study": f.study, "what": f.what, "source": f.source, "theirs": f.value, "unit": f.unit,
                     "ours": value, "difference": None if value is None else value - f.value,
                     "tolerance": tol, "verdict": v, "setting": f.setting, "command": SETTINGS[f.setting],
                     "run": None if run is None else {"rev": run["rev"], "sha": run.get("sha")},
                     "why": {"reproduced": "", "not reproduced": f.reason,
                             "not run here": f"{f.needs}; then `{SETTINGS[f.setting]}`"}[v]})
    return rows


# ------------------------------------------------------------------ writing
def _num(v: float | None, unit: str) -> str:
    if v is None:
        return "-"
    text = f"{v:.4g}" if abs(v) < 1 else f"{v:.2f}"
    return f"{text} {unit}".strip() if unit and unit != "%" else (f"{text} %" if unit == "%" else text)


def markdown(rows: list[dict[str, Any]]) -> str:
    lines = ["| study | figure | theirs | ours | difference | tolerance | verdict | why / what it needs |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        diff = "-" if r["difference"] is None else f"{r['difference']:+.3g}"
        lines.append(f"| {r['study']} ({r['source']}) | {r['what']} | {_num(r['theirs'], r['unit'])} | "
                     f"{_num(r['ours'], r['unit'])} | {diff} | {r['tolerance']} | **{r['verdict']}** | "
                     f"{r['why'] or '-'} |")
    runs = sorted({f"`{r['setting']}`: {r['run']['rev']} ({(r['run']['sha'] or '')[:7]})" for r in rows if r["run"]})
    lines += ["", "Runs: " + ("; ".join(runs) if runs else "none") + ".", ""]
    return "\n".join(lines)


def write(rows: list[dict[str, Any]], out_dir: str | Path = OUT_DIR) -> tuple[Path, Path]:
    out_dir = Path(out_dir)
    md, js = out_dir / "side_by_side.md", out_dir / "side_by_side.json"
    write_text(md, "# The studies' figures beside ours\n\nWritten by `aerestore side-by-side` "
               "(docs/studies.md, \"Studies side by side\").\n\n" + markdown(rows))
    write_json(js, {"rows": rows})
    return md, js
