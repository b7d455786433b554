"""The ``aerestore`` command::

    aerestore restore photo.jpg scans/*.png --model models:/aerestore-conv_ae/latest -o restored/
    aerestore init-store          # create/migrate mlflow.db and the experiment (before parallel stages)
    aerestore ui                  # print the `mlflow ui` command for this repository's store
    aerestore to-json IMAGE       # input.json for `mlflow models predict`
    aerestore from-json OUT.json  # its predictions back to a PNG
    aerestore seeds --all -o metrics/seeds.md  # per-cluster vs control over the seeds' experiments
    aerestore interpolate A.jpg B.jpg --model models/vae_lfw -n 8 -o grid.png
    aerestore sample --model models/vae_lfw -n 16 -o samples.png --seed 0
    aerestore colourise grey.jpg --model models/conv_ae -o coloured/
    aerestore report --claims 3,7 --seeds 3  # re-test the studies' claims: reports/claims.md
    aerestore preset lfw-denoise --run     # a study's setting as one DVC experiment
    aerestore team-users --users deploy/team-users.example.yaml  # the team MLflow server's users
    aerestore cbsd68 /data/CBSD68 --model models/unet_ae --classical bm3d --anchor-images 8

Each subcommand is a pair in the module of its group: ``add_<name>(subparsers)`` declares
its arguments and sets ``func``, ``cmd_<name>(args)``, the function that runs it and returns
the exit code. Adding one is a new pair and a line in :data:`SUBCOMMANDS` (the order of
``aerestore --help``). The groups:

- :mod:`aerestore.cli.restore`: ``restore``, ``to-json``, ``from-json``
- :mod:`aerestore.cli.store`: ``init-store``, ``ui``, ``team-users``
- :mod:`aerestore.cli.results`: ``models``, ``summary``, ``seeds``, ``report``, ``preset``, ``cbsd68``
- :mod:`aerestore.cli.explore`: ``interpolate``, ``sample``, ``colourise``, ``latent-sizes``
- :mod:`aerestore.cli.common`: what they share (:class:`~aerestore.cli.common.CliError`,
  :func:`~aerestore.cli.common.write_png`, :func:`~aerestore.cli.common.load_any_restorer`)
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any, Callable

from aerestore.cli import explore, restore, results, store
from aerestore.cli.common import CliError

SUBCOMMANDS: list[Callable[[Any], None]] = [
    restore.add_restore,
    store.add_init_store,
    store.add_ui,
    restore.add_to_json,
    restore.add_from_json,
    results.add_models,
    results.add_summary,
    results.add_seeds,
    explore.add_interpolate,
    explore.add_sample,
    explore.add_colourise,
    explore.add_latent_sizes,
    results.add_report,
    results.add_side_by_side,
    results.add_preset,
    store.add_team_users,
    results.add_cbsd68,
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="aerestore",
        description="Restore degraded images with the autoencoders trained by the aerestore pipeline.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in SUBCOMMANDS:
        add(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except CliError as exc:
        print(f"aerestore {args.command}: {exc}", file=sys.stderr)
        return 2
    except RuntimeError as exc:  # TrackingError: the store or the server refused us, in one line
        from aerestore.stage import StageError

        if not isinstance(exc, StageError) or os.environ.get("AERESTORE_DEBUG"):
            raise
        print(f"aerestore {args.command}: {exc}", file=sys.stderr)
        return 2
    except (OSError, ValueError) as exc:
        if os.environ.get("AERESTORE_DEBUG"):
            raise
        print(f"aerestore {args.command}: {exc}", file=sys.stderr)
        return 2

