"""The studies' claims, re-tested: ``aerestore report`` writes ``reports/claims.md``.

:func:`report` runs (or reuses) every run the claims need (:mod:`aerestore.studies.claims`:
the claims and their arms; :mod:`aerestore.studies.runner`: the runs and their cache), tests
each claim (:mod:`aerestore.studies.analysis`: effect, interval, verdict) and writes
``reports/claims.md``, ``reports/claims.json`` and one plot per claim.

**Staleness.** ``claims.json`` records the :func:`aerestore.studies.runner.code_digest` of the
code it ran on and the report's own :func:`report_digest`; :func:`check_report` (``aerestore
report --check``) says whether the committed report is stale (exit code 1) without training
anything.
"""

from __future__ import annotations

import copy
import json
import textwrap
from pathlib import Path
from typing import Iterable

import numpy as np

from ..io import atomic_path, write_json, write_text
from ..params import deep_update, load_base
from .analysis import analyse, contrast
from .claims import (INTERVAL, LEVEL, PX64, REPORT_DIR, SCALED, SEEDS, VAE_GAN_TRAIN, Claim, Setting, select_claims,
                     select_setting)
from .runner import REPO, code_digest, run_claims, sources_digest

def _fmt(v: float, unit: str = "") -> str:
    if v is None or not np.isfinite(v):
        return "–"
    digits = 4 if abs(v) < 0.01 and v != 0 else 3 if abs(v) < 1 else 2
    return f"{v:.{digits}g}" if abs(v) < 1e-3 and v != 0 else f"{v:.{digits}f}"


def _p(p: float) -> str:
    if p is None or not np.isfinite(p):
        return "–"
    if p < 1e-16:  # below double precision's resolution of 1 - p: scipy returns 0
        return "< 1e-16"
    return f"{p:.1e}" if p < 1e-3 else f"{p:.3f}"


def _verdict_cell(row: dict, i: int) -> str:
    """The claim's verdict in bold on its first line; with several measures, each line also
    gives its own measure's."""
    own = row["measures"][i]["verdict"]
    if len(row["measures"]) == 1:
        return f"**{row['verdict']}**"
    return (f"**{row['verdict']}** (this measure: {own})" if i == 0 else f"this measure: {own}")


VERDICT_RULE = (
    "**Verdict rule.** Effect = the contrast of the arms' per-item values (column *measure*), "
    "mean over the items of a seed, then over the seeds. CI = 95 % Student-t interval over the "
    "per-seed means (the seeds are the independent units: one training run each; column *n* = "
    "seeds x items per seed); on simulated claims with no true effect it says *holds* and *does "
    "not hold* about 2.5 % of the time each. |blur %| = distance from the clean image's "
    "sharpness (claims 7 and 10: lower = sharper). A claim *holds* when its CI lies "
    "entirely on the claimed side of 0; it *does not hold* when the CI lies entirely on the "
    "other side, or below the claimed size (claim 2's 'far': 1 dB); otherwise *inconclusive*. "
    "Claim 4 ('does not help') holds when the CI's upper end is below a 0.1 dB gain, does not "
    "hold when its lower end is above 0. Claim 5 needs both of its measures. p = paired "
    "two-sided Wilcoxon signed-rank on the items pooled over the seeds (overstates the "
    "evidence: items of one seed share a training run); *share* = items that moved in the "
    "claimed direction (ties half).")


def _cell(text: str) -> str:
    """Text for a Markdown table cell: ``|`` escaped (``|blur %|`` would split the cell)."""
    return str(text).replace("|", "\\|")


def _sample_size(m: dict) -> str:
    """``5 x 50`` (seeds x items per seed), ``5 x 48-50`` when the seeds' counts differ."""
    counts = [c for c in m.get("items_per_seed", {}).values() if c]
    if not counts:
        return "–"
    lo, hi = min(counts), max(counts)
    return f"{m.get('n_seeds', len(counts))} x {lo if lo == hi else f'{lo}-{hi}'}"


