"""Every architecture of aerestore, behind one interface.

>>> from aerestore.losses import LossConfig
>>> from aerestore.models import create_model, list_models, save_model, read_model
>>> model = create_model("vae", latent=64, block=18, channels=3, loss=LossConfig(beta=0.5))
>>> list_models("vae*")
['vae', 'vae_gan', 'vae_lfw']

The training loop, the clustering, the per-cluster decoders and the evaluation use only
:class:`~aerestore.models.base.RestorationModel`'s methods (``encode``, ``decode``,
``forward``, ``latent_vector``, ``loss``, ``configure_optimizers``, ``train_step``,
``config``) and the four functions above (``read_model`` gives the network with its block
geometry; ``load_model``, the network alone).
"""

from aerestore.models.base import RestorationModel, VariationalModel
from aerestore.models.registry import (
    Geometry,
    SavedModel,
    UnknownModelError,
    check_model,
    create_model,
    list_models,
    load_model,
    model_class,
    model_options,
    read_model,
    register_model,
    save_model,
)

# Each family module registers its names on import (explicit, no file scanning).
from aerestore.models import (  # noqa: E402,F401  isort: skip
    blur_ae,
    ccp_ae,
    conv_ae,
    fcn_ae,
    peers,
    resnet_vae,
    unet_ae,
    vae,
    vae_gan,
    vgg_vae,
)

__all__ = [
    "RestorationModel",
    "VariationalModel",
    "Geometry",
    "SavedModel",
    "UnknownModelError",
    "check_model",
    "create_model",
    "list_models",
    "load_model",
    "model_class",
    "model_options",
    "read_model",
    "register_model",
    "save_model",
]
