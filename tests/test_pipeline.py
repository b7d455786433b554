"""DVC caching, tested on the real pipeline: only what changed reruns.

One temporary copy of the repository runs `dvc repro` with tiny params; each test then
changes one thing and checks, from DVC's own output, exactly which stages ran; or, where
running the whole rest of the pipeline would add nothing but minutes, which stages
`dvc status` reports out of date. Each test leaves the copy up to date for the next.
"""

from __future__ import annotations

import json
import shutil

import pytest
import yaml

from pipeline_utils import out_of_date, repro, run, set_params

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
    # the stages wrote bytecode caches into src/ (as on any machine); a copy without them
    # (a queued experiment's) is just as up to date: DVC ignores them (.dvcignore)
    caches = list((repo / "src").rglob("__pycache__"))
    assert caches
    for cache in caches:
        shutil.rmtree(cache)
    assert out_of_date(repo) == set()


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
    old_std = noise["std"]
    noise["std"] = 0.03
    set_params(repo, {"prepare": {"degrade": degrade}})
    # prepare, and the stages that read prepare.degrade themselves: train and decoders
    # (fully convolutional models draw fresh damage for their crops, train.crops.fresh_damage)
    # and evaluate (its extra damage draws and the speed image, evaluate.draws / speed_size)
    assert out_of_date(repo) == ({"prepare", "evaluate"}
                                 | {f"{s}@{a}" for s in ("train", "decoders") for a in ARCHS})
    # the data stages rerun (not download); then every stage reading the new data is
    # out of date: all of them down to evaluate (running those is the caching tests' job)
    assert repro(repo, "blocks") == {"prepare", "blocks"}
    assert out_of_date(repo) == per_arch(*ARCHS) | {"evaluate"}
    # the old value gives back the very same data: nothing downstream is out of date
    noise["std"] = old_std
    set_params(repo, {"prepare": {"degrade": degrade}})
    assert repro(repo, "blocks") == {"prepare", "blocks"}
    assert out_of_date(repo) == set()


def test_one_architecture_section_reruns_only_that_architecture(pipeline):
    """DVC's own verdict (`dvc status`): the stages that read ``arch.vae`` are out of date,
    none of conv_ae's (what follows them reruns by DVC's rules, as the tests above show)."""
    repo, _ = pipeline
    set_params(repo, {"arch": {"vae": {"train": {"lr": 0.002}}}})
    assert out_of_date(repo) == {"train@vae", "decoders@vae"}  # decoders: its train.loss.recon / crop overrides
    set_params(repo, {"arch": {"vae": {"train": {}}}})
    assert out_of_date(repo) == set()


def test_a_deep_peer_trains_alone_and_becomes_a_row_of_evaluate(pipeline):
    """``peers.names``: ``peer@<name>`` trains the peer (no architecture's stage reruns) and
    evaluate adds its row; its steps outdate it alone; taking it out outdates evaluate alone."""
    repo, _ = pipeline
    # unet_ae's settings are the peers' (crops of 16 px: the tiny images are 32 px)
    set_params(repo, {"peers": {"names": ["dncnn"], "steps": 2},
                      "arch": {"unet_ae": {"train": {"crops": {"size": 16, "steps": 2}}}}})
    assert repro(repo) == {"peer@dncnn", "evaluate"}
    result = json.loads((repo / "metrics/evaluate.json").read_text())
    assert result["peers"]["dncnn"]["psnr"] is not None and set(result["peers"]["dncnn"]["vs"]) == {
        f"{a}.{m}" for a in ARCHS for m in ("base", "multi")}
    assert "| peer: dncnn |" in (repo / "metrics/summary.md").read_text()
    assert (repo / "models/peers/dncnn/model.pt").exists() and (repo / "metrics/peers/dncnn.json").exists()
    set_params(repo, {"peers": {"steps": 3}})
    assert out_of_date(repo) == {"peer@dncnn"}
    # taken out: evaluate alone is out of date (the next test reruns it; a second evaluate
    # here would cost the suite ~40 s)
    set_params(repo, {"peers": {"names": [], "steps": 2}})
    assert out_of_date(repo) == {"evaluate"}


def test_editing_evaluation_code_does_not_retrain(pipeline):
    repo, _ = pipeline
    path = repo / "src/aerestore/evaluate.py"
    path.write_text(path.read_text() + "\n# an edit\n")
    assert repro(repo) == {"evaluate"}


def test_editing_stage_code_reruns_it_and_downstream_only_if_its_outputs_change(pipeline):
    repo, _ = pipeline
    path = repo / "stages/blocks.py"
    path.write_text(path.read_text() + "\n# an edit\n")
    # blocks reruns, download and prepare (upstream) do not; it writes the very same
    # blocks, so DVC does not rerun the stages that read them either
    assert repro(repo) == {"blocks"}


def test_editing_a_library_module_outdates_the_stages_that_import_it(pipeline):
    # which stages import which module is checked for every module in test_stage_deps.py;
    # here DVC itself says what an edit of the training loop would rerun
    repo, _ = pipeline
    path = repo / "src/aerestore/tracks/blocks/train.py"
    original = path.read_text()
    path.write_text(original + "\n# an edit\n")
    assert out_of_date(repo) == {"train@conv_ae", "train@vae"}
    path.write_text(original)
    assert out_of_date(repo) == set()


def test_bad_param_stops_the_stage_and_nothing_is_lost(pipeline):
    repo, _ = pipeline
    before = (repo / "metrics/evaluate.json").read_bytes()
    model_before = (repo / "models/vae/model.pt").read_bytes()
    routing = yaml.safe_load((repo / "params.yaml").read_text())["evaluate"]["routing"]
    # run directly, the stage script refuses the param before touching any output
    set_params(repo, {"evaluate": {"routing": "nearest"}})
    proc = run(["python", "stages/evaluate.py"], repo, check=False)
    assert proc.returncode == 2
    assert "evaluate.routing" in proc.stderr and "nearest" in proc.stderr
    # through DVC: the same clear error, and the outputs (persist: true) stay in place
    proc = run(["dvc", "repro", "evaluate"], repo, check=False)
    assert proc.returncode != 0 and "evaluate.routing" in proc.stdout + proc.stderr
    assert (repo / "metrics/evaluate.json").read_bytes() == before
    set_params(repo, {"evaluate": {"routing": routing}, "arch": {"vae": {"train": {"lr": -1.0}}}})
    proc = run(["dvc", "repro", "train@vae"], repo, check=False)
    assert proc.returncode != 0 and "arch.vae.train.lr" in proc.stdout + proc.stderr
    assert (repo / "models/vae/model.pt").read_bytes() == model_before
    assert not list(repo.rglob(".*.tmp"))  # nothing half-written left behind
    # with the param fixed, the pipeline is up to date again: nothing was lost
    set_params(repo, {"arch": {"vae": {"train": {}}}})
    assert repro(repo) == set()


def test_dag_has_the_named_stages(pipeline):
    repo, _ = pipeline
    dag = run(["dvc", "dag", "--md"], repo).stdout
    for name in ["download", "prepare", "blocks", "evaluate", *sorted(per_arch(*ARCHS))]:
        assert name in dag