def claims_markdown(rows: list[dict], seeds: list[int], seconds: float, settings: str,
                    machines: dict[str, int] | None = None) -> str:
    trained_on = "; ".join(f"{name}: {n} runs" for name, n in (machines or {}).items())
    lines = [
        "# The studies' claims, re-tested",
        "",
        f"Written by `aerestore report` from real runs: {len(seeds)} seeds ({', '.join(map(str, seeds))}) per arm, "
        f"scaled down ({settings}). Runs took {seconds / 60:.1f} min of training and measuring in all "
        "(cached runs count their original time)." + (f" Trained on {trained_on}." if trained_on else ""),
        "",
        "| # | claim | source (study's figure) | our setting | measure | n | effect [95 % CI] | p (Wilcoxon) | share | per seed | verdict |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        for i, m in enumerate(r["measures"]):
            unit = f" {m['unit']}" if m["unit"] else ""
            per_seed = ", ".join(_fmt(v) for v in m["per_seed"].values())
            first = i == 0
            lines.append(
                f"| {r['claim'] if first else ''} | {_cell(r['text']) if first else ''} | "
                f"{_cell(r['study'] + ': ' + r['source']) if first else ''} | {_cell(r['setting']) if first else ''} | "
                f"{_cell(m['label'])} | {_sample_size(m)} | "
                f"{_fmt(m['effect'])}{unit} [{_fmt(m['ci'][0])}, {_fmt(m['ci'][1])}] | "
                f"{_p(m['p_value'])} | {m['share_claimed_direction']:.0%} | {per_seed} | "
                f"{_verdict_cell(r, i)} |")
    lines += ["", VERDICT_RULE, "", "## Plots", ""]
    for r in rows:
        lines.append(f"- claim {r['claim']}: [{r['text']}](claims/claim_{r['claim']}.png)")
    lines += ["", "Machine-readable: [claims.json](claims.json). Arms (param overrides on params.yaml and "
              "the scaled-down settings) are listed there per claim.", ""]
    return "\n".join(lines)


def claim_plot(row: dict, diffs: dict[str, dict[int, np.ndarray]], path: Path) -> None:
    """Per measure: the per-item effects of each seed (dots), each seed's mean (bar), and the
    overall effect with its CI (black), against 0 (dashed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ms = row["measures"]
    fig, axes = plt.subplots(1, len(ms), figsize=(4.8 * len(ms), 3.6), squeeze=False)
    for ax, m in zip(axes[0], ms):
        per = diffs[m["label"]]
        seeds = sorted(per)
        rng = np.random.default_rng(0)
        for i, s in enumerate(seeds):
            d = per[s][np.isfinite(per[s])]
            ax.scatter(i + rng.uniform(-0.2, 0.2, d.size), d, s=6, alpha=0.4)
            ax.hlines(d.mean() if d.size else np.nan, i - 0.3, i + 0.3, color="C3")
        x = len(seeds)
        lo, hi = m["ci"]
        ax.errorbar([x], [m["effect"]], yerr=[[m["effect"] - lo], [hi - m["effect"]]], fmt="o", color="k", capsize=4)
        ax.axhline(0, ls="--", color="grey", lw=1)
        ax.set_xticks(range(x + 1), [f"seed {s}" for s in seeds] + ["all (CI)"])
        ax.set_ylabel(f"{m['label']}" + (f" ({m['unit']})" if m["unit"] else ""))
        ax.set_title(f"{m['verdict']}", fontsize=9)
    fig.suptitle(textwrap.fill(f"claim {row['claim']}: {row['text']}", 40 * len(ms)), fontsize=10)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=90)
    plt.close(fig)


def scaled_description(base: dict, setting: tuple[Setting, dict] | None = None) -> str:
    from ..params import parse_params

    raw = deep_update(copy.deepcopy(base), SCALED)
    if setting:
        raw = deep_update(raw, setting[1])
    p = parse_params(raw)
    if setting:
        return (f"{setting[0].description}; {p.data.source} data from {p.data.path}, every image of "
                f"{p.data.image_size} px, {p.train.blocks.epochs} epochs of every training image (vae_gan: "
                f"{VAE_GAN_TRAIN['blocks']['per_epoch']} a epoch), {p.runtime.threads} thread")
    return (f"{p.data.source} data, {p.data.limit} images of {p.data.image_size} px "
            f"({PX64['data']['limit']} for the 64 px claims), {p.train.blocks.epochs} epochs of "
            f"{p.train.blocks.per_epoch} blocks, {p.runtime.threads} thread")


def run_machines(results: dict) -> dict[str, int]:
    """How many runs each machine trained (``cpu (isa)``, :func:`aerestore.stage.machine_info`):
    the last bits of training differ between CPUs, and at this scale a verdict near the edge of
    its interval can flip with them (docs/studies.md). Runs cached before the machine was
    recorded count as ``not recorded``."""
    counts: dict[str, int] = {}
    for r in results.values():
        name = r.get("machine", "not recorded")
        counts[name] = counts.get(name, 0) + 1
    return dict(sorted(counts.items()))


def write_report(claims: list[Claim], seeds: list[int], results: dict, out_dir: Path, base: dict,
                 setting: tuple[Setting, dict] | None = None) -> list[dict]:
    """reports/claims.md, reports/claims.json and reports/claims/claim_<n>.png; in a study's
    setting (``setting``: :func:`aerestore.studies.claims.select_setting`'s pair) each row's
    "our setting" names it."""
    rows = analyse(claims, results, seeds)
    if setting:
        for r in rows:
            r["setting"] = setting[0].setting_text(r["setting"])
    seconds = sum(r.get("seconds", 0) for r in results.values())
    settings = scaled_description(base, setting)
    machines = run_machines(results)
    for c, r in zip(claims, rows):
        diffs = {m.label: {s: contrast(m, results, s)[0] for s in seeds} for m in c.measures}
        claim_plot(r, diffs, out_dir / "claims" / f"claim_{c.number}.png")
    write_json(out_dir / "claims.json", {"seeds": seeds, "scaled": SCALED, "scaled_64px": PX64,
                                         **({"study_setting": {"name": setting[0].name, "overrides": setting[1]}}
                                            if setting else {}),
                                         "settings": settings, "claims": rows,
                                         "interval": {"method": INTERVAL, "level": LEVEL},
                                         "code_digest": code_digest(), "report_digest": report_digest(),
                                         "seconds": round(seconds, 1), "machines": machines})
    write_text(out_dir / "claims.md", claims_markdown(rows, seeds, seconds, settings, machines))
    return rows


def report(claim_numbers: Iterable[int] | None = None, seeds: Iterable[int] = SEEDS,
           params_path: str | Path = "params.yaml", out_dir: str | Path = REPORT_DIR,
           cache_dir: str | Path | None = None, progress: bool = True, workers: int = 1,
           setting: str | None = None) -> list[dict]:
    """Run (or reuse) every run the claims need, then write the report; returns its rows.

    A subset of claims writes a report of that subset only (the other rows are not kept).
    ``setting`` (``NAME=PATH``, :data:`aerestore.studies.claims.SETTINGS`) runs the claims in a
    study's own setting on the data in PATH: only that setting's claims (all of them when
    ``claim_numbers`` is empty)."""
    seeds = [int(s) for s in seeds]
    if len(seeds) < 1 or len(set(seeds)) != len(seeds):
        raise ValueError(f"seeds must be distinct, got {seeds}")
    study = select_setting(setting) if setting else None
    numbers = list(claim_numbers) if claim_numbers else None
    if study:
        numbers = numbers or list(study[0].claims)
        outside = sorted(set(numbers) - set(study[0].claims))
        if outside:
            raise ValueError(f"claims {outside} have no run in the setting {study[0].name!r} "
                             f"(its claims: {list(study[0].claims)})")
    claims = select_claims(numbers)
    base = load_base(params_path)
    out_dir = Path(out_dir)
    cache_root = (Path(cache_dir) if cache_dir else out_dir / "cache").resolve()
    results = run_claims(claims, seeds, base, cache_root, progress=progress, workers=workers,
                         setting=study[1] if study else None)
    return write_report(claims, seeds, results, out_dir, base, study)


# ------------------------------------------------------------------------ staleness
# The report's own code (under src/aerestore): the claims, the runs, the statistics, the
# outputs. runner.code_digest leaves them out (a change here reruns no run) and report_digest
# hashes them (a change here can change the verdicts, so the committed report is stale).
REPORT_FILES = ("studies/claims.py", "studies/runner.py", "studies/measures.py", "studies/analysis.py",
                "studies/report.py", "stats.py")


def report_digest(root: Path = REPO) -> str:
    """SHA-256 of the report's own code, :data:`REPORT_FILES` (each file's path under
    ``src/aerestore`` and its :func:`aerestore.studies.runner.code_text`): a change there
    changes the verdicts without rerunning any run; a comment or a docstring does not."""
    pkg = root / "src" / "aerestore"
    return sources_digest([pkg / name for name in REPORT_FILES], pkg)


def check_report(out_dir: str | Path = REPORT_DIR, root: Path = REPO) -> tuple[bool, str]:
    """Whether ``out_dir/claims.json`` was written by the code now in ``root``: ``(fresh,
    message)``. Stale when the file is missing, records no digest (written before issue 23),
    or its :func:`code_digest` (the code the runs executed) or :func:`report_digest` (the
    statistics and claims) differs from the code's now. Cheap: hashes files, trains nothing."""
    path = Path(out_dir) / "claims.json"
    if not path.is_file():
        return False, f"{path}: missing (run `aerestore report`)"
    data = json.loads(path.read_text())
    problems = []
    for key, now in (("code_digest", code_digest(root)), ("report_digest", report_digest(root))):
        was = data.get(key)
        if was is None:
            problems.append(f"records no {key}")
        elif was != now:
            problems.append(f"{key} {was[:12]} differs from the code's now ({now[:12]})")
    if problems:
        return False, f"{path} is stale: " + "; ".join(problems) + " (rerun `aerestore report`)"
    return True, f"{path} is up to date with the code (code {data['code_digest'][:12]})"

