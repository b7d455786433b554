"""What the data stages agree on: the split names and the error for bad stage input.

A module of its own so that a stage reading another stage's output (``blocks`` reads
``data/prepared``) depends on this, not on the other stage's code: editing how images
are degraded reruns ``prepare``, and ``blocks`` only if the prepared data changed.
"""

SPLITS = ("train", "val", "test")


class PrepareError(ValueError):
    """Bad input to the prepare or blocks stage; the message names the file."""
