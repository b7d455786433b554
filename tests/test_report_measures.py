"""The claims report's extra measures (aerestore.studies.measures) and the claims they serve
(21: the training loss's fall, 22: interpolations, 23: one distortion vs all three)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from aerestore import explore as X
from aerestore.studies import claims as C
from aerestore.studies import measures as M
from aerestore.studies import runner as RN

from helpers import fit_to, photo_images, tiny_model


def test_train_loss_drop_reads_the_first_and_last_epoch(tmp_path):
    curve = tmp_path / "train.csv"
    curve.write_text("epoch,lr,train_loss,val_loss\n1,0.001,2.0,1.5\n2,0.001,1.0,1.0\n3,0.001,0.5,0.9\n")
    assert M.train_loss_drop(curve) == pytest.approx(75.0)  # (2.0 - 0.5) / 2.0
    curve.write_text("epoch,lr,train_loss,val_loss\n1,0.001,2.0,1.5\n")
    assert math.isnan(M.train_loss_drop(curve))  # one epoch: no fall to measure


def test_interpolation_departure_is_zero_for_a_cross_fade_and_grows_with_a_detour(monkeypatch):
    rng = np.random.default_rng(0)
    images = rng.uniform(0, 1, (4, 8, 8, 3)).astype(np.float32)
    a = torch.from_numpy(images[:2].transpose(0, 3, 1, 2)).double()
    b = torch.from_numpy(images[2:].transpose(0, 3, 1, 2)).double()
    ts = torch.linspace(0, 1, 5, dtype=torch.float64).view(1, 5, 1, 1, 1)
    fade = (1 - ts) * a[:, None] + ts * b[:, None]
    bump = torch.zeros_like(fade)
    bump[:, 2] = 0.1  # the mid frame leaves the cross-fade by 0.1 everywhere

    def fake(frames):
        monkeypatch.setattr(X, "LatentCodec", lambda model, overlap=0: None)
        monkeypatch.setattr(X, "interpolate", lambda codec, x, y, steps: frames.float())

    fake(fade)
    np.testing.assert_allclose(M.interpolation_departure(None, 0, images), 0.0, atol=1e-6)
    fake(fade + bump)
    ends = (b - a).pow(2).flatten(1).mean(1).sqrt().numpy()
    np.testing.assert_allclose(M.interpolation_departure(None, 0, images), 0.1 / 3 / ends, rtol=1e-5)


def test_interpolation_departure_of_a_trained_block_vae():
    from aerestore.blocks import split_blocks

    images = photo_images(4, 32, seed=1)
    model = fit_to(tiny_model("vae", block=16), split_blocks(X.to_tensor(images), 16, 4), 20)
    value = M.interpolation_departure(model, 4, images.astype(np.float32) / 255.0)
    assert value.shape == (2,) and np.isfinite(value).all() and (value > 0).all()


def _cross_inputs(clean, ops, seed):
    """The cross rows' inputs as :func:`aerestore.studies.runner.cross_rows` draws them."""
    from aerestore.evaluate_inputs import redegrade

    degraded, masks = redegrade(clean, ops, seed, RN.CROSS_DRAW)
    return RN._float_images(degraded), masks


def test_cross_inputs_are_the_same_for_every_arm_of_a_seed():
    from aerestore.params import parse_params

    clean = photo_images(3, 16, seed=2)
    ops = parse_params(RN.arm_params(_base(), C.ARMS["ccp_1000_gaussian"], 1)).prepare.degrade
    x1, m1 = _cross_inputs(clean, ops, 1)
    x2, _ = _cross_inputs(clean, ops, 1)
    x3, _ = _cross_inputs(clean, ops, 2)
    assert x1.shape == (3, 16, 16, 3) and x1.dtype == np.float32 and m1.shape[:3] == (3, 16, 16)
    np.testing.assert_array_equal(x1, x2)  # the seed alone decides the inputs
    assert not np.array_equal(x1, x3)
    assert np.abs(x1 - clean / 255.0).mean() > 0.01  # damaged


def _base():
    from pathlib import Path

    from aerestore import params as P

    return P.load_base(Path(__file__).resolve().parents[1] / "params.yaml")


class _Halver:
    def restore_float(self, x, mode):
        assert mode == "base"
        return (0.5 + (x - 0.5) / 2).to(torch.float32)


