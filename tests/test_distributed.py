"""Data-parallel training (aerestore.distributed): the launcher's command line, each rank's
share of a batch, and the real thing: `stages/train.py` with runtime.nproc = 2 re-executes
itself under torchrun, two CPU processes (gloo) train to the same result as one process
with the same global batch, and rank 0 alone writes the same files."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from aerestore import distributed
from aerestore.params import RuntimeParams, TrainParams
from helpers import stage_args

REPO = Path(__file__).resolve().parents[1]
# no batch norm (per-share statistics on CPU) and no sampling (a VAE's noise is drawn per
# rank): the same updates as one process, up to float rounding
ARCH = "conv_ae_v1"


def test_shares_cover_the_batch_in_order():
    idx = np.arange(11) * 3
    parts = [distributed.share(idx, r, 3) for r in range(3)]
    assert np.array_equal(np.concatenate(parts), idx)
    assert [len(p) for p in parts] == [3, 4, 4]


def test_launch_command_one_machine_and_several(monkeypatch):
    one = distributed.launch_command(distributed.rendezvous(RuntimeParams(nproc=2)), "stages/train.py", ["conv_ae_v1"])
    assert one[1:] == ["-m", "torch.distributed.run", "--nproc-per-node=2", "--standalone", "stages/train.py", "conv_ae_v1"]
    monkeypatch.setenv("AERESTORE_NODE_RANK", "1")
    monkeypatch.setenv("AERESTORE_MASTER_ADDR", "10.0.0.5")
    rdzv = distributed.rendezvous(RuntimeParams(nproc=4, nnodes=2, master_port=29600))
    assert rdzv.world_size == 8
    cmd = distributed.launch_command(rdzv, "s.py", [])
    assert cmd[3:8] == ["--nproc-per-node=4", "--nnodes=2", "--node-rank=1", "--master-addr=10.0.0.5",
                        "--master-port=29600"]
    monkeypatch.setenv("AERESTORE_NODE_RANK", "2")
    with pytest.raises(ValueError, match="node_rank"):
        distributed.rendezvous(RuntimeParams(nproc=4, nnodes=2))


def test_models_with_their_own_training_step_are_refused():
    from helpers import tiny_model

    model = tiny_model("vae_gan")
    with pytest.raises(ValueError, match="own training step"):
        distributed.wrap(model, torch.device("cpu"))


def _stage_dir(root: Path, nproc: int) -> Path:
    from helpers import block_data

    from aerestore.blocks import BlockGeometry, write_geometry

    root.mkdir()
    for split, seed in (("train", 0), ("val", 1)):
        data = block_data(n_images=12 if split == "train" else 4, seed=seed)
        d = root / "data/blocks" / split
        d.mkdir(parents=True)
        for name in ("degraded", "clean", "mask"):
            np.save(d / f"{name}.npy", getattr(data, name))
    write_geometry(root / "data/blocks", BlockGeometry(size=16, overlap=4))
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params.update(latent=8, architectures=["conv_ae_v1"])
    params["blocks"].update(size=16, overlap=4)
    params["mlflow"]["enabled"] = False
    # 3 epochs of 4 global batches of 64 blocks (the last one 44): 1 or 2 processes
    params["train"].update(batch_size=64)
    params["train"]["blocks"].update(epochs=3, per_epoch=0, patience=0)
    params["runtime"].update(threads=1, device="cpu", nproc=nproc)
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    return root


def _run_stage(cwd: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "DVC_"))}
    env.update(OMP_NUM_THREADS="1", NO_ALBUMENTATIONS_UPDATE="1")
    proc = subprocess.run([sys.executable, str(REPO / "stages/train.py"), *stage_args("train", "conv_ae_v1")],
                          cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return proc


def _written(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file() and "data" not in p.parts}


def test_two_processes_train_like_one_with_the_same_global_batch(tmp_path):
    one, two = _stage_dir(tmp_path / "one", 1), _stage_dir(tmp_path / "two", 2)
    out_one = _run_stage(one)
    out_two = _run_stage(two)
    assert "torch.distributed.run --nproc-per-node=2 --standalone" in out_two.stderr
    assert "torch.distributed.run" not in out_one.stderr
    # rank 0 alone wrote, and wrote the same files
    assert _written(one) == _written(two) >= {f"models/{ARCH}/model.pt", f"metrics/train/{ARCH}.json",
                                               f"metrics/curves/train_{ARCH}.csv"}
    m1 = json.loads((one / f"metrics/train/{ARCH}.json").read_text())
    m2 = json.loads((two / f"metrics/train/{ARCH}.json").read_text())
    # tolerance 1e-5 relative (measured: 1e-7): the same updates up to float rounding (a gradient averaged over two
    # halves instead of summed at once), amplified by Adam over 12 steps
    assert m2["best_val_loss"] == pytest.approx(m1["best_val_loss"], rel=1e-5)
    assert (m1["best_epoch"], m1["epochs_run"]) == (m2["best_epoch"], m2["epochs_run"])
    c1 = (one / f"metrics/curves/train_{ARCH}.csv").read_text().splitlines()
    c2 = (two / f"metrics/curves/train_{ARCH}.csv").read_text().splitlines()
    assert c1[0] == c2[0] and len(c1) == len(c2) == 4
    for a, b in zip(c1[1:], c2[1:]):
        row1 = dict(zip(c1[0].split(","), map(float, a.split(","))))
        row2 = dict(zip(c2[0].split(","), map(float, b.split(","))))
        for key in ("train_loss", "val_loss", "train_mse", "val_mse"):
            assert row2[key] == pytest.approx(row1[key], rel=1e-5), key
    s1 = torch.load(one / f"models/{ARCH}/model.pt", weights_only=True)["state_dict"]
    s2 = torch.load(two / f"models/{ARCH}/model.pt", weights_only=True)["state_dict"]
    assert s1.keys() == s2.keys()
    for key in s1:
        torch.testing.assert_close(s2[key], s1[key], rtol=1e-5, atol=1e-6)


CROP_WORKER = '''
import sys, torch
sys.path.insert(0, {tests!r})
from aerestore import distributed
from test_distributed import crop_run
distributed.init("cpu")
result, state = crop_run()
if distributed.is_main():
    torch.save({{"history": result.history, "state": state}}, {out!r})
distributed.shutdown()
'''


def crop_run():
    """unet_ae on random crops (fit_crops): 6 steps of 6 crops, 2 evaluations."""
    from test_unet_ae import images, small

    from aerestore.tracks.images.train import fit_crops

    torch.manual_seed(0)
    model = small()
    cfg = TrainParams(batch_size=6, lr=2e-3, crops={"size": 16, "steps": 6, "eval_every": 3})
    result = fit_crops(model, images(), images(2, seed=1), cfg, seed=3, progress=False,
                       runtime=RuntimeParams(threads=1, device="cpu"))
    return result, model.state_dict()


def test_crop_training_in_two_processes_equals_one(tmp_path):
    one, state = crop_run()
    script = tmp_path / "worker.py"
    script.write_text(CROP_WORKER.format(tests=str(Path(__file__).parent), out=str(tmp_path / "two.pt")))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "NO_ALBUMENTATIONS_UPDATE": "1"}
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2",
                           str(script)], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]
    two = torch.load(tmp_path / "two.pt", weights_only=False)
    assert [r["step"] for r in two["history"]] == [r["step"] for r in one.history] == [3, 6]
    for a, b in zip(one.history, two["history"]):
        for key in ("train_loss", "val_loss", "val_mse"):
            assert b[key] == pytest.approx(a[key], rel=1e-5), key
    for key in state:
        torch.testing.assert_close(two["state"][key], state[key], rtol=1e-5, atol=1e-6)


def test_the_machine_s_threads_are_shared_among_its_processes(monkeypatch):
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    assert distributed.process_threads(2, cores=16) == 2 and distributed.process_threads(0, cores=16) == 16
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")  # torchrun --nproc-per-node=2
    assert distributed.process_threads(2, cores=2) == 1 and distributed.process_threads(0, cores=16) == 8
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "4")
    assert distributed.process_threads(2, cores=2) == 1  # never 0
