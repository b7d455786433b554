"""`aerestore latent-sizes`: the latent-size comparison from DVC experiments' explore outputs,
on a real tiny git + DVC repository whose one stage stands in for explore@vae_lfw."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from aerestore import cli
from aerestore.explore import grid
from aerestore.studies import latent_sizes as LS

from pipeline_utils import run, stand_in_repo

# explore@vae_lfw's outputs for latent size L: 2 pairs x (3 steps + 2) tiles of 8 px; the
# test images (column 0) are the same in every run, frame f of row r is filled with L + 10 f + r
MAKE = """
import json, sys, yaml
from pathlib import Path
import numpy as np
from PIL import Image
sys.path.insert(0, {src!r})
from aerestore.explore import grid
L = yaml.safe_load(open("params.yaml"))["latent"]
rows = []
for r in range(2):
    tiles = [np.full((8, 8, 3), 200 + r, np.uint8)]
    tiles += [np.full((8, 8, 3), L + 10 * f + r, np.uint8) for f in range(3)]
    tiles += [np.full((8, 8, 3), 250, np.uint8)]
    rows.append(np.stack(tiles))
out = Path("metrics/explore/vae_lfw")
out.mkdir(parents=True, exist_ok=True)
Image.fromarray(grid(rows, min_tile=8)).save(out / "interpolation.png")
json.dump({{"latent_dim": L, "pairs": 2, "steps": 3, "samples_nearest_train_mse": 0.001 * L,
           "plausibility_clean": {{"endpoints_mse": 0.01, "midpoints_mse": 0.02 / L,
                                   "midpoint_to_endpoint_ratio": 2.0 / L}},
           "colourfulness": {{"clean": 40.0, "reconstructed": float(L), "samples": 0.5 * L}}}},
          open("metrics/explore/vae_lfw.json", "w"))
"""

DVC_YAML = """stages:
  explore:
    cmd: python make.py
    deps: [make.py]
    params: [latent]
    metrics:
      - metrics/explore/vae_lfw.json:
          cache: false
    plots:
      - metrics/explore/vae_lfw:
          cache: false
"""


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    src = str(Path(LS.__file__).parents[2])
    repo = stand_in_repo(tmp_path_factory.mktemp("latent") / "repo",
                         {"params.yaml": "latent: 64\n", "make.py": MAKE.format(src=src), "dvc.yaml": DVC_YAML})
    for latent in (32, 16):
        run(["dvc", "exp", "run", "-q", "-S", f"latent={latent}", "-n", f"z{latent}"], repo)
    return repo


def test_figure_and_table_from_two_experiments(repo, tmp_path, capsys):
    out = tmp_path / "sizes.png"
    assert cli.main(["latent-sizes", "z32", "z16", "--arch", "vae_lfw", "--repo", str(repo), "-o", str(out)]) == 0
    table = out.with_suffix(".md").read_text()
    assert table == capsys.readouterr().out
    lines = table.splitlines()
    assert lines[2].startswith("| z16 | 16 | 0.0100 | 0.0013 | 0.12 | 0.0160 | 16.0 | 8.0 |")  # by latent size
    assert lines[3].startswith("| z32 | 32 | 0.0100 | 0.0006 | 0.06 | 0.0320 | 32.0 | 16.0 |")
    assert "clean test images: 40.0" in table
    fig = np.asarray(Image.open(out).convert("RGB"))
    body = LS.tiles(fig[14:], rows=2, cols=3)  # under the label row: test image, latent 16, latent 32
    for r in range(2):
        assert (body[r, 0] == 200 + r).all()
        assert (body[r, 1] == 16 + r).all() and (body[r, 2] == 32 + r).all()  # frame 0: the reconstructions
    assert fig[:14].min() < 128  # the labels are drawn


def test_midpoint_frames_and_all_experiments(repo, tmp_path):
    runs = [LS.load_run(name, "vae_lfw", repo) for name in ("z16", "z32")]
    fig = LS.figure(runs, "midpoint")
    body = LS.tiles(fig[14:], rows=2, cols=3)
    assert (body[0, 1] == 16 + 10).all() and (body[1, 2] == 32 + 10 + 1).all()  # frame 1 of 3
    out = tmp_path / "all.png"
    assert cli.main(["latent-sizes", "--arch", "vae_lfw", "--repo", str(repo), "-o", str(out)]) == 0
    assert "| z16 |" in out.with_suffix(".md").read_text() and "| z32 |" in out.with_suffix(".md").read_text()


def test_errors_name_the_experiment_and_file(repo, tmp_path, capsys):
    out = str(tmp_path / "x.png")
    assert cli.main(["latent-sizes", "nope", "--arch", "vae_lfw", "--repo", str(repo), "-o", out]) == 2
    assert "nope: not an experiment or git revision" in capsys.readouterr().err
    assert cli.main(["latent-sizes", "z16", "--arch", "vae", "--repo", str(repo), "-o", out]) == 2
    assert "z16 (" in (err := capsys.readouterr().err) and "metrics/explore/vae.json" in err
    with pytest.raises(ValueError, match="not a grid of 3 x 5 tiles"):
        LS.tiles(np.zeros((40, 40, 3), np.uint8), 3, 5)
    other = LS.ExploreRun("other", {"latent_dim": 8, "pairs": 1, "steps": 1},
                          grid([np.zeros((3, 8, 8, 3), np.uint8)], min_tile=8))
    with pytest.raises(ValueError, match="interpolated other test images"):
        LS.figure([LS.load_run("z16", "vae_lfw", repo), other])
