"""What the ``evaluate`` stage writes for people (:func:`aerestore.evaluate.run_evaluate`):
the summary table (``metrics/summary.md``: :func:`summary_markdown`, :func:`comparison_lines`,
:func:`classical_markdown`) and the plots (:func:`grid_png`, :func:`bars_png`)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from . import metrics as M
from .evaluate import COMPARED, ENSEMBLE, NOT_APPLICABLE, PEER_PREFIX
from .io import atomic_path
from .params import PEER_REFERENCE


def classical_markdown(result: dict, archs: list[str], tuning: dict, tune_images: int) -> str:
    """The summary's lines on the classical side: the settings chosen on validation, and the
    oracle row (an upper bound) with each network's gap to it."""
    lines = []
    if tuning:
        chosen = "; ".join(f"{name}: " + ", ".join(f"{k} {v:g}" for k, v in rec["chosen"].items())
                           + f" ({rec['val_psnr']:.2f} dB)" for name, rec in tuning.items())
        lines += ["", f"Classical settings chosen on {tune_images} validation images (best mean PSNR over the "
                  f"grid `evaluate.classical_grid`; the test split is scored once, afterwards): {chosen}."]
    sub = result.get("anchor_subset", {})
    ssims = [(r["ssim"], name) for name, r in sub.get("classical", {}).items() if r.get("ssim") is not None]
    if ssims:
        best_ssim, name = max(ssims)
        diffs = "; ".join(f"{arch} {mode} {sub[arch][mode]['ssim'] - best_ssim:+.3f}" for arch in archs
                          for mode in ("single", "multi") if sub.get(arch, {}).get(mode, {}).get("ssim") is not None)
        lines += ["", f"Best classical SSIM on the {sub['images']} anchor images: **{_classical_label(name)}**, "
                  f"{best_ssim:.3f}. The networks against it (SSIM): {diffs or '–'}."]
    o = sub.get("oracle")
    if o is not None:
        regions = _shown_regions(sub)
        sp = result.get("speed") or {}
        one = (f" ({_speed(sp['megapixels_per_s']['oracle'])} on one {sp['size']} px image)"
               if "oracle" in sp.get("megapixels_per_s", {}) else "")
        cells = " ".join(f"PSNR {r} {_fmt(o.get(f'psnr_{r}'), 2)};" for r in regions)
        gaps = "; ".join(f"{arch} {mode} {sub[arch][mode]['oracle_gap_db']:+.2f} dB" for arch in archs
                         for mode in ("single", "multi") if sub.get(arch, {}).get(mode, {}).get("oracle_gap_db") is not None)
        lines += ["", f"**Upper bound, not a competitor: oracle ({o['denoiser']} + Wiener told the true masks, "
                  f"noise levels and blur strength)** on the {sub['images']} anchor images: PSNR {_fmt(o['psnr'], 2)}, "
                  f"SSIM {_fmt(o['ssim'])}; {cells} {_speed(o.get('megapixels_per_s'))} Mpx/s{one}. "
                  f"The networks against it (PSNR): {gaps or '–'}."]
    return "\n".join(lines) + "\n" if lines else ""


def _fmt(v, digits=3) -> str:
    if v is None:
        return "–"
    return f"{v:.{digits}f}"


def _speed(v: float | None) -> str:
    if not v:
        return "–"
    return f"{v:.2f}" if v >= 0.1 else f"{v:.2g}"  # bm3d on small images: 0.0061, not 0.00


def _shown_regions(block: dict) -> list[str]:
    """The regions with pixels in the test images (the degraded row has a PSNR there)."""
    return [r for r in M.REGIONS if block["degraded"].get(f"psnr_{r}") is not None]


