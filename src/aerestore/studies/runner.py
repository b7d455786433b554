"""The claims report's runs: each (arm, seed) trained once, or read from the run cache.

Why the report runs the library in-process instead of one DVC experiment per run: the
scaled-down report is 16 arms x 5 seeds = 80 trainings of ~10-30 s each on 2 cores. A DVC
experiment per run costs a workspace copy, a git commit and 6-8 fresh Python processes (each
importing torch, ~2-4 s on a loaded 2-core machine), which would add as much time as the
training itself and push the report past its 60-minute budget. So each (arm, seed) runs the
pipeline's own stage functions (``stages/*.py``: download, prepare, blocks, train, and for
per-cluster claims cluster and decoders) in a work folder, and the measures are computed from
the trained model with the evaluate stage's code (:mod:`aerestore.evaluate`,
:mod:`aerestore.metrics`). The result of each run is cached in ``reports/cache/runs/<key>.json``,
keyed by the SHA-256 of the run's complete validated params, the stages it ran and the digest
of the code it ran (:func:`code_digest`: ``src/aerestore`` and ``stages/``, less the study tools
and the CLI): a second ``aerestore report`` with nothing changed trains nothing, and a change of
a param or of the code reruns exactly the runs it touches, as DVC would. The data stages are cached the
same way per (data params, seed) in ``reports/cache/data/``. The full-scale settings are the
study presets (``presets/``, ``aerestore preset``), which do run as DVC experiments.
"""

from __future__ import annotations

import ast
import contextlib
import copy
import hashlib
import io
import json
import os
import shutil
import sys
import time
import tokenize
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from ..io import write_json
from ..params import deep_update
from .claims import ARMS, SCALED, Arm, Claim
from .measures import interpolation_departure, train_loss_drop

REPO = Path(__file__).resolve().parents[3]
CACHE_VERSION = 2  # 2: every run records train_loss_drop (claim 21)


def arm_params(base: dict, arm: Arm, seed: int, setting: dict | None = None) -> dict:
    """The raw params of one run: ``base`` (params.yaml), :data:`SCALED`, a study's setting
    (:data:`aerestore.studies.claims.SETTINGS`' overrides, if any), the arm's overrides, the
    seed; validated (a bad override raises :class:`aerestore.params.ParamsError`)."""
    from ..params import parse_params

    raw = deep_update(copy.deepcopy(base), SCALED)
    if setting:
        raw = deep_update(raw, setting)
    raw = deep_update(raw, arm.overrides)
    raw["seed"] = int(seed)
    return parse_params(raw, source=f"report arm {arm.arch} seed {seed}").model_dump()


# Paths under src/aerestore whose code a run does not execute: the study tools (the claims
# report's own code is hashed by report_digest instead; seeds, latent sizes and presets are not
# run) and the CLI (a module or a package).
# benchmark_sets.py: the CBSD68 scorer, run by `aerestore cbsd68` only (no stage, no claim
# imports it); tests/test_report.py checks that no code a run executes imports any of these.
NOT_RUN = ("studies", "cli.py", "cli", "benchmark_sets.py")


def _runs(rel: Path) -> bool:
    """Whether the file ``rel`` (relative to src/aerestore) is code a run executes."""
    return not any(rel.parts[0] == p for p in NOT_RUN)


