"""stages/explore.py end to end, as `dvc repro explore@<arch>` runs it: from a saved model
and prepared images to the grids, the metrics and the machine record, with a clear error
for an architecture it was not asked to explore."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import yaml

from helpers import degrade, fit_to, photo_images, stage_args, tiny_model

REPO = Path(__file__).resolve().parents[1]


def _stage_dir(root: Path) -> Path:
    import torch

    from aerestore.blocks import split_blocks
    from aerestore.models import save_model

    for split, (n, seed) in {"train": (8, 0), "test": (4, 1)}.items():
        clean = photo_images(n, size=32, seed=seed)
        degraded, mask = degrade(clean, seed=seed)
        d = root / "data/prepared" / split
        d.mkdir(parents=True)
        for name, array in (("clean", clean), ("degraded", degraded), ("mask", mask)):
            np.save(d / f"{name}.npy", array)
    model = tiny_model("vae", block=16)
    blocks = split_blocks(torch.from_numpy(photo_images(8, size=32)).permute(0, 3, 1, 2).float() / 255, 16, 4)
    fit_to(model, blocks.reshape(-1, *blocks.shape[-3:]), steps=20)
    (root / "models/vae").mkdir(parents=True)
    save_model(model, root / "models/vae/model.pt", overlap=4)
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params.update(latent=8, architectures=["vae"])
    params["blocks"].update(size=16, overlap=4)
    params["mlflow"]["enabled"] = False
    params["runtime"].update(threads=1, device="cpu")
    params["explore"].update(architectures=["vae"], pairs=2, steps=3, samples=4, max_train_images=8)
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    return root


def _run(cwd: Path, arch: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "DVC_"))}
    env.update(OMP_NUM_THREADS="1", NO_ALBUMENTATIONS_UPDATE="1")
    return subprocess.run([sys.executable, str(REPO / "stages/explore.py"), *stage_args("explore", arch)],
                          cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)


def test_the_explore_stage_writes_grids_metrics_and_its_machine(tmp_path):
    root = _stage_dir(tmp_path)
    proc = _run(root, "vae")
    assert proc.returncode == 0, proc.stderr[-4000:]
    grids = sorted(p.name for p in (root / "metrics/explore/vae").iterdir())
    assert "interpolation.png" in grids and "samples.png" in grids, grids
    metrics = json.loads((root / "metrics/explore/vae.json").read_text())
    assert metrics["arch"] == "vae" and metrics["block"] == 16 and metrics["overlap"] == 4
    machine = json.loads((root / "metrics/machine/explore_vae.json").read_text())
    assert machine["threads"] == 1 and machine["torch"]
    # an architecture that explore.architectures does not list: one line naming the key, nothing written
    before = sorted(str(p) for p in root.rglob("*"))
    proc = _run(root, "conv_ae")
    assert proc.returncode == 2
    assert "explore.architectures" in proc.stderr and "'conv_ae'" in proc.stderr
    assert sorted(str(p) for p in root.rglob("*")) == before