def _table(block: dict, archs: list[str], classical: list[str], regions: list[str],
           margin_to: dict | None, speed: dict | None = None, peers: list[str] = ()) -> list[str]:
    """One results table; ``speed`` (``result["speed"]``) adds a column: each row's Mpx/s on
    one image of ``speed["size"]`` px (:mod:`aerestore.evaluate_inputs`)."""
    per_row = (speed or {}).get("megapixels_per_s", {})
    head = "| restorer | PSNR (dB) | SSIM | UQI | blur % |"
    sep = "|---|---:|---:|---:|---:|"
    for r in regions:
        head += f" PSNR {r} |"
        sep += "---:|"
    if margin_to is not None:
        head += f" vs {margin_to['name']} (dB) |"
        sep += "---:|"
    head += " Mpx/s |"
    sep += "---:|"
    if speed:
        head += f" Mpx/s, one {speed['size']} px image |"
        sep += "---:|"
    lines = [head, sep]

    def row(label: str, r: dict, mpx: float | None, key: str | None = None) -> str:
        s = (f"| {label} | {_fmt(r['psnr'], 2)} | {_fmt(r['ssim'])} | {_fmt(r['uqi'])} "
             f"| {_fmt(r['blur_percent'], 1)} |")
        for reg in regions:
            s += f" {_fmt(r.get(f'psnr_{reg}'), 2)} |"
        if margin_to is not None:
            s += " – |" if r["psnr"] is None else f" {r['psnr'] - margin_to['psnr']:+.2f} |"
        s += f" {_speed(mpx)} |"
        return s + f" {_speed(per_row.get(key))} |" if speed else s

    lines.append(row("degraded input", block["degraded"], None))
    for arch in archs:
        e = block[arch]
        lines.append(row(f"{arch} shared decoder (as trained)", e["base"], None, f"{arch}.base"))
        lines.append(row(f"{arch} single decoder (control)", e["single"], None, f"{arch}.single"))
        if ENSEMBLE in e:
            lines.append(row(f"{arch} ensemble control", e[ENSEMBLE], None, f"{arch}.{ENSEMBLE}"))
        lines.append(row(f"**{arch} per-cluster decoders**", e["multi"], e.get("megapixels_per_s"), f"{arch}.multi"))
    for name in peers:
        r = block["peers"][name]
        lines.append(row(f"peer: {name}", r, r.get("megapixels_per_s"), PEER_PREFIX + name))
    for name in classical:
        if name in block.get("classical", {}):
            r = block["classical"][name]
            lines.append(row(f"{_classical_label(name)} (classical)", r, r.get("megapixels_per_s"), name))
    return lines


def _classical_label(name: str) -> str:
    from .classical import RESTORERS

    return (RESTORERS[name].label or name) if name in RESTORERS else name


def summary_markdown(result: dict, archs: list[str], classical: list[str], settings: dict[str, str],
                     skipped: dict[str, str] | None = None, peers: list[str] = ()) -> str:
    skipped = skipped or {}
    regions = _shown_regions(result)
    sub = result.get("anchor_subset")
    full_classical = [c for c in classical if c in result.get("classical", {})]
    subset_only = [c for c in classical if sub and c in sub.get("classical", {}) and c not in full_classical]
    scored = f"{result['images']} test images"
    if result.get("draws", 1) > 1:  # evaluate.draws
        scored = (f"{result['images'] // result['draws']} test images x {result['draws']} damage draws "
                  f"= {result['images']} scored")
    lines = [f"## aerestore: {scored}, whole-image metrics", ""]
    lines += _table(result, archs, full_classical, regions, None, result.get("speed"), peers)
    if sub is not None and subset_only:
        what = ", ".join(subset_only) if subset_only else "none"
        lines += ["", f"### Like for like on the anchor subset: {sub['images']} of the {result['images']} test "
                  f"images (evenly spaced, `evaluate.anchor_images`), every row on the same images",
                  "", f"Slow classical restorers that ran on these images only: {what}.", ""]
        lines += _table(sub, archs, classical, regions, sub.get("best_classical"), result.get("speed"), peers)
    if sub is not None and sub.get("best_classical"):
        b = sub["best_classical"]
        margins = "; ".join(
            f"{arch} {mode} {sub[arch][mode]['margin_db']:+.2f} dB" for arch in archs for mode in ("single", "multi")
            if sub[arch].get(mode, {}).get("margin_db") is not None)
        margins += "".join(f"; peer: {name} {r['margin_db']:+.2f} dB" for name, r in sub.get("peers", {}).items()
                           if r.get("margin_db") is not None)
        lines += ["", f"Best classical restorer on the {sub['images']} anchor images: **{b['name']}**, "
                  f"{b['psnr']:.2f} dB. Margin of the networks over it (PSNR): {margins or '–'}."]
    for name, why in skipped.items():
        lines += ["", f"**{name} (classical): skipped**: {why}."]
    lines += comparison_lines(result, archs, regions)
    lines += peer_lines(result, archs, regions, peers)
    ran = [n for n in classical if n not in skipped]
    if ran:
        lines += ["", "Classical restorers' settings: " + "; ".join(f"{n}: {settings.get(n, '')}" for n in ran) + "."]
    lines += ["", "PSNR/SSIM/UQI: higher is better. blur %: 100·(Z1−Z2)/Z1 against the clean image, "
              "0 = as sharp as the clean image, > 0 blurrier, < 0 noisier/over-sharpened; the "
              "comparison uses |blur %|."]
    if regions:
        lines += ["PSNR <kind>: over the pixels whose damage mask marks that kind (weight > "
                  "127/255, the largest of the kinds); PSNR clean: over the pixels without any local "
                  "damage (every mask channel 0)."]
    return "\n".join(lines) + "\n"