def code_text(source: str) -> str:
    """The part of a Python source that can change what it computes: the source less its
    comments, its docstrings (module, class and function), trailing spaces and blank lines.

    Why: the digests hashed every byte, so a fixed typo in a docstring made the committed
    report stale and cost a full rerun (about 30 min on 2 cores) of runs whose code did not
    change. The spans come from :mod:`ast` (docstrings) and :mod:`tokenize` (comments), which
    give the same positions on every Python version, and the digest is taken over the source
    text that remains (not over ``ast.dump``, whose output changes between versions). A file
    that does not parse is hashed as it is."""
    try:
        tree = ast.parse(source)
        comments = [t for t in tokenize.generate_tokens(io.StringIO(source).readline) if t.type == tokenize.COMMENT]
    except (SyntaxError, tokenize.TokenError):
        return source
    lines = source.splitlines()

    def char_col(row: int, byte_col: int) -> int:  # ast's columns count UTF-8 bytes
        return len(lines[row - 1].encode()[:byte_col].decode(errors="ignore"))

    spans = [(t.start, t.end) for t in comments]
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) and isinstance(first.value.value, str):
                spans.append(((first.lineno, char_col(first.lineno, first.col_offset)),
                              (first.end_lineno, char_col(first.end_lineno, first.end_col_offset))))
    # blank each span, last first so that earlier positions stay valid
    for (r0, c0), (r1, c1) in sorted(spans, reverse=True):
        head, tail = lines[r0 - 1][:c0], lines[r1 - 1][c1:]
        lines[r0 - 1 : r1] = [head + tail] + [""] * (r1 - r0)
    return "\n".join(line.rstrip() for line in lines if line.strip())


def code_digest(root: Path = REPO) -> str:
    """SHA-256 over the code a run executes: src/aerestore and stages/ (less :data:`NOT_RUN`),
    each file's path relative to ``root`` and its :func:`code_text` (a comment or a docstring
    changes no run)."""
    pkg = root / "src" / "aerestore"
    files = sorted([*(f for f in pkg.rglob("*.py") if _runs(f.relative_to(pkg))), *(root / "stages").glob("*.py")])
    return sources_digest(files, root)


def sources_digest(files: Iterable[Path], base: Path) -> str:
    """SHA-256 over ``files``, in order: each one's path relative to ``base`` and its
    :func:`code_text` (what :func:`code_digest` and the report's ``report_digest`` hash)."""
    h = hashlib.sha256()
    for f in files:
        h.update(str(f.relative_to(base)).encode())
        h.update(code_text(f.read_text(encoding="utf-8")).encode())
    return h.hexdigest()


def _key(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:20]


DATA_KEYS = ("seed", "data", "prepare", "blocks")


def data_key(params: dict, code: str) -> str:
    return _key({"v": CACHE_VERSION, "code": code, **{k: params[k] for k in DATA_KEYS}})


# What a silhouette arm measures; part of its run key (a run cached with the old, in-sample
# measure is rerun; the other arms' keys do not change).
SILHOUETTE_ON = "test blocks, clusters fitted on training blocks"


# How the cross rows' inputs are drawn (cross_rows); part of a cross arm's run key, so that a run
# cached with other inputs is rerun.
CROSS_DRAW = 1
CROSS_INPUTS = f"evaluate_inputs.redegrade, draw {CROSS_DRAW}"


def run_key(params: dict, arm: Arm, code: str) -> str:
    key = {"v": CACHE_VERSION, "code": code, "params": params, "full": arm.full,
           "silhouette": SILHOUETTE_ON if arm.silhouette else False, "rows": list(arm.rows),
           "interpolation": arm.interpolation}
    if arm.cross:  # only the cross arms' keys: the other arms' cached runs stay valid
        key["cross"] = CROSS_INPUTS
    return _key(key)


# ------------------------------------------------------------------------ running
@contextlib.contextmanager
def _cwd(path: Path):
    old = Path.cwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(old)


@contextlib.contextmanager
def _quiet():
    """Stage chatter (stderr prints, tqdm bars) out of the report's progress bar."""
    with open(os.devnull, "w") as null, contextlib.redirect_stderr(null), contextlib.redirect_stdout(null):
        yield


def prepare_data(params, folder: Path) -> None:
    """download -> prepare -> blocks into ``folder/data`` (cached per data key)."""
    if (folder / "done").exists():
        return
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    with _cwd(folder):
        from ..blocks import run_blocks
        from ..data.download import run_download
        from ..data.prepare import run_prepare

        data, metrics = Path("data"), Path("metrics")
        run_download(params.data, params.seed, data / "raw", metrics / "download.json")
        run_prepare(params, data / "raw", data / "prepared", metrics / "prepare.json", metrics / "plots/prepare_grid.png")
        run_blocks(params, data / "prepared", data / "blocks", metrics / "blocks.json")
    (folder / "done").write_text("ok\n")


