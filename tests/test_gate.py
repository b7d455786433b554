"""The learned gate (decoders.method: gate): K decoders and a gate trained end to end, a
mixture of experts, against the equal-budget control (tiny unet_ae: seconds on one thread)."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from test_unet_ae import _save, images, small

import aerestore.tracks.images.decoders as MD
import aerestore.tracks.images.gate_decoders as GD
from aerestore.artifacts import write_decoders
from aerestore.gate import Gate, balance_loss, cv_squared
from aerestore.params import ParamsError, load_params
from aerestore.restore import Restorer
from aerestore.tracks.images.restore import ConvRestorer, upsample_maps

STEPS, LR, BATCH, CROP = 3, 1e-3, 2, 16


def train(model, gate, steps=STEPS, **kw):
    return GD.train_gate_decoders(model, gate, images(), images(2, seed=1), steps=steps, lr=LR, gate_lr=1e-2,
                                  balance=kw.pop("balance", 0.01), batch_size=BATCH, crop=CROP,
                                  eval_every=kw.pop("eval_every", 1), seed=0, progress=False, **kw)


def test_balance_term_is_zero_at_perfect_balance_and_grows_with_imbalance():
    k = 3
    uniform = torch.full((4, k, 5, 5), 1 / k)
    assert float(balance_loss(uniform)) == pytest.approx(0.0, abs=1e-12)
    values = []
    for skew in (0.0, 0.5, 1.0, 2.0, 4.0):  # more and more weight on decoder 0
        logits = torch.zeros(4, k, 5, 5)
        logits[:, 0] = skew
        values.append(float(balance_loss(torch.softmax(logits, 1))))
    assert values[0] == pytest.approx(0.0, abs=1e-12) and all(b > a for a, b in zip(values, values[1:]))
    one_hot = torch.zeros(4, k, 5, 5)
    one_hot[:, 1] = 1
    assert float(balance_loss(one_hot)) == pytest.approx(k - 1)  # one decoder takes everything
    assert float(cv_squared(torch.tensor([2.0, 2.0]))) == 0.0


def test_gate_from_the_damage_head_routes_as_the_head_and_the_mixture_starts_as_the_shared_decoder():
    m = small().eval()
    x = torch.rand(2, 3, 24, 24)
    with torch.no_grad():
        f = m.features(x)
        gate = Gate.from_damage_head(m)
        assert torch.allclose(gate.logits(f.code), m.damage_logits(f.code), atol=1e-6)
        # the K decoders start as copies: any convex weights give the shared decoder's output
        maps = upsample_maps(gate(f.code, torch.Generator().manual_seed(1)), m.multiple, f.size)
        assert torch.allclose(maps.sum(1), torch.ones(2, 24, 24), atol=1e-6)
        decoders = [copy.deepcopy(m.decoder) for _ in range(gate.k)]
        mixture = sum(maps[:, j : j + 1] * d(f) for j, d in enumerate(decoders))
        assert torch.allclose(mixture, m.decoder(f), atol=1e-6)
    # before the first update the curve's mixture loss is the shared decoder's
    res = train(m, Gate.from_damage_head(m))
    assert res.histories["gate"][0]["val_loss"] == pytest.approx(res.summary["val_loss"]["shared"], rel=1e-5)


def test_gate_and_decoders_train_and_noisy_gating_breaks_the_symmetry():
    m = small().eval()
    shared = copy.deepcopy(m.decoder.state_dict())
    gate = Gate(int(m.latent_dim), 3)  # zero weights: uniform routing, only the noise tells decoders apart
    res = train(m, gate, steps=8)
    assert all(torch.equal(v, shared[key]) for key, v in m.decoder.state_dict().items())  # trained copies only
    assert all(not p.requires_grad for p in m.parameters())  # the encoder (and shared decoder) frozen
    assert res.gate is gate and any(float(p.abs().sum()) > 0 for p in gate.parameters())
    w = [torch.cat([p.flatten() for p in d.parameters()]) for d in res.clusters]
    assert not torch.equal(w[0], w[1]) and not torch.equal(w[1], w[2])  # the decoders specialised apart
    hist = res.histories["gate"]
    assert [h["step"] for h in hist] == [3 * s for s in range(9)]  # decoder updates: K per step
    assert set(hist[1]) == {"step", "train_loss", "val_loss", "balance", "val_ami"}
    assert all(np.isfinite(h["train_loss"]) and h["balance"] >= 0 for h in hist[1:])
    assert hist[-1]["val_loss"] < hist[0]["val_loss"]  # the mixture learned
    routes = res.summary["routing"]
    for split in ("train", "val"):
        rep = routes[split]
        assert sum(rep["sizes"]) == rep["locations"] > 0
        assert -1 <= rep["ami_majority_damage"] <= 1 and set(rep["by_damage"]) <= {"clean", "blur", "noise"}
        assert all({"clean_share", "blur_share", "noise_share"} <= set(row) for row in rep["clusters"])


def test_the_control_gets_the_same_crops_lr_and_batch_for_as_many_decoder_updates(monkeypatch):
    m = small().eval()
    crops, optimisers = [], []
    real_crops, real_adam = MD.sample_crops, torch.optim.Adam

    def spy_crops(data, n, crop, rng, *a, **kw):
        out = real_crops(data, n, crop, rng, *a, **kw)
        crops.append((n, crop, out[0].clone()))
        return out

    class SpyAdam(real_adam):
        def __init__(self, params, *a, **kw):
            super().__init__(params, *a, **kw)
            self.updates = 0
            optimisers.append(self)

        def step(self, *a, **kw):
            self.updates += 1
            return super().step(*a, **kw)

    monkeypatch.setattr(GD, "sample_crops", spy_crops)  # the mixture's crops
    monkeypatch.setattr(MD, "sample_crops", spy_crops)  # the control's
    monkeypatch.setattr(torch.optim, "Adam", SpyAdam)
    res = train(m, Gate.from_damage_head(m))
    k = 3
    moe, control = optimisers
    n_decoder = len(list(m.decoder.parameters()))
    # the MoE: every step updates the K decoders (lr) and the gate (its own lr)
    assert [len(g["params"]) for g in moe.param_groups] == [k * n_decoder, 2 * 2]
    assert moe.param_groups[0]["lr"] == LR and moe.updates == STEPS
    # the control: one decoder, the same lr, K x the steps, so as many decoder updates
    assert [len(g["params"]) for g in control.param_groups] == [n_decoder]
    assert control.param_groups[0]["lr"] == LR and control.updates == k * STEPS
    assert res.summary["updates"] == {"clusters": k * STEPS, "control": k * STEPS}
    assert res.histories["gate"][-1]["step"] == res.histories["control"][-1]["step"] == k * STEPS
    # the same batch size, crop size and crop stream: the control's first batches are the MoE's
    assert len(crops) == STEPS + k * STEPS and {(n, c) for n, c, _ in crops} == {(BATCH, CROP)}
    assert all(torch.equal(crops[i][2], crops[STEPS + i][2]) for i in range(STEPS))


def test_saved_gate_is_loaded_and_routes_the_restorer(tmp_path):
    m = small().eval()
    _save(tmp_path, m, images())  # damage_head clusters, as the default
    r0 = Restorer.load(tmp_path, decoders=False)
    res = train(r0.model, Gate.from_damage_head(r0.model), steps=2)
    with torch.no_grad():
        res.gate.w_gate.bias.copy_(torch.tensor([0.0, 9.0, 0.0]))  # a gate unlike the damage head
    write_decoders(tmp_path / "decoders.pt", r0.model, res)
    x = torch.rand(2, 3, 37, 53)
    with torch.no_grad():
        code = m.encode(x)
    outs = {}
    for routing in ("soft", "hard"):
        r = Restorer.load(tmp_path, routing=routing)
        assert isinstance(r, ConvRestorer) and r.gate is not None
        assert all(torch.equal(a, b) for a, b in zip(r.gate.state_dict().values(), res.gate.state_dict().values()))
        with torch.no_grad():
            assert torch.allclose(r.route_maps(code), res.gate(code))
            assert not torch.allclose(r.route_maps(code), torch.softmax(m.damage_logits(code), 1))
        outs[routing] = r.restore_float(x, "multi")
        assert outs[routing].shape == x.shape and torch.equal(outs[routing], r.restore_float(x, "multi"))
        with torch.no_grad():  # the hard route: every pixel through its argmax decoder (here route 1)
            if routing == "hard":
                assert torch.allclose(outs[routing], res.clusters[1](m.features(x)).clamp(0, 1), atol=1e-6)
    assert not torch.equal(outs["soft"], outs["hard"])
    state = torch.load(tmp_path / "decoders.pt", weights_only=True)
    state["gate"]["version"] = 99
    torch.save(state, tmp_path / "decoders.pt")
    with pytest.raises(ValueError, match="decoders.pt: gate state of version 99"):
        Restorer.load(tmp_path)


def test_gate_param_is_validated(tmp_path):
    import yaml

    base = yaml.safe_load(open("params.yaml"))

    def load(**decoders):
        p = copy.deepcopy(base)
        p["decoders"].update(decoders)
        arch = decoders.pop("architectures", None)
        p["decoders"].pop("architectures", None)
        if arch:
            p["architectures"] = arch
        (tmp_path / "params.yaml").write_text(yaml.safe_dump(p))
        return load_params(tmp_path / "params.yaml")

    assert load(method="gate", architectures=["unet_ae"]).decoders.method == "gate"
    with pytest.raises(ParamsError, match="decoders.method 'gate'.*conv_ae"):
        load(method="gate", architectures=["conv_ae", "unet_ae"])
    with pytest.raises(ParamsError, match="decoders.balance"):
        load(balance=-1.0)
    with pytest.raises(ParamsError, match="decoders.method"):
        load(method="router")
