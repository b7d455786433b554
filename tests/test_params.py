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
    for section in ("data", "prepare", "blocks", "runtime", "train", "cluster", "decoders", "evaluate", "mlflow"):
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
        ({"arch": {"vae": {"train": {"loss": {"beta": -1}}}}}, "arch.vae.train.loss.beta", "-1"),
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
        ({"train": {"crops": {"fresh_damage": False, "float_damage": True}}}, "train.crops", "needs fresh_damage"),
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
    raw["train"]["blocks"]["epochs"] = "3"  # a string is not silently an int
    with pytest.raises(ParamsError, match="train.blocks.epochs"):
        parse_params(raw)


def test_arch_overrides_resolve():
    raw = repo_params()
    raw["arch"]["vae"] = {"latent": 12, "model": {}, "train": {"blocks": {"epochs": 2}, "lr": 0.01}}
    p = parse_params(raw)
    assert p.latent_for("vae") == 12
    assert p.latent_for("conv_ae") == raw["latent"]
    assert p.train_for("vae").blocks.epochs == 2 and p.train_for("vae").lr == 0.01
    assert p.train_for("conv_ae").blocks.epochs == raw["train"]["blocks"]["epochs"]
    # merged key by key at every depth: the rest of train.blocks stays params.yaml's
    assert p.train_for("vae").blocks.model_copy(update={"epochs": raw["train"]["blocks"]["epochs"]}) == p.train.blocks
    assert p.train_for("vae").loss == p.train.loss and p.train_for("vae").crops == p.train.crops


def test_missing_file_and_bad_yaml(tmp_path):
    with pytest.raises(ParamsError, match="not found"):
        load_params(tmp_path / "params.yaml")
    (tmp_path / "params.yaml").write_text("latent: [1, 2\n")
    with pytest.raises(ParamsError, match="not valid YAML"):
        load_params(tmp_path / "params.yaml")


def test_flatten():
    assert flatten({"a": {"b": 1, "c": {"d": [1, 2]}}, "e": {}}) == {"a.b": 1, "a.c.d": [1, 2], "e": {}}


@pytest.mark.parametrize("where, old, new", [
    ("train", "steps", "train.crops.steps"),
    ("train", "crop", "train.crops.size"),
    ("train", "blocks_per_epoch", "train.blocks.per_epoch"),
    ("train", "epochs", "train.blocks.epochs"),
    ("train", "beta", "train.loss.beta"),
    ("train", "damage_weight", "train.loss.damage_weight"),
    ("train", "threads", "runtime.threads"),
    ("train", "master_port", "runtime.master_port"),
    ("arch", "steps", "arch.unet_ae.train.crops.steps"),
    ("arch", "device", "runtime.device"),
])
def test_a_key_that_moved_names_its_new_place(where, old, new):
    from aerestore.params import MOVED

    raw = repo_params()
    section = raw["train"] if where == "train" else raw["arch"]["unet_ae"]["train"]
    section[old] = 1
    with pytest.raises(ParamsError) as err:
        parse_params(raw)
    prefix = "train" if where == "train" else "arch.unet_ae.train"
    assert f"{prefix}.{old} moved to {new}" in str(err.value), str(err.value)
    # every moved key's new place exists in params.yaml
    for target in MOVED.values():
        assert target in flatten(repo_params()), target


def _defaults(model: type, prefix: str = ""):
    """(dotted key, default) of every field with a default, through nested sections (not
    through lists or mappings of models, whose entries params.yaml writes one by one)."""
    from pydantic import BaseModel

    for name, field in model.model_fields.items():
        key = f"{prefix}{name}"
        ann = field.annotation
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            yield from _defaults(ann, key + ".")
        elif not field.is_required():
            yield key, field.get_default(call_default_factory=True)


def test_the_schema_defaults_are_params_yaml_values():
    """params.yaml is the one source of the values: every default of the schema (what a key
    left out of a hand-written params.yaml gets, and what the tests' partial sections get)
    equals the value params.yaml writes, but for two empty collections: arch (no overrides)
    and prepare.degrade (no damage), whose params.yaml values are settings, not defaults."""
    from aerestore.params import Params

    raw = repo_params()
    found = list(_defaults(Params))
    assert len(found) > 80
    empty = {"arch": {}, "prepare.degrade": []}
    for key, default in found:
        if key in empty:
            assert default == empty[key], key
            continue
        value: object = raw
        for part in key.split("."):
            assert isinstance(value, dict) and part in value, f"{key}: has a default but is not in params.yaml"
            value = value[part]
        default = default.model_dump() if hasattr(default, "model_dump") else default
        assert value == default, f"{key}: schema default {default!r}, params.yaml {value!r}"
    assert {k for k, _ in found} >= set(empty) | {"seed", "latent", "architectures"}
