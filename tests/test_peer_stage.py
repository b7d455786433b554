"""The deep peers in the pipeline (``peers``, ``peer@<name>``, evaluate's rows ``peer: <name>``):
a peer trains with exactly unet_ae's settings, and evaluate scores it on the same test images
as every other row."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from aerestore import evaluate as E
from aerestore import metrics as M
from aerestore.params import PEER_REFERENCE, ParamsError, deep_update, load_base, parse_params

from helpers import degrade, photo_images, save_tiny_restorer

REPO = Path(__file__).resolve().parents[1]


def _params(**override):
    return parse_params(deep_update(copy.deepcopy(load_base(REPO / "params.yaml")), override))


def test_a_peer_trains_with_unet_ae_settings_and_budget():
    params = _params(peers={"names": ["nafnet", "dncnn"]})
    ref = params.train_for(PEER_REFERENCE)
    for name in ("nafnet", "dncnn"):
        # batch, crops, steps, schedule, fresh damage, loss: unet_ae's; the lr its own
        own = params.peer_train(name)
        assert own.model_dump() == deep_update(ref.model_dump(), {"lr": own.lr})
        assert own.lr == params.arch_params(name).train["lr"]
        # what a rigged comparison would hand the peer: the train section without unet_ae's
        # settings (batch 128, 2000 steps against 16, 4000)
        assert own.crops.steps != params.train.crops.steps and own.batch_size != params.train.batch_size
    assert ref.crops.steps == 4000 and ref.batch_size == 16  # params.yaml's unet_ae
    # peers.steps: only the number of steps differs (the equal-CPU-seconds budget)
    short = _params(peers={"names": ["nafnet"], "steps": 1500}).peer_train("nafnet")
    assert short.crops.steps == 1500
    assert short.model_dump() == deep_update(params.peer_train("nafnet").model_dump(), {"crops": {"steps": 1500}})


def test_a_peer_learning_rate_is_its_own_and_nothing_else_is():
    """params.yaml gives each peer the rate chosen for it on validation (docs/peers.md: NAFNet
    0.002, 1.3 dB ahead of unet_ae's 0.001 there), not unet_ae's; without one, unet_ae's."""
    params = _params(peers={"names": ["nafnet"]})
    assert params.train_for(PEER_REFERENCE).lr == 0.001
    assert params.peer_train("nafnet").lr == 0.002
    bare = _params(peers={"names": ["nafnet"]}, arch={"nafnet": {"train": {}}})
    assert bare.peer_train("nafnet") == bare.train_for(PEER_REFERENCE)
    mine = _params(peers={"names": ["nafnet"], "steps": 900}, arch={"nafnet": {"train": {"lr": 0.0005}}})
    cfg = mine.peer_train("nafnet")
    assert (cfg.lr, cfg.crops.steps) == (0.0005, 900)
    assert cfg.model_dump() == deep_update(mine.train_for(PEER_REFERENCE).model_dump(),
                                           {"lr": 0.0005, "crops": {"steps": 900}})


@pytest.mark.parametrize("override, words", [
    ({"peers": {"names": ["swinir"]}}, ["peers.names", "unknown peer 'swinir'", "dncnn"]),
    ({"peers": {"names": ["nafnet", "nafnet"]}}, ["peers.names", "repeat"]),
    ({"peers": {"names": ["nafnet"], "steps": -1}}, ["peers.steps"]),
    ({"peers": {"names": ["nafnet"]}, "architectures": ["unet_ae", "nafnet"]}, ["peers.names", "also in architectures"]),
    ({"peers": {"names": ["nafnet"]}, "arch": {"nafnet": {"train": {"batch_size": 64}}}},
     ["arch.nafnet.train.batch_size", "unet_ae"]),
    ({"peers": {"names": ["nafnet"]}, "arch": {"nafnet": {"train": {"crops": {"steps": 9000}}}}},
     ["arch.nafnet.train.crops", "peers.steps"]),
    ({"peers": {"names": ["nafnet"]}, "arch": {"nafnet": {"train": {"lr": -0.1}}}}, ["arch.nafnet.train.lr", "positive"]),
    ({"peers": {"names": ["nafnet"]}, "arch": {"nafnet": {"train": {"lr": "fast"}}}}, ["arch.nafnet.train.lr", "'fast'"]),
    # a peer outside peers.names too: benchmarks/bench_peers.py --peers reads its lr
    ({"arch": {"drunet": {"train": {"lr": 0}}}}, ["arch.drunet.train.lr", "positive"]),
    ({"arch": {"drunet": {"train": {"batch_size": 8}}}}, ["arch.drunet.train.batch_size"]),
])
def test_bad_peers_params_are_refused_with_the_key(override, words):
    with pytest.raises(ParamsError) as err:
        _params(**override)
    for w in words:
        assert w in str(err.value)


def _split(root: Path, name: str, n: int, seed: int) -> None:
    clean = photo_images(n, 32, seed=seed)
    degraded, mask = degrade(clean, seed=seed)
    d = root / name
    d.mkdir(parents=True)
    for key, arr in zip(("clean", "degraded", "mask"), (clean, degraded, mask)):
        np.save(d / f"{key}.npy", arr)


def test_peer_stage_trains_and_evaluate_scores_it_as_a_row(tmp_path, monkeypatch):
    from aerestore.models import read_model
    from aerestore.pipeline.peer import run_peer
    from aerestore.pipeline.train import TrainPaths

    monkeypatch.chdir(tmp_path)  # the machine record: metrics/machine/train_dncnn.json
    prepared = tmp_path / "prepared"
    for split, n, seed in (("train", 8, 1), ("val", 4, 2), ("test", 6, 3)):
        _split(prepared, split, n, seed)
    save_tiny_restorer(tmp_path / "models" / "conv_ae")
    params = _params(architectures=["conv_ae"], data={"image_size": 32}, blocks={"size": 16, "overlap": 4},
                     runtime={"threads": 1}, mlflow={"enabled": False}, peers={"names": ["dncnn"], "steps": 3},
                     arch={"unet_ae": {"train": {"crops": {"size": 16}}}},
                     evaluate={"classical": ["tv"], "classical_grid": {}, "oracle": False, "speed_size": 0,
                               "grid_images": 2})
    paths = TrainPaths(blocks=tmp_path / "blocks", prepared=prepared, model=E.peer_path(tmp_path / "models", "dncnn") / "model.pt",
                       metrics=tmp_path / "metrics" / "peers" / "dncnn.json", curve=tmp_path / "peer_dncnn.csv")
    import aerestore.pipeline.train as PT

    runs, real = [], PT.tracked
    monkeypatch.setattr(PT, "tracked", lambda stage, p, arch: runs.append(stage) or real(stage, p, arch))
    run_peer(params, "dncnn", paths)
    assert runs == ["peer@dncnn"]  # its MLflow run is named after its own stage, not train@dncnn
    trained = json.loads(paths.metrics.read_text())
    assert trained["parameters"] == sum(p.numel() for p in read_model(paths.model).model.parameters())
    assert (tmp_path / "metrics" / "machine" / "train_dncnn.json").exists() and paths.curve.exists()

    out = tmp_path / "out"
    result, summary = E.run_evaluate(params, prepared, tmp_path / "models", out / "e.json", out / "d.json",
                                     out / "summary.md", out / "plots", progress=False)
    # the peer's row: its own network on the same degraded test images, scored as every row
    clean, degraded, mask = (np.load(prepared / "test" / f"{k}.npy") for k in ("clean", "degraded", "mask"))
    model = read_model(paths.model).model.eval()
    with torch.no_grad():
        x = torch.from_numpy(degraded.astype(np.float32) / 255).permute(0, 3, 1, 2)
        own = model.run(x).x_hat.permute(0, 2, 3, 1).numpy().astype(np.float64)
    direct = M.batch_metrics(np.clip(own, 0, 1), clean.astype(np.float64) / 255, mask)
    row = result["peers"]["dncnn"]
    assert row["psnr"] == pytest.approx(direct["psnr"].mean(), abs=1e-6)
    assert row["psnr_blur"] == pytest.approx(np.nanmean(direct["psnr_blur"]), abs=1e-6)
    assert row["megapixels_per_s"] > 0
    # compared image by image with the per-cluster restorer; on the anchor subset with a margin
    assert set(row["vs"]) == {"conv_ae.base", "conv_ae.multi"}
    for mode in ("base", "multi"):
        ours = np.array(json.loads((out / "d.json").read_text())["per_image"][f"conv_ae.{mode}"]["psnr"])
        share = np.mean((ours > direct["psnr"]) + 0.5 * (ours == direct["psnr"]))
        assert row["vs"][f"conv_ae.{mode}"]["psnr"]["share"] == pytest.approx(share)
    sub = result["anchor_subset"]
    assert sub["peers"]["dncnn"]["margin_db"] == pytest.approx(row["psnr"] - sub["best_classical"]["psnr"])
    details = json.loads((out / "d.json").read_text())
    assert details["per_image"]["peer: dncnn"]["psnr"] == pytest.approx(list(direct["psnr"]))
    for text in ("| peer: dncnn |", "conv_ae per-cluster vs peer: dncnn", "conv_ae as trained vs peer: dncnn"):
        assert text in summary
    assert (out / "plots" / "grid_peer_dncnn.png").read_bytes()[:4] == b"\x89PNG"


def test_evaluate_says_which_peer_is_missing(tmp_path):
    from aerestore.restore import Restorer

    with pytest.raises(FileNotFoundError, match=r"peers[/\\]nafnet[/\\]model.pt.*dvc repro"):
        Restorer.load(E.peer_path(tmp_path, "nafnet"))


def test_a_peer_restores_photos_with_its_one_network_in_every_mode(tmp_path):
    """``aerestore restore --model models/peers/<name>``: the peer's own network, any size
    (tiles above 512 px), every mode the same; OpenVINO refused with a clear message."""
    from aerestore.models import create_model, save_model
    from aerestore.restore import Restorer
    from aerestore.tracks.images.restore import PeerNetworkRestorer

    torch.manual_seed(0)
    model = create_model("nafnet", latent=8, block=16, channels=3)
    save_model(model, tmp_path / "nafnet" / "model.pt")
    restorer = Restorer.load(tmp_path / "nafnet", routing="soft")
    assert isinstance(restorer, PeerNetworkRestorer)
    x = torch.rand(1, 3, 40, 52)
    with torch.no_grad():
        own = model.eval().run(x).x_hat
    for mode in ("base", "single", "multi"):
        assert torch.allclose(restorer.restore_float(x, mode), own, atol=1e-5)
    # above 512 px: tiles with a 32 px margin, exact for a network that sees less than that
    # (DnCNN: 17 layers of 3 x 3, 17 px each side; NAFNet's channel attention sees the tile)
    dncnn = create_model("dncnn", latent=8, block=16, channels=3)
    save_model(dncnn, tmp_path / "dncnn" / "model.pt")
    big = torch.rand(1, 3, 530, 20)
    with torch.no_grad():
        whole = dncnn.eval().run(big).x_hat
    assert torch.allclose(Restorer.load(tmp_path / "dncnn").restore_float(big, "base"), whole, atol=1e-4)
    restorer.use_runtime("openvino")
    with pytest.raises(ValueError, match="not the peer nafnet"):
        restorer.restore_float(x, "base")


def test_summary_compares_the_peers_with_unet_ae_and_leaves_the_rest_to_the_metrics():
    from aerestore.evaluate_summary import peer_lines

    cmp_ = {k: {"share": 0.25, "p_value": 0.01} for k in ("psnr", "ssim", "psnr_blur")}
    vs = {f"{a}.{m}": cmp_ for a in ("conv_ae", "unet_ae") for m in ("base", "multi")}
    result = {"peers": {"nafnet": {"vs": vs}, "dncnn": {"vs": vs}}}
    text = "\n".join(peer_lines(result, ["conv_ae", "unet_ae"], ["blur"], ["nafnet", "dncnn"]))
    for peer in ("nafnet", "dncnn"):
        for what in ("as trained", "per-cluster"):
            assert f"| unet_ae {what} vs peer: {peer} | 25% (p=0.01)" in text
    assert "conv_ae as trained vs" not in text and "`peers.<name>.vs`" in text  # said where they are
    # without unet_ae, every network's rows
    text = "\n".join(peer_lines(result, ["conv_ae"], ["blur"], ["nafnet"]))
    assert "| conv_ae per-cluster vs peer: nafnet |" in text and "peers.<name>.vs" not in text
