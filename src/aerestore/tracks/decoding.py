"""``decoders@<arch>`` per track and ``decoders.method`` (:mod:`aerestore.tracks.registry`)."""

from __future__ import annotations

from ..stage import StageError
from .blocks.decoding import ClusterDecoders
from .images.decoding import GateDecoders, MapDecoders
from .registry import track_of

# track -> decoders.method -> DecoderJob (aerestore.tracks.registry.DecoderJob). The learned
# gate is built for the images track; the ensemble control (decoders.ensemble) is part of
# the 'clusters' method on both.
DECODER_METHODS = {
    "blocks": {"clusters": ClusterDecoders},
    "images": {"clusters": MapDecoders, "gate": GateDecoders},
}


def fine_tune_decoders(params, arch: str, restorer, paths):
    """The decoder job of ``decoders.method`` for ``restorer``'s track."""
    methods = DECODER_METHODS[track_of(restorer.model)]
    method = params.decoders.method
    if method not in methods:
        raise StageError(f"decoders.method {method!r} is built for fully convolutional models (unet_ae), not "
                         f"{arch}: run it with architectures=[unet_ae]")
    return methods[method](params, arch, restorer, paths)
