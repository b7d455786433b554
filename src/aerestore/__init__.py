"""aerestore: autoencoders that restore degraded images block by block."""

import os as _os

# albumentations checks the network for updates on import unless this is set.
_os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

__version__ = "0.1.0"
