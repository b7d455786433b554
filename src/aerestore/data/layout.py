"""What the data stages agree on: the split names and the error for bad stage input.

A module of its own so that a stage reading another stage's output (``blocks`` reads
``data/prepared``) depends on this, not on the other stage's code: editing how images
are degraded reruns ``prepare``, and ``blocks`` only if the prepared data changed.
"""

SPLITS = ("train", "val", "test")


class PrepareError(ValueError):
    """Bad input to the prepare or blocks stage; the message names the file."""

# A pixel counts as damaged by kind k when its weight exceeds this (of 255): the
# feathered rims of the regions, where the weight is small, count as their majority.
DAMAGE_THRESHOLD = 127


def damage_labels(mask, axis: int = -1):
    """Per-pixel damage class of uint8 masks (channels on ``axis``): 0 = clean, 1 + k =
    kind k (the largest weight), where that weight exceeds :data:`DAMAGE_THRESHOLD`."""
    import numpy as np

    m = np.asarray(mask)
    top = m.max(axis=axis)
    kind = m.argmax(axis=axis)
    return np.where(top > DAMAGE_THRESHOLD, kind + 1, 0).astype(np.int64)


def damage_shares(mask):
    """Share of each damage class (:data:`aerestore.damage.DAMAGE_CLASSES`: clean, then each kind) among the
    pixels of each block; uint8 masks ``(N, K, s, s)`` -> float ``(N, 1 + K)``, rows sum to 1."""
    import numpy as np

    labels = damage_labels(mask, axis=1).reshape(len(mask), -1)
    n_classes = mask.shape[1] + 1
    counts = np.stack([(labels == c).sum(1) for c in range(n_classes)], axis=1)
    return counts / np.maximum(counts.sum(1, keepdims=True), 1)
