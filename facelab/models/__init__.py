"""facelab.models: encoders and reconstruction networks.

* :mod:`~facelab.models.resnet`: hand-written ResNets (tiny, 18, 50) as feature encoders.
* :mod:`~facelab.models.regressor`: the image -> 3DMM coefficient regression baseline.
* :mod:`~facelab.models.sphereface`: SphereFace encoders (sphere20, a tiny CPU variant).
* :mod:`~facelab.models.liu2018`: Liu et al. 2018's identity/residual decoders and model.
* :mod:`~facelab.models.gcn`: Chebyshev graph convolutions and COMA-style mesh coders.
* :mod:`~facelab.models.gao2020`: Gao et al. 2020's encoder, graph decoders, renderer and shape critic.
* :mod:`~facelab.models.sir`: the SIR network (regressor + recognition head + identity shape model).
* :mod:`~facelab.models.registry`: checkpoint name -> builder and :class:`Evaluable` wrapper;
  :func:`load_model` / :func:`load_evaluable` rebuild a trained model from a checkpoint.

Each model module registers itself on import, and this package imports all of them.
"""

from facelab.models.registry import (
    LEGACY_NAMES, Evaluable, ModelEntry, build_model, evaluable_model, load_evaluable, load_model, model_entry,
    register_model, registered_models,
)
from facelab.models.regressor import CoefficientRegressor, RegressorConfig, build_regressor
from facelab.models.liu2018 import (
    IdentityDecoder, Liu2018Config, Liu2018Evaluable, Liu2018Model, ResidualDecoder, build_liu2018_model,
)
from facelab.models.sphereface import SphereConfig, SphereNet, sphere20, sphere_tiny
from facelab.models.gcn import ChebConv, GraphDecoder, GraphEncoder, scaled_laplacian
from facelab.models.gao2020 import (
    GAO2020_PROFILES, CNNAlbedoDecoder, Gao2020Config, Gao2020Evaluable, Gao2020Model, ShapeDiscriminator,
    build_gao2020_model, gao2020_model_config,
)
from facelab.models.sir import SIRNet, SIRNetConfig, build_sir_model
from facelab.models.resnet import BACKBONES, BasicBlock, Bottleneck, ResNet, build_backbone, resnet18, resnet50, resnet_tiny

__all__ = [
    "Evaluable", "ModelEntry", "LEGACY_NAMES", "register_model", "registered_models", "model_entry", "build_model",
    "load_model", "evaluable_model", "load_evaluable",
    "BasicBlock", "Bottleneck", "ResNet", "resnet_tiny", "resnet18", "resnet50", "build_backbone", "BACKBONES",
    "CoefficientRegressor", "RegressorConfig", "build_regressor",
    "SphereConfig", "SphereNet", "sphere20", "sphere_tiny",
    "Liu2018Config", "Liu2018Model", "IdentityDecoder", "ResidualDecoder", "Liu2018Evaluable", "build_liu2018_model",
    "scaled_laplacian", "ChebConv", "GraphDecoder", "GraphEncoder",
    "GAO2020_PROFILES", "Gao2020Config", "Gao2020Model", "CNNAlbedoDecoder", "ShapeDiscriminator",
    "gao2020_model_config", "build_gao2020_model", "Gao2020Evaluable",
    "SIRNet", "SIRNetConfig", "build_sir_model",
]