COMPARISONS = (
    ("multi_vs_single", "the per-cluster decoders beat the single decoder (control)"),
    ("multi_vs_ensemble", "the per-cluster decoders beat the ensemble control (as many decoders, the same "
                          "budget and mixing, damage-blind routes and weights): the idea is supported only "
                          "where they beat it and the single decoder"),
    ("ensemble_vs_single", "the ensemble control beats the single decoder (what mixing decoders buys without "
                           "any damage information)"),
)


def comparison_lines(result: dict, archs: list[str], regions: list[str]) -> list[str]:
    """The summary's comparison tables: per image, share of test images (ties count half) and
    paired Wilcoxon p, for each of :data:`COMPARISONS` that ran; the per-cluster rows carry
    the verdict (:func:`verdict`), "not applicable: one cluster" where fewer than two clusters
    have a decoder of their own."""
    keys = list(COMPARED) + [f"psnr_{r}" for r in regions]
    lines: list[str] = []
    for name, what in COMPARISONS:
        ran = [a for a in archs if name in result[a]]
        if not ran:
            continue
        per_cluster = name.startswith("multi")
        lines += ["", f"Share of test images on which {what} (ties count half; p: paired two-sided Wilcoxon):", ""]
        lines.append("| architecture | " + " | ".join(keys) + (" | verdict |" if per_cluster else " |"))
        lines.append("|---|" + "---:|" * len(keys) + ("---|" if per_cluster else ""))
        for arch in ran:
            cmp_ = result[arch][name]
            cells = [f"{cmp_[k]['share']:.0%} (p={cmp_[k]['p_value']:.2g})"
                     if k in cmp_ and cmp_[k]["share"] is not None and cmp_[k]["p_value"] is not None else "–"
                     for k in keys]
            if per_cluster:
                own = result[arch].get("own_decoders")
                v = result[arch].get("verdict", "")
                cells.append(v if name == "multi_vs_ensemble" or v == NOT_APPLICABLE else "see the ensemble control")
                if own is not None:
                    cells[-1] += f" ({own} cluster decoder{'s' if own != 1 else ''})"
            lines.append(f"| {arch} | " + " | ".join(cells) + " |")
    return lines


