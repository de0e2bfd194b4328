"""Pure nn.Module architectures for the base model F and the parity model F_P, and their model files."""

from parm.models.checkpoint import build_from_spec, load_model, load_state_dict_checked, save_model
from parm.models.lenet import LeNet5
from parm.models.mlp import MLP, ReferenceMLP
from parm.models.resnet import ResNet18
from parm.models.tiled import TiledParity
from parm.models.vgg import VGG11

__all__ = [
    "LeNet5",
    "MLP",
    "ReferenceMLP",
    "ResNet18",
    "TiledParity",
    "VGG11",
    "build_from_spec",
    "load_model",
    "load_state_dict_checked",
    "save_model",
]
