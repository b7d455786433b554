"""``cluster@<arch>`` per track: the samples whose codes are clustered
(:mod:`aerestore.tracks.registry`; the clusterers are :data:`aerestore.pipeline.cluster.CLUSTERERS`)."""

from __future__ import annotations

from .blocks.codes import BlockCodes
from .images.codes import LocationCodes
from .registry import track_of

# track -> Codes (aerestore.tracks.registry.Codes)
CODES = {"blocks": BlockCodes, "images": LocationCodes}


def codes(params, arch: str, model, paths):
    """The codes ``model`` (of ``arch``) clusters on its track."""
    return CODES[track_of(model)](params, arch, model, paths)
