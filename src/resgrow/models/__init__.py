"""Growable residual networks: ResNets (stem + stages + head) and vision transformers (patch embedding + blocks +
head), every block with an explicit step size h."""

from .family import growable_spec, model_for, spec_from_dict
from .layers import BasicBlock, Bottleneck, PreActBlock, ResidualBlock, Stage
from .registry import build, cifar_resnet, imagenet_resnet, list_models, register, spec_for, wide_resnet
from .resnet import ResNet, spec_of
from .spec import ArchSpec
from .vit import ViT, ViTBlock, ViTSpec

__all__ = [
    "ArchSpec", "ResNet", "Stage", "ResidualBlock", "BasicBlock", "PreActBlock", "Bottleneck",
    "ViT", "ViTSpec", "ViTBlock", "model_for", "spec_from_dict", "growable_spec",
    "build", "spec_for", "spec_of", "list_models", "register", "cifar_resnet", "wide_resnet", "imagenet_resnet",
]