def test_cross_rows_score_the_same_fresh_inputs_for_the_specialist_and_the_all_three_network():
    clean = photo_images(4, 16, seed=3)
    specialist, combined = C.ARMS["ccp_1000_coarse"], C.ARMS["ccp_1000_distorted"]
    assert specialist.rows[-1] == "base@coarse" and set(combined.cross) == set(C.EVAL_DAMAGE)
    p_spec, p_comb = (RN.arm_params(_base(), arm, 4) for arm in (specialist, combined))
    a = RN.cross_rows(_Halver(), specialist, p_spec, clean)
    b = RN.cross_rows(_Halver(), combined, p_comb, clean)
    assert set(a) == {"base@coarse"} and set(b) == {f"base@{d}" for d in C.EVAL_DAMAGE}
    # the same restorer on the same inputs: the same scores, whatever the arm trained on
    np.testing.assert_array_equal(a["base@coarse"]["mse"], b["base@coarse"]["mse"])
    from aerestore.params import parse_params

    x, masks = _cross_inputs(clean, parse_params(p_spec).prepare.degrade, 4)
    expect = RN.image_measures((0.5 + (x - 0.5) / 2).astype(np.float64), clean, masks)["mse"]
    np.testing.assert_allclose(a["base@coarse"]["mse"], expect, rtol=1e-5)
    # measure_rows leaves the cross rows to cross_rows
    rows = RN.measure_rows(_Halver(), specialist, x, clean, masks)
    assert set(rows) == {"input", "base"}


def test_claim_23_compares_each_specialist_with_the_all_three_network_on_its_own_damage():
    (claim,) = C.select_claims([23])
    assert len(claim.measures) == len(C.EVAL_DAMAGE)
    for m, damage in zip(claim.measures, C.EVAL_DAMAGE):
        (w1, a1, r1), (w2, a2, r2) = m.terms
        assert (w1, a1, w2, a2) == (1.0, "ccp_1000_distorted", -1.0, f"ccp_1000_{damage}")
        assert r1 == r2 == f"base@{damage}"  # both on the same freshly degraded inputs
        assert m.kind == "none" and m.size == C.ALL_THREE_MARGIN and m.metric == "mse"
        # the specialist trained on exactly the damage it is tested on; the other on all three
        spec = RN.arm_params(_base(), C.ARMS[a2], 1)["prepare"]["degrade"]
        comb = RN.arm_params(_base(), C.ARMS[a1], 1)["prepare"]["degrade"]
        assert [d["op"] for d in spec] == [C.EVAL_DAMAGE[damage][0]["op"]]
        assert [d["op"] for d in comb] == [d["op"] for d in C.ANIMAL_DISTORTIONS]
        same = {k: v for k, v in RN.arm_params(_base(), C.ARMS[a2], 1).items() if k not in ("prepare",)}
        assert same == {k: v for k, v in RN.arm_params(_base(), C.ARMS[a1], 1).items() if k not in ("prepare",)}


def test_claims_21_and_22_read_the_new_measures():
    c21, c22 = C.select_claims([21, 22])
    assert c21.measures[0].metric == "train_loss_drop" and c21.measures[0].sign == -1
    assert c21.arms == ["resnet_vae", "conv_ae"]
    assert c22.measures[0].metric == "interpolation" and c22.measures[0].sign == +1
    assert all(C.ARMS[a].interpolation for a in c22.arms)
    # the interpolation arms differ in their latent size only
    p8, p256 = (RN.arm_params(_base(), C.ARMS[a], 1) for a in c22.arms)
    assert p8["arch"]["vae"]["latent"] == 8 and p256["arch"]["vae"]["latent"] == 256
    p8["arch"]["vae"]["latent"] = 256
    assert p8 == p256


def test_claim_24_arms_differ_in_their_task_only():
    (claim,) = C.select_claims([24])
    assert [m.terms[1][1] for m in claim.measures] == ["vae_lfw_recon", "vae_lfw_recon"]
    params = {task: RN.arm_params(_base(), C.ARMS[f"vae_lfw_{task}"], 1) for task in C.LFW_TASKS}
    assert params["recon"]["prepare"]["degrade"] == []
    assert [d["op"] for d in params["denoise"]["prepare"]["degrade"]] == ["gaussian_noise"]
    assert [d["op"] for d in params["colourise"]["prepare"]["degrade"]] == ["grayscale"]
    # everything else equal: the same network, loss, budget and images
    rest = [{k: v for k, v in p.items() if k != "prepare"} for p in params.values()]
    assert rest[0] == rest[1] == rest[2]
    assert rest[0]["arch"]["vae_lfw"]["latent"] == 1024 and rest[0]["data"]["image_size"] == 32


def test_the_report_counts_the_machines_its_runs_trained_on():
    from aerestore.studies import report as RP

    results = {("a", 1): {"machine": "Intel Xeon (AVX512)"}, ("a", 2): {"machine": "AMD EPYC (AVX512)"},
               ("b", 1): {"machine": "Intel Xeon (AVX512)"}, ("b", 2): {}}
    assert RP.run_machines(results) == {"AMD EPYC (AVX512)": 1, "Intel Xeon (AVX512)": 2, "not recorded": 1}


def test_changing_how_cross_inputs_are_drawn_reruns_only_the_cross_arms(monkeypatch):
    def key(name):
        return RN.run_key(RN.arm_params(_base(), C.ARMS[name], 1), C.ARMS[name], "code")

    before = {name: key(name) for name in ("ccp_1000_coarse", "ccp_1000")}
    monkeypatch.setattr(RN, "CROSS_INPUTS", "another draw")
    assert key("ccp_1000_coarse") != before["ccp_1000_coarse"]
    assert key("ccp_1000") == before["ccp_1000"]