def peer_lines(result: dict, archs: list[str], regions: list[str], peers: list[str]) -> list[str]:
    """The summary's table of each architecture against each deep peer (``peers.names``), image
    by image: as trained (the shared decoder: the peer's budget, the same train settings and
    steps) and per-cluster (with the decoders stage's fine-tuning on top); share of test images
    it beats the peer on (ties count half) and the paired Wilcoxon p, per metric; a share
    below 50 % is the peer ahead.

    Only the rows of the network whose settings the peers train with (:data:`PEER_REFERENCE`,
    unet_ae) where it is in ``archs``: the block networks' rows (every architecture x peer x
    mode: 18 with three peers) are in the metrics (``peers.<name>.vs``), not the summary."""
    if not peers:
        return []
    keys = list(COMPARED) + [f"psnr_{r}" for r in regions]
    shown = [PEER_REFERENCE] if PEER_REFERENCE in archs else list(archs)
    lines = ["", f"Share of test images on which {' and '.join(shown)} beats a deep peer (`peers.names`, trained by "
             "`peer@<name>` with unet_ae's train settings and steps, `peers.steps`): as trained (shared decoder: the "
             "same budget as the peer at equal steps) and per-cluster (the decoders stage's fine-tuning on top); "
             "below 50 %: the peer is ahead; p: paired two-sided Wilcoxon"
             + ("" if shown == list(archs) else "; every other network against each peer: `peers.<name>.vs` in "
                "`metrics/evaluate.json`") + ":", ""]
    lines.append("| restorer vs peer | " + " | ".join(keys) + " |")
    lines.append("|---|" + "---:|" * len(keys))
    for name in peers:
        for row, cmp_ in result["peers"][name]["vs"].items():
            arch, mode = row.rsplit(".", 1)
            if arch not in shown:
                continue
            cells = [f"{cmp_[k]['share']:.0%} (p={cmp_[k]['p_value']:.2g})"
                     if k in cmp_ and cmp_[k]["share"] is not None and cmp_[k]["p_value"] is not None else "–"
                     for k in keys]
            what = "as trained" if mode == "base" else "per-cluster"
            lines.append(f"| {arch} {what} vs {PEER_PREFIX}{name} | " + " | ".join(cells) + " |")
    return lines


def grid_png(rows: list[tuple[str, np.ndarray]], path: str | Path, title: str) -> None:
    """Images side by side: one column per row label (degraded | single | multi | clean)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = min(len(imgs) for _, imgs in rows)
    fig, axes = plt.subplots(n, len(rows), figsize=(1.6 * len(rows), 1.6 * n + 0.4), dpi=100, squeeze=False)
    for j, (label, imgs) in enumerate(rows):
        for i in range(n):
            ax = axes[i, j]
            img = imgs[i]
            ax.imshow(img[..., 0] if img.shape[-1] == 1 else img, cmap="gray", vmin=0, vmax=255,
                      interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_title(label, fontsize=8)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)


def bars_png(result: dict, archs: list[str], classical: list[str], path: str | Path, title: str = "",
             peers: list[str] = ()) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = ["degraded"]
    rows = [result["degraded"]]
    for a in archs:
        for mode in ("single", "multi"):
            labels.append(f"{a} {mode}")
            rows.append(result[a][mode])
    for name in peers:
        labels.append(PEER_PREFIX + name)
        rows.append(result["peers"][name])
    for c in classical:
        if c in result.get("classical", {}):
            labels.append(c)
            rows.append(result["classical"][c])
    fig, axes = plt.subplots(1, 3, figsize=(12, 0.35 * len(labels) + 1.2), dpi=100)
    for ax, key, name in zip(axes, ("psnr", "ssim", "uqi"), ("PSNR (dB)", "SSIM", "UQI")):
        vals = [r[key] if r[key] is not None else np.nan for r in rows]
        colors = ["0.6"] + ["C0" if "single" in lab else "C1" if "multi" in lab else "C3" if lab.startswith(PEER_PREFIX)
                            else "C2" for lab in labels[1:]]
        ax.barh(range(len(labels)), vals, color=colors)
        ax.set_yticks(range(len(labels)), labels if key == "psnr" else [""] * len(labels), fontsize=8)
        ax.invert_yaxis()
        ax.set_title(name, fontsize=10)
        finite = [v for v in vals if np.isfinite(v)]
        if finite:
            lo, hi = min(finite), max(finite)
            ax.set_xlim(lo - 0.1 * (hi - lo + 1e-9), hi + 0.05 * (hi - lo + 1e-9))
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
