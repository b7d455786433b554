"""peer@<name>: train a deep peer (peers.names) with unet_ae's train settings (its own lr), for evaluate's
row "peer: <name>" (:mod:`aerestore.pipeline.peer`)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))  # this checkout's code, also in DVC temp dirs

from aerestore.pipeline.peer import run_peer  # noqa: E402
from aerestore.pipeline.train import TrainPaths  # noqa: E402
from aerestore.models.peers import PEERS  # noqa: E402
from aerestore.stage import StageError, main, stage_paths  # noqa: E402


def run(params, args):
    args, paths = stage_paths(args, TrainPaths)
    # a name from PEERS, not checked against peers.names: reading that list would make every
    # peer@<name> rerun when another peer is added to it
    if len(args) != 1 or args[0] not in PEERS:
        raise StageError(f"usage: python stages/peer.py NAME (one of {list(PEERS)}; dvc.yaml runs those in peers.names)")
    run_peer(params, args[0], paths)


if __name__ == "__main__":
    main("peer", run)
