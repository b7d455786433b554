"""params.yaml is typed and validated: errors name the key and the value."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from aerestore.params import ParamsError, flatten, load_params, parse_params

REPO = Path(__file__).resolve().parents[1]


def repo_params() -> dict:
    return yaml.safe_load((REPO / "params.yaml").read_text())


def test_repo_params_are_valid_and_explicit():
    raw = repo_params()
    params = load_params(REPO / "params.yaml")
    # every key of the schema is written out in params.yaml (no hidden defaults)
    assert set(flatten(params.model_dump(exclude={"arch"}))) <= set(flatten(raw)) | {
        k for k in flatten(raw) if k.startswith("prepare.degrade")
    }
    for section in ("data", "prepare", "blocks", "train", "cluster", "decoders", "evaluate", "mlflow"):
        assert set(raw[section]) == set(type(getattr(params, section)).model_fields), section
    assert isinstance(raw["latent"], int)


def test_every_registered_architecture_has_a_section():
    from aerestore.models import list_models

    raw = repo_params()
    assert set(list_models()) <= set(raw["arch"]), "adding a name to architectures needs its arch section"


@pytest.mark.parametrize(
    "change, key, value",
    [
        ({"train": {"lr": "fast"}}, "train.lr", "fast"),
        ({"latent": 0}, "latent", "0"),
        ({"blocks": {"size": 18, "overlap": 18}}, "blocks.overlap", "18"),
        ({"blocks": {"size": 18, "overlap": 30}}, "blocks.overlap", "30"),
        ({"trian": {"lr": 1}}, "trian", "unknown key"),
        ({"train": {"epocs": 3}}, "train.epocs", "unknown key"),
        ({"cluster": {"method": "dbscan"}}, "cluster.method", "dbscan"),
        ({"data": {"split": {"train": 0.9, "val": 0.2, "test": 0.1}}}, "data.split", "1.2"),
        ({"data": {"source": "url", "url": "http://x/a.tgz"}}, "data", "sha256"),
        ({"data": {"sha256": "abc"}}, "data", "abc"),
        ({"prepare": {"degrade": [{"op": "gaussian_noise", "stdev": 0.1}]}}, "prepare.degrade[0].stdev", "unknown key"),
        ({"prepare": {"degrade": [{"op": "blurr"}]}}, "prepare.degrade[0]", "blurr"),
        ({"prepare": {"degrade": [{"op": "gaussian_blur", "sigma": [3, 1]}]}}, "prepare.degrade[0].sigma", "[3, 1]"),
        ({"arch": {"vae": {"train": {"beta": -1}}}}, "arch.vae.train.beta", "-1"),
        ({"arch": {"vae": {"latent": 0}}}, "arch.vae.latent", "0"),
        ({"architectures": []}, "architectures", "empty"),
        ({"evaluate": {"routing": "nearest"}}, "evaluate.routing", "nearest"),
        ({"evaluate": {"classical_grid": {"median": {"size": [3.0]}}}}, "evaluate.classical_grid.median", "tunable"),
        ({"evaluate": {"classical_grid": {"tv": {"eps": [0.1]}}}}, "evaluate.classical_grid.tv.eps", "weight"),
        ({"evaluate": {"classical_grid": {"tv": {"weight": []}}}}, "evaluate.classical_grid.tv.weight", "[]"),
        ({"evaluate": {"classical_grid": {"wiener": {"balance": [-1.0]}}}}, "evaluate.classical_grid.wiener.balance", "-1"),
        ({"evaluate": {"classical_grid": {"richardson_lucy": {"num_iter": [2.5]}}}},
         "evaluate.classical_grid.richardson_lucy.num_iter", "2.5"),
        ({"evaluate": {"tune_images": -1}}, "evaluate.tune_images", "-1"),
        ({"cluster": {"method": "ncut_head"}}, "ncut_weight", "ncut"),
        ({"blocks": {"size": 128}}, "blocks.size", "128"),
    ],
)
def test_bad_values_name_the_key_and_value(change, key, value):
    raw = repo_params()
    for k, v in change.items():
        if isinstance(v, dict) and isinstance(raw.get(k), dict):
            raw[k] = {**raw[k], **v}
        else:
            raw[k] = v
    with pytest.raises(ParamsError) as err:
        parse_params(raw)
    msg = str(err.value)
    assert key in msg and value in msg, msg


def test_type_is_strict():
    raw = repo_params()
    raw["train"]["epochs"] = "3"  # a string is not silently an int
    with pytest.raises(ParamsError, match="train.epochs"):
        parse_params(raw)


def test_arch_overrides_resolve():
    raw = repo_params()
    raw["arch"]["vae"] = {"latent": 12, "model": {}, "train": {"epochs": 2, "lr": 0.01}}
    p = parse_params(raw)
    assert p.latent_for("vae") == 12
    assert p.latent_for("conv_ae") == raw["latent"]
    assert p.train_for("vae").epochs == 2 and p.train_for("vae").lr == 0.01
    assert p.train_for("conv_ae").epochs == raw["train"]["epochs"]


def test_missing_file_and_bad_yaml(tmp_path):
    with pytest.raises(ParamsError, match="not found"):
        load_params(tmp_path / "params.yaml")
    (tmp_path / "params.yaml").write_text("latent: [1, 2\n")
    with pytest.raises(ParamsError, match="not valid YAML"):
        load_params(tmp_path / "params.yaml")


def test_flatten():
    assert flatten({"a": {"b": 1, "c": {"d": [1, 2]}}, "e": {}}) == {"a.b": 1, "a.c.d": [1, 2], "e": {}}
