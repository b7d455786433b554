"""Study presets (presets/*.yaml, aerestore.studies.presets, `aerestore preset`)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml

from aerestore.params import ParamsError, load_base, load_params
from aerestore.studies import presets as SP

REPO = Path(__file__).resolve().parents[1]
PRESETS = sorted((REPO / "presets").glob("*.yaml"))
BASE = load_base(REPO / "params.yaml")


def test_the_issue_settings_have_presets():
    names = {p.stem for p in PRESETS}
    assert {"celeba-mnist-blocks", "sharpness-mnist-vae", "sharpness-mnist-vae-gan", "lfw-denoise",
            "lfw-colourise", "celeba-256-noise", "animal-noise", "animal-dropout", "animal-saltpepper",
            "animal-dropout-noise", "animal-dropout-saltpepper", "animal-noise-saltpepper",
            "animal-all", "animal-fcn", "blur-chain"} <= names


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
    assert "train.loss.sharpness_weight=1.0" in overrides
    base = {"arch": {"vae_gan": {"model": {}}}}
    assert "++arch.vae_gan.model.width=1.0" in SP.set_params(preset, base)


def test_bad_preset_files_name_the_problem(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"description": "x", "study": "y", "data": "z", "params": {}, "extra": 1}))
    with pytest.raises(ValueError, match=r"bad.yaml.*unknown key.*extra.*missing.*sample"):
        SP.load_preset(bad)
    bad.write_text(yaml.safe_dump({"description": "x", "study": "y", "data": "z",
                                   "params": {"train": {"blocks": {"epochs": -1}}}, "sample": {}}))
    with pytest.raises(ParamsError, match=r"(?s)bad.yaml.*train.blocks.epochs"):
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
    # a second run of a preset (its control) under a name of its own
    assert main(["preset", "blur-chain", "-n", "blur-chain-vae", "-S", "explore.chain_trained_on=vae"]) == 0
    line = capsys.readouterr().out.strip()
    assert line.startswith("dvc exp run -n blur-chain-vae -S ") and line.endswith("-S explore.chain_trained_on=vae")


def test_extra_overrides_and_sweeps():
    preset = SP.load_preset(REPO / "presets" / "sharpness-mnist-vae.yaml")
    one = SP.dvc_command(preset, BASE, extra=["train.loss.sharpness_weight=0"])
    assert one[:5] == ["dvc", "exp", "run", "-n", "sharpness-mnist-vae"]
    assert one[-2:] == ["-S", "train.loss.sharpness_weight=0"]  # last: it wins over the preset's 1.0
    sweep = SP.dvc_command(preset, BASE, queue=True, extra=["seed=1,2,3"])
    assert sweep[:4] == ["dvc", "exp", "run", "--queue"] and "-n" not in sweep
    assert SP.is_sweep("seed=1,2,3") and not SP.is_sweep("architectures=[a,b]")
    assert not SP.is_sweep('data.path="a,b"')



# ------------------------------------------------------- each preset against its study's text
STUDIES = Path("/work/shared/studies")
BOTTLENECK, CELEBA = "004_d67dddc4407ba9e7.txt", "001_c49bd315ba67f4a2.txt"
BLUR = "000_2feaf3f72c4d8cc3.txt"


def said(study: str, words: str) -> str:
    r"""``words``, quoted from the study: checked against its text where the texts are at hand
    (/work/shared/studies; whitespace and ``\_`` normalised), so a quote cannot drift."""
    path = STUDIES / study
    if path.is_file():
        text = " ".join(path.read_text().replace("\\_", "_").split())
        assert " ".join(words.split()) in text, f"not in {study}: {words!r}"
    return words


def full(name: str):
    return SP.resolve(SP.find_preset(name, REPO / "presets"), BASE)


# Table 2 of the bottleneck study: the distortion(s) of each animal preset and its test error
TABLE2 = {
    "animal-dropout": ("Coarse", "0.00765", ["coarse_dropout"]),
    "animal-noise": ("Gaussian", "0.00673", ["gaussian_noise"]),
    "animal-saltpepper": ("Salt and Pepper", "0.00676", ["salt_pepper"]),
    "animal-dropout-noise": ("Coarse + Gaussian", "0.00738", ["coarse_dropout", "gaussian_noise"]),
    "animal-dropout-saltpepper": ("Coarse + Salt and Pepper", "0.00729", ["coarse_dropout", "salt_pepper"]),
    "animal-noise-saltpepper": ("Gaussian + Salt and Pepper", "0.00626", ["gaussian_noise", "salt_pepper"]),
    "animal-all": ("Coarse + Gaussian + Salt and Pepper", "0.00668",
                   ["coarse_dropout", "gaussian_noise", "salt_pepper"]),
}


def check_animal_distortions(params) -> None:
    """The study's distortions, made with albumentations (004, 1: "we added controlled
    distortions using the Albumentations [1] library")."""
    said(BOTTLENECK, "we added controlled distortions using the Albumentations [1] library")
    said(BOTTLENECK, "Random cutout/occlusion of the image with three 12x12 black squares")
    said(BOTTLENECK, "Channel-wise salt and pepper noise")  # tests/test_degrade.py: a hit, one channel
    for op in params.prepare.degrade:
        assert op.prob == 1.0
        if op.op == "coarse_dropout":
            assert (op.holes, op.size * params.data.image_size, op.fill) == (3, 12, 0)
        if op.op == "gaussian_noise":
            assert op.impl == "albumentations"