def _float_images(a: np.ndarray) -> np.ndarray:
    return np.asarray(a, dtype=np.float32) / 255.0


def image_measures(restored: np.ndarray, clean: np.ndarray, masks) -> dict[str, np.ndarray]:
    """Per test image: every metric of :func:`aerestore.metrics.batch_metrics`, ``mse`` (mean
    squared error in [0, 1] units) and ``colour_bias`` (mean over channels of the absolute
    difference of the channel means, output - clean, in 1/255 steps: a colour cast)."""
    from .. import metrics as M
    from ..colour import colour_bias

    ref = np.asarray(clean, dtype=np.float64) / 255.0
    out = M.batch_metrics(restored, ref, masks)
    out["mse"] = ((restored - ref) ** 2).mean(axis=(1, 2, 3))
    out["colour_bias"] = colour_bias(restored, ref)
    return out


def _draw(blocks: np.ndarray, max_items: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    idx = np.sort(rng.choice(len(blocks), size=min(max_items, len(blocks)), replace=False))
    return np.asarray(blocks[idx])


def silhouette_items(model, train_blocks: np.ndarray, test_blocks: np.ndarray, k: int, seed: int,
                     max_items: int = 1500, encode=None) -> np.ndarray:
    """Per-block silhouette values (scikit-learn) of the codes of ``max_items`` **held-out**
    blocks (``test_blocks``), labelled by the soft k-means clusters (``k``) fitted on the codes
    of ``max_items`` training blocks; both drawn with ``seed`` (the same blocks for every arm of
    a seed, so the values pair).

    Deliberate (issue 23): the n-cut loss optimises the separability of the training codes, so
    a silhouette on them is in-sample; the clusters are fitted where the pipeline fits them
    (training blocks) and judged on blocks the encoder never trained on. ``encode`` (default
    :func:`aerestore.cluster.encode_blocks`) maps ``(model, blocks)`` to codes."""
    from sklearn.metrics import silhouette_samples

    from .. import cluster as C

    encode = encode or C.encode_blocks
    z_train = encode(model, _draw(train_blocks, max_items, seed))
    z = encode(model, _draw(test_blocks, max_items, seed))
    fitted = C.soft_kmeans(z_train, k, 5.0, 1e-4, 100, seed)
    labels = C.responsibilities(z, fitted.centroids, 5.0, fitted.scale).argmax(1)
    if len(np.unique(labels)) < 2:
        return np.full(len(z), np.nan)
    return silhouette_samples(z, labels)


def measure_rows(restorer, arm: Arm, x: np.ndarray, clean: np.ndarray, masks) -> dict[str, dict[str, list]]:
    """Per-item measures (:func:`image_measures`) of every row of :attr:`Arm.rows` on the
    degraded test images ``x`` (floats in [0, 1]): ``input`` scores ``x`` itself; ``base``,
    ``single``, ``multi`` the restorer's modes, and ``ensemble`` (the ensemble control) where
    the restorer has one; ``pass<k>`` the shared decoder's output fed back through the network
    until it has made k passes."""
    from ..evaluate import network_modes, restorer_row

    rows = list(arm.rows)
    if arm.full and "ensemble" in network_modes(restorer):
        rows.append("ensemble")
    outputs: dict[str, np.ndarray] = {"input": x}
    for row in rows:
        if "@" in row:
            continue  # measured on other inputs: cross_rows
        if row.startswith("pass"):
            previous = outputs["base"] if row == "pass2" else outputs[f"pass{int(row[4:]) - 1}"]
            outputs[row] = restorer_row(restorer, "base")(np.clip(previous, 0.0, 1.0).astype(np.float32))
        elif row != "input":
            outputs[row] = restorer_row(restorer, row)(x)
    return {row: {k: v.tolist() for k, v in image_measures(outputs[row], clean, masks).items()}
            for row in rows if row in outputs}


def cross_rows(restorer, arm: Arm, params_dict: dict, clean: np.ndarray) -> dict[str, dict[str, list]]:
    """Rows ``base@<damage>`` (:attr:`Arm.cross`): the shared decoder's restorer on the clean
    test images degraded anew by :data:`aerestore.studies.claims.EVAL_DAMAGE` ``[damage]``
    with the evaluate stage's :func:`aerestore.evaluate_inputs.redegrade` (``evaluate.draws``'
    per-image seeding: the run's seed, :data:`CROSS_DRAW`, the image's index), so the same
    inputs for every arm of a seed."""
    from ..evaluate import restorer_row
    from ..evaluate_inputs import redegrade
    from ..params import parse_params
    from .claims import EVAL_DAMAGE

    out = {}
    for damage in arm.cross:
        raw = deep_update(copy.deepcopy(params_dict), {"prepare": {"degrade": EVAL_DAMAGE[damage]}})
        ops = parse_params(raw, source=f"cross damage {damage}").prepare.degrade
        degraded, masks = redegrade(clean, ops, int(params_dict["seed"]), CROSS_DRAW)
        x = _float_images(degraded)
        restored = restorer_row(restorer, "base")(x)
        out[f"base@{damage}"] = {k: v.tolist() for k, v in image_measures(restored, clean, masks).items()}
    return out


def run_arm(params_dict: dict, arm: Arm, work: Path, data_dir: Path) -> dict[str, Any]:
    """Train one arm in ``work`` on the data of ``data_dir``; its per-item measures."""
    import torch

    from ..tracks.blocks.dataset import BlockData
    from ..evaluate import load_test
    from ..params import parse_params
    from ..restore import Restorer

    params = parse_params(params_dict)
    arch = arm.arch
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    (work / "data").symlink_to((data_dir / "data").resolve(), target_is_directory=True)
    torch.set_num_threads(params.runtime.threads or 1)
    t0 = time.perf_counter()
    with _cwd(work):
        from ..pipeline.cluster import ClusterPaths, run_cluster
        from ..pipeline.decoders import DecoderPaths, run_decoders
        from ..pipeline.train import TrainPaths, run_train

        data, model_dir = Path("data"), Path("models") / arch
        run_train(params, arch, TrainPaths(blocks=data / "blocks", prepared=data / "prepared", model=model_dir / "model.pt",
                                           metrics=Path(f"metrics/train/{arch}.json"),
                                           curve=Path(f"metrics/curves/train_{arch}.csv")))
        if arm.full:
            run_cluster(params, arch, ClusterPaths(model_dir=model_dir, blocks=data / "blocks", prepared=data / "prepared",
                                                   metrics=Path(f"metrics/cluster/{arch}.json"),
                                                   plot=Path(f"metrics/cluster/{arch}_latent.png")))
            run_decoders(params, arch, DecoderPaths(model_dir=model_dir, blocks=data / "blocks", prepared=data / "prepared",
                                                    metrics=Path(f"metrics/decoders/{arch}.json"),
                                                    plot=Path(f"metrics/decoders/{arch}_curve.png"),
                                                    curve=Path(f"metrics/decoders/{arch}_curve.csv")))
        seconds_train = time.perf_counter() - t0
        clean, degraded, masks = load_test("data/prepared", params.evaluate.max_images)
        restorer = Restorer.load(Path("models") / arch, routing=params.evaluate.routing, decoders=arm.full)
        items = measure_rows(restorer, arm, _float_images(degraded), clean, masks)
        items.update(cross_rows(restorer, arm, params_dict, clean))
        items["base"]["train_loss_drop"] = [train_loss_drop(f"metrics/curves/train_{arch}.csv")]
        if arm.interpolation:
            items["base"]["interpolation"] = interpolation_departure(
                restorer.model, params.blocks.overlap, _float_images(clean)).tolist()
        if arm.silhouette:
            train = BlockData.load("data/blocks", "train")
            test = BlockData.load("data/blocks", "test")
            sil = silhouette_items(restorer.model, train.degraded, test.degraded,
                                   params.train_for(arch).loss.ncut_k, params.seed)
            items["base"]["silhouette"] = sil.tolist()
        train_metrics = json.loads(Path(f"metrics/train/{arch}.json").read_text())
    from ..stage import machine_info

    machine = machine_info()
    return {"arch": arch, "seed": params.seed, "items": items, "train": train_metrics,
            "machine": f"{machine['cpu']} ({machine['isa']})",
            "seconds": round(time.perf_counter() - t0, 2), "seconds_train": round(seconds_train, 2),
            "test_images": int(len(clean))}


class RunCache:
    """Results of runs on disk, one JSON per run key (written atomically)."""

    def __init__(self, root: Path):
        self.root = Path(root)

    def path(self, key: str) -> Path:
        return self.root / "runs" / f"{key}.json"

    def get(self, key: str) -> dict | None:
        p = self.path(key)
        if not p.is_file():
            return None
        try:
            return json.loads(p.read_text())
        except json.JSONDecodeError:
            return None  # a damaged entry is rerun

    def put(self, key: str, result: dict) -> None:
        write_json(self.path(key), result)


def _train_one(name: str, params: dict, key: str, cache_root: str, data_dir: str) -> dict:
    """Train one (arm, seed) whose data is prepared, cache and return its result (a worker
    process's job: top-level, so that it pickles)."""
    cache_root_p = Path(cache_root)
    work = cache_root_p / "work" / key
    with _quiet():
        hit = run_arm(params, ARMS[name], work, Path(data_dir))
    shutil.rmtree(work, ignore_errors=True)
    hit["key"] = key
    hit["arm"] = name
    RunCache(cache_root_p).put(key, hit)
    return hit


def run_claims(claims: list[Claim], seeds: Iterable[int], base: dict, cache_root: Path,
               progress: bool = True, workers: int = 1, setting: dict | None = None) -> dict[tuple[str, int], dict]:
    """Every (arm, seed) the claims need: from the cache, or trained now. Returns the results
    by (arm, seed). ``setting``: a study's setting's overrides (:func:`arm_params`).

    ``workers`` > 1 trains that many runs at once in worker processes (each run uses one
    thread, :data:`SCALED`, so a run's numbers do not depend on ``workers``). The data stages
    run first, one after the other, since the arms of a seed share them."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed

    from tqdm import tqdm

    from ..params import parse_params

    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    code = code_digest()
    cache = RunCache(cache_root)
    todo = [(a, s) for s in seeds for a in dict.fromkeys(a for c in claims for a in c.arms)]
    results: dict[tuple[str, int], dict] = {}
    jobs = []
    for name, seed in todo:
        params = arm_params(base, ARMS[name], seed, setting)
        key = run_key(params, ARMS[name], code)
        hit = cache.get(key)
        if hit is None:
            jobs.append((name, seed, params, key, cache_root / "data" / data_key(params, code)))
        else:
            results[(name, seed)] = hit
    bar = tqdm(total=len(todo), initial=len(results), desc="report runs", unit="run", disable=not progress,
               file=sys.stderr)
    for _, _, params, _, data_dir in jobs:
        with _quiet():
            prepare_data(parse_params(params), data_dir)
    args = [(name, params, key, str(cache_root), str(data_dir)) for name, _, params, key, data_dir in jobs]
    if workers == 1 or len(jobs) < 2:
        for (name, seed, *_), a in zip(jobs, args):
            bar.set_postfix_str(f"{name} seed {seed}")
            results[(name, seed)] = _train_one(*a)
            bar.update()
    else:
        with ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn")) as pool:
            futures = {pool.submit(_train_one, *a): (name, seed) for (name, seed, *_), a in zip(jobs, args)}
            for f in as_completed(futures):
                name, seed = futures[f]
                results[(name, seed)] = f.result()
                bar.set_postfix_str(f"{name} seed {seed}")
                bar.update()
    bar.close()
    if progress:
        print(f"report: {len(todo)} runs, {len(jobs)} trained now, {len(todo) - len(jobs)} from the cache "
              f"({cache.root / 'runs'})", file=sys.stderr)
    return results
