"""DVC caching, tested on the real pipeline: only what changed reruns.

One temporary copy of the repository runs `dvc repro` with tiny params; each test then
changes one thing and checks, from DVC's own output, exactly which stages ran.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from pipeline_utils import repro, run, set_params

pytestmark = pytest.mark.pipeline

ARCHS = ("conv_ae", "vae")
PER_ARCH = ("train", "cluster", "decoders")


def per_arch(*archs: str) -> set[str]:
    return {f"{s}@{a}" for s in PER_ARCH for a in archs}


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory):
    from pipeline_utils import make_repo

    repo = make_repo(tmp_path_factory.mktemp("pipeline") / "repo")
    ran = repro(repo)
    return repo, ran


def test_first_repro_runs_every_stage_and_writes_outputs(pipeline):
    repo, ran = pipeline
    assert ran == {"download", "prepare", "blocks", "evaluate"} | per_arch(*ARCHS)
    result = json.loads((repo / "metrics/evaluate.json").read_text())
    for arch in ARCHS:
        for mode in ("single", "multi"):
            assert result[arch][mode]["psnr"] is not None
        assert (repo / f"models/{arch}/model.pt").exists()
        assert (repo / f"models/{arch}/clusters.npz").exists()
        assert (repo / f"models/{arch}/decoders.pt").exists()
    assert "degraded input" in (repo / "metrics/summary.md").read_text()
    lock = yaml.safe_load((repo / "dvc.lock").read_text())
    assert set(lock["stages"]) == ran


def test_second_repro_runs_nothing(pipeline):
    repo, _ = pipeline
    assert repro(repo) == set()
    status = run(["dvc", "status"], repo).stdout
    assert "up to date" in status


def test_exp_run_latent_reruns_models_not_data(pipeline):
    repo, _ = pipeline
    proc = run(["dvc", "exp", "run", "-S", "latent=6"], repo)
    from pipeline_utils import stages_run

    ran = stages_run(proc.stdout + proc.stderr)
    assert ran == per_arch(*ARCHS) | {"evaluate"}
    assert yaml.safe_load((repo / "params.yaml").read_text())["latent"] == 6


def test_degradation_param_reruns_from_prepare(pipeline):
    repo, _ = pipeline
    params = yaml.safe_load((repo / "params.yaml").read_text())
    degrade = params["prepare"]["degrade"]
    noise = next(op for op in degrade if op["op"] == "gaussian_noise")
    noise["std"] = 0.03
    set_params(repo, {"prepare": {"degrade": degrade}})
    ran = repro(repo)
    assert "download" not in ran
    assert {"prepare", "blocks", "evaluate"} <= ran
    assert ran <= {"prepare", "blocks", "evaluate"} | per_arch(*ARCHS)
    assert per_arch(*ARCHS) & ran == per_arch(*ARCHS)  # new blocks retrain every model


def test_one_architecture_section_reruns_only_that_architecture(pipeline):
    repo, _ = pipeline
    set_params(repo, {"arch": {"vae": {"train": {"lr": 0.002}}}})
    assert repro(repo) == per_arch("vae") | {"evaluate"}


def test_editing_evaluation_code_does_not_retrain(pipeline):
    repo, _ = pipeline
    path = repo / "src/aerestore/evaluate.py"
    path.write_text(path.read_text() + "\n# an edit\n")
    assert repro(repo) == {"evaluate"}


def test_editing_stage_code_reruns_it_and_downstream_only(pipeline):
    repo, _ = pipeline
    path = repo / "stages/cluster.py"
    path.write_text(path.read_text() + "\n# an edit\n")
    ran = repro(repo)
    assert {"cluster@conv_ae", "cluster@vae"} <= ran
    # nothing upstream; downstream only if the clusters changed (they do not: same code)
    assert ran <= {"cluster@conv_ae", "cluster@vae", "decoders@conv_ae", "decoders@vae", "evaluate"}
    assert not ran & {"download", "prepare", "blocks", "train@conv_ae", "train@vae"}


def test_editing_training_code_retrains(pipeline):
    repo, _ = pipeline
    path = repo / "src/aerestore/train.py"
    path.write_text(path.read_text() + "\n# an edit\n")
    ran = repro(repo)
    assert {"train@conv_ae", "train@vae"} <= ran
    assert not ran & {"download", "prepare", "blocks"}


def test_bad_param_stops_the_stage_and_nothing_is_lost(pipeline):
    repo, _ = pipeline
    before = (repo / "metrics/evaluate.json").read_bytes()
    model_before = (repo / "models/vae/model.pt").read_bytes()
    # run directly, the stage script refuses the param before touching any output
    set_params(repo, {"evaluate": {"routing": "nearest"}})
    proc = run(["python", "stages/evaluate.py"], repo, check=False)
    assert proc.returncode == 2
    assert "evaluate.routing" in proc.stderr and "nearest" in proc.stderr
    # through DVC: the same clear error, and the outputs (persist: true) stay in place
    proc = run(["dvc", "repro", "evaluate"], repo, check=False)
    assert proc.returncode != 0 and "evaluate.routing" in proc.stdout + proc.stderr
    assert (repo / "metrics/evaluate.json").read_bytes() == before
    set_params(repo, {"evaluate": {"routing": "hard"}, "arch": {"vae": {"train": {"lr": -1.0}}}})
    proc = run(["dvc", "repro", "train@vae"], repo, check=False)
    assert proc.returncode != 0 and "arch.vae.train.lr" in proc.stdout + proc.stderr
    assert (repo / "models/vae/model.pt").read_bytes() == model_before
    assert not list(repo.rglob(".*.tmp"))  # nothing half-written left behind
    # with the param fixed, the pipeline is up to date again: nothing was lost
    set_params(repo, {"arch": {"vae": {"train": {"lr": 0.002}}}})
    assert repro(repo) == set()


def test_dag_has_the_named_stages(pipeline):
    repo, _ = pipeline
    dag = run(["dvc", "dag", "--md"], repo).stdout
    for name in ["download", "prepare", "blocks", "evaluate", *sorted(per_arch(*ARCHS))]:
        assert name in dag
