"""Growable residual networks: every model is stem + stages + head with an explicit step size h."""

from .layers import BasicBlock, Bottleneck, PreActBlock, ResidualBlock, Stage
from .registry import build, cifar_resnet, imagenet_resnet, list_models, register, spec_for, wide_resnet
from .resnet import ResNet, spec_of
from .spec import ArchSpec

__all__ = [
    "ArchSpec", "ResNet", "Stage", "ResidualBlock", "BasicBlock", "PreActBlock", "Bottleneck",
    "build", "spec_for", "spec_of", "list_models", "register", "cifar_resnet", "wide_resnet", "imagenet_resnet",
]
