"""The blocks track: networks of a fixed block size on ``data/blocks`` (see :mod:`aerestore.tracks`)."""
