"""Study presets (presets/*.yaml, aerestore.study_presets, `aerestore preset`)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml

from aerestore import study_presets as SP
from aerestore.params import ParamsError, load_params
from aerestore.report import load_base

REPO = Path(__file__).resolve().parents[1]
PRESETS = sorted((REPO / "presets").glob("*.yaml"))
BASE = load_base(REPO / "params.yaml")


def test_the_issue_settings_have_presets():
    names = {p.stem for p in PRESETS}
    assert {"celeba-mnist-blocks", "sharpness-mnist-vae", "sharpness-mnist-vae-gan", "lfw-denoise",
            "lfw-colourise", "celeba-256-noise", "animal-noise", "animal-dropout", "animal-saltpepper",
            "animal-dropout-noise", "animal-dropout-saltpepper", "animal-noise-saltpepper",
            "animal-all"} <= names


@pytest.mark.parametrize("path", PRESETS, ids=[p.stem for p in PRESETS])
def test_every_preset_validates_full_and_sample(path):
    preset = SP.load_preset(path)
    full = SP.resolve(preset, BASE)
    sample = SP.resolve(preset, BASE, sample=True)
    assert sample.data.source == "sample"  # every preset also runs offline
    assert full.data.source != "sample"  # and names real data at full scale
    assert preset.description and preset.study and preset.data


@pytest.mark.parametrize("path", PRESETS, ids=[p.stem for p in PRESETS])
def test_dvc_applies_the_overrides_to_exactly_the_preset(path, tmp_path):
    """DVC's own Hydra code (what `dvc exp run -S` calls) turns params.yaml into the preset."""
    from dvc.utils.hydra import apply_overrides

    preset = SP.load_preset(path)
    for sample in (False, True):
        target = tmp_path / f"params_{sample}.yaml"
        shutil.copy(REPO / "params.yaml", target)
        apply_overrides(target, SP.set_params(preset, BASE, sample))
        assert load_params(target) == SP.resolve(preset, BASE, sample)


def test_hydra_values():
    assert SP.hydra_value(None) == "null"
    assert SP.hydra_value(True) == "true"
    assert SP.hydra_value(0.25) == "0.25"
    assert SP.hydra_value("soft_kmeans") == "soft_kmeans"
    assert SP.hydra_value("a b") == '"a b"'
    assert SP.hydra_value("true") == '"true"'
    assert SP.hydra_value([1, "x"]) == "[1,x]"
    assert SP.hydra_value({"op": "grayscale", "prob": 1.0}) == "{op:grayscale,prob:1.0}"


def test_new_keys_are_added_with_plus_plus():
    preset = SP.load_preset(REPO / "presets" / "sharpness-mnist-vae-gan.yaml")
    overrides = SP.set_params(preset, BASE)
    assert "arch.vae_gan.model.width=1.0" in overrides  # exists in params.yaml
    assert "train.sharpness_weight=1.0" in overrides
    base = {"arch": {"vae_gan": {"model": {}}}}
    assert "++arch.vae_gan.model.width=1.0" in SP.set_params(preset, base)


def test_bad_preset_files_name_the_problem(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"description": "x", "study": "y", "data": "z", "params": {}, "extra": 1}))
    with pytest.raises(ValueError, match=r"bad.yaml.*unknown key.*extra.*missing.*sample"):
        SP.load_preset(bad)
    bad.write_text(yaml.safe_dump({"description": "x", "study": "y", "data": "z",
                                   "params": {"train": {"epochs": -1}}, "sample": {}}))
    with pytest.raises(ParamsError, match=r"(?s)bad.yaml.*train.epochs"):
        SP.resolve(SP.load_preset(bad), BASE)
    with pytest.raises(ValueError, match="no preset 'nope'.*known: .*lfw-colourise"):
        SP.find_preset("nope", REPO / "presets")


def test_cli_lists_and_prints_the_command(capsys, monkeypatch):
    from aerestore.cli import main

    monkeypatch.chdir(REPO)
    assert main(["preset"]) == 0
    listing = capsys.readouterr().out
    assert listing.count("\n") == len(PRESETS) and "lfw-denoise" in listing
    assert main(["preset", "lfw-colourise", "--sample"]) == 0
    line = capsys.readouterr().out.strip()
    assert line.startswith("dvc exp run -n lfw-colourise-sample -S ")
    assert "'prepare.degrade=[{op:grayscale,prob:1.0}]'" in line and "data.source=sample" in line
    assert main(["preset", "nope"]) == 2


def test_extra_overrides_and_sweeps():
    preset = SP.load_preset(REPO / "presets" / "sharpness-mnist-vae.yaml")
    one = SP.dvc_command(preset, BASE, extra=["train.sharpness_weight=0"])
    assert one[:5] == ["dvc", "exp", "run", "-n", "sharpness-mnist-vae"]
    assert one[-2:] == ["-S", "train.sharpness_weight=0"]  # last: it wins over the preset's 1.0
    sweep = SP.dvc_command(preset, BASE, queue=True, extra=["seed=1,2,3"])
    assert sweep[:4] == ["dvc", "exp", "run", "--queue"] and "-n" not in sweep
    assert SP.is_sweep("seed=1,2,3") and not SP.is_sweep("architectures=[a,b]")
    assert not SP.is_sweep('data.path="a,b"')