@pytest.mark.parametrize("name", sorted(TABLE2))
def test_animal_presets_are_the_bottleneck_studys_final_network(name):
    said(BOTTLENECK, "We used the Adam optimizer with default parameters, i.e. 0.001 learning rate")
    said(BOTTLENECK, "We chose to minimize the Mean Squared Error (MSE) as a loss function.")
    said(BOTTLENECK, "with a bottleneck latent dimension of 1000")
    said(BOTTLENECK, "We trained the model using the configuration described in 2.2 for a maximum of 50 "
                     "epochs with early stopping, setting the patience to 3 epochs.")
    row, error, ops = TABLE2[name]
    said(BOTTLENECK, f"| {row} | {error} |")
    preset = SP.find_preset(name, REPO / "presets")
    assert error in preset.description
    p = full(name)
    t = p.train_for("ccp_ae")
    assert p.architectures == ["ccp_ae"] and p.latent_for("ccp_ae") == 1000
    assert (t.lr, t.blocks.lr_decay) == (0.001, 1.0)  # Adam's default lr, no schedule (the FCN's only)
    assert (t.blocks.epochs, t.blocks.patience) == (50, 3)
    assert t.loss.recon == "mse" and t.loss.damage_weight == 0 and t.loss.l1 == t.loss.l2 == 0
    assert (p.data.image_size, p.blocks.size, p.blocks.overlap) == (64, 64, 0)  # whole 64 px images
    assert sorted(op.op for op in p.prepare.degrade) == ops
    check_animal_distortions(p)


def test_animal_fcn_preset_is_the_studys_fully_convolutional_run():
    said(BOTTLENECK, "the number of filters in the encoder was reduced to 32, 48, 64, thus leading to a "
                     "latent representation of 4096 values")
    said(BOTTLENECK, "introducing exponential learning rate scheduling and increasing the patience in the "
                     "early stopping, this network is able to achieve a validation error of 0.0037 over 50 "
                     "epochs on images with multiple perturbations")
    p = full("animal-fcn")
    t = p.train_for("fcn_ae")
    dense = full("animal-all").train_for("ccp_ae")
    assert p.architectures == ["fcn_ae"] and p.latent_for("fcn_ae") == 4096  # 8 x 8 x 64 at 64 px
    assert (t.blocks.epochs, t.lr, t.loss.recon, t.loss.damage_weight) == (50, 0.001, "mse", 0)
    assert t.blocks.lr_decay < 1.0  # exponential: lr * lr_decay ** epoch
    assert t.blocks.patience > dense.blocks.patience  # increased
    assert (t.blocks.lr_decay, t.blocks.patience) == (0.9, 10)  # our numbers where the text gives none (README)
    assert (p.data.image_size, p.blocks.size, p.blocks.overlap) == (64, 64, 0)
    assert sorted(op.op for op in p.prepare.degrade) == TABLE2["animal-all"][2]  # multiple perturbations
    check_animal_distortions(p)
    assert "0.0037" in SP.find_preset("animal-fcn", REPO / "presets").description


