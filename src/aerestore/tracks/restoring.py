"""The restorer of a saved model, per track (:meth:`aerestore.restore.Restorer.load`)."""

from __future__ import annotations

from pathlib import Path

from ..restore import Restorer
from .images.restore import ConvRestorer, PeerNetworkRestorer
from .registry import track_of


def block_restorer(saved, kwargs: dict, routing: str, batch_size: int, files: list, model_dir: Path) -> Restorer:
    """Blocks: split, encode, route, decode, merge (:class:`aerestore.restore.Restorer`)."""
    if kwargs.pop("gate", None) is not None:
        raise ValueError(f"{model_dir / 'decoders.pt'}: a learned gate, but the gate is built for fully "
                         f"convolutional models only, not {kwargs['arch']}")
    restorer = Restorer(saved.model, overlap=saved.geometry.overlap, routing=routing, batch_size=batch_size,
                        files=files, **kwargs)
    restorer.image_size = saved.geometry.image_size
    return restorer


def image_restorer(saved, kwargs: dict, routing: str, batch_size: int, files: list, model_dir: Path) -> ConvRestorer:
    """Whole images, per-pixel routing maps (:class:`aerestore.tracks.images.restore.ConvRestorer`);
    a deep peer's one network (:class:`~aerestore.tracks.images.restore.PeerNetworkRestorer`)."""
    from ..models.peers import PeerRestorer

    if isinstance(saved.model, PeerRestorer):
        return PeerNetworkRestorer(saved.model, arch=kwargs["arch"], routing=routing, batch_size=batch_size,
                                   files=files)
    return ConvRestorer(saved.model, routing=routing, batch_size=batch_size, files=files, **kwargs)


# track -> restorer factory
RESTORERS = {"blocks": block_restorer, "images": image_restorer}


def restorer(saved, kwargs: dict, routing: str, batch_size: int, files: list, model_dir: Path):
    """The restorer of ``saved`` (:func:`aerestore.models.read_model`) with ``kwargs`` from its clusters and decoders."""
    return RESTORERS[track_of(saved.model)](saved, kwargs, routing, batch_size, files, model_dir)
