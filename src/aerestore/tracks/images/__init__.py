"""The images track: fully convolutional networks on crops and whole images of ``data/prepared``
(see :mod:`aerestore.tracks`)."""
