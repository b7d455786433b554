"""The damage the masks record, and its classes: what the data side writes and the
networks' damage heads, the clusters and the params agree on.

A module of its own, below everything that uses it (:mod:`aerestore.data.layout`,
:mod:`aerestore.models.base`, :mod:`aerestore.params`), so none of them imports upwards.
"""

# The kinds of LOCAL damage the masks record, one mask channel each, in this order:
# ``mask.npy`` is uint8 (N, H, W, len(DAMAGE_KINDS)) in data/prepared and
# (N, len(DAMAGE_KINDS), s, s) in data/blocks; channel k holds the weight (0..255) with
# which damage kind k was applied at that pixel (0 = not at all). A pixel with every
# channel 0 is "clean" (it may still carry the light global noise of the default task).
DAMAGE_KINDS = ("blur", "noise")
# The classes of :func:`aerestore.data.layout.damage_labels`: clean, then one per damage kind.
DAMAGE_CLASSES = ("clean",) + DAMAGE_KINDS
