"""The two tracks a network trains, clusters, fine-tunes and restores on.

``blocks`` (:mod:`aerestore.tracks.blocks`): networks of a fixed block size (``conv_ae``,
``vae``, ...) on the blocks of ``data/blocks``; ``images``
(:mod:`aerestore.tracks.images`): fully convolutional networks (``unet_ae``, the peers) on
random crops and whole images of ``data/prepared``. A model class declares its track
(``track = "images"``; :class:`aerestore.models.base.RestorationModel` says ``"blocks"``);
:mod:`aerestore.tracks.registry` says which job registry gives what, and nothing outside
this package asks which track a network is on.
"""