STUDY_LR = ("An encoder was trained with the training set with decreasing learning_rate (start from 0.001 "
            "and decrease exponentially $0.9^n$ ), epochs= 100, and batch_size= 128.")
TWO_CLUSTERS = "the function was used to generate two clusters from points in the latent space"


def test_celeba_preset_is_the_block_studys_setting(tmp_path):
    from dvc.utils.hydra import apply_overrides

    said(CELEBA, STUDY_LR)
    said(CELEBA, TWO_CLUSTERS)
    said(CELEBA, "The training set had 225 images, and the validation set had 75 images.")
    said(CELEBA, r"divided into $18 \times 18 px$ blocks, with 4px overlap")
    preset = SP.find_preset("celeba-256-noise", REPO / "presets")
    p = full("celeba-256-noise")
    t = p.train_for("conv_ae")
    assert (p.cluster.method, p.cluster.k) == ("soft_kmeans", 2)
    assert (t.lr, t.blocks.lr_decay, t.batch_size) == (0.001, 0.9, 128)
    assert t.loss.pixel_kl == 1.0 and t.loss.recon == "mse" and t.loss.damage_weight == 0
    assert (p.blocks.size, p.blocks.overlap) == (18, 4)
    n = p.data.limit
    assert (round(n * p.data.split.train), round(n * p.data.split.val)) == (225, 75)
    # scaled: 2 passes over every training block, said in the description; no early stopping
    assert (t.blocks.epochs, t.blocks.per_epoch, t.blocks.patience) == (2, 0, 0)
    assert "2 epochs" in preset.description and "train.blocks.epochs=100" in preset.description
    # the study's 100 epochs are one override away, through DVC's own -S code
    target = tmp_path / "params.yaml"
    shutil.copy(REPO / "params.yaml", target)
    cmd = SP.dvc_command(preset, BASE, extra=["train.blocks.epochs=100"])
    apply_overrides(target, [cmd[i + 1] for i, c in enumerate(cmd) if c == "-S"])
    study = load_params(target)
    assert study.train_for("conv_ae").blocks.epochs == 100
    assert study.model_copy(update={"train": p.train}) == p  # and nothing else moved


def test_celeba_mnist_preset_clusters_as_the_block_study():
    said(CELEBA, TWO_CLUSTERS)
    said(CELEBA, r"in the training set was then divided into $14 \times 14 px$ blocks.")
    p = full("celeba-mnist-blocks")
    assert (p.cluster.method, p.cluster.k) == ("soft_kmeans", 2)
    assert (p.data.image_size, p.blocks.size, p.prepare.channels) == (28, 14, 1)
    assert [op.op for op in p.prepare.degrade] == ["bilateral"]


def test_blur_chain_preset_is_the_blur_studys_chain():
    """The VAE (256 latent variables) -> AE Version 2 chain, the AE trained to reconstruct the
    clean images and run on the VAE's output several times."""
    said(BLUR, "training a standard autoencoder to only reconstruct images from the dataset")
    said(BLUR, "the previously used VAE architecture (256 latent variables) and the AE version 2. Images "
               "were first run though VAE, then output of VAE becomes input to AE.")
    said(BLUR, "Background color change seems to get worse as it's run through the ae multiple times.")
    p = full("blur-chain")
    assert p.architectures == ["vae_lfw"] and p.latent_for("vae_lfw") == 256
    assert p.explore.architectures == ["vae_lfw"]
    assert (p.explore.chain, p.explore.chain_trained_on) == ("conv_ae_v2", "clean")
    assert p.explore.chain_passes > 1
    assert p.prepare.degrade == [] and (p.blocks.size, p.blocks.overlap) == (p.data.image_size, 0)  # whole images
    said(BLUR, "input_1 (InputLayer)         [(None, 128, 128, 3)]     0")
    preset = SP.find_preset("blur-chain", REPO / "presets")  # scaled to 64 px; the study's 128 one override away
    assert p.data.image_size == 64 and "-S data.image_size=128 -S blocks.size=128" in preset.description
