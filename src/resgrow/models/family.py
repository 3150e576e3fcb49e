"""The model families resgrow builds and grows: ResNets (`ArchSpec`) and vision transformers (`ViTSpec`).

Every checkpoint stores its model's spec as a dict; a ViT's says `"family": "vit"`, a ResNet's says nothing
(the records written before there was a second family), so that every run directory stays readable.
"""

from __future__ import annotations

from typing import Union

from torch import nn

from ..errors import ResgrowError
from .resnet import ResNet, spec_of
from .spec import ArchSpec
from .vit import ViT, ViTSpec

Spec = Union[ArchSpec, ViTSpec]
FAMILIES = {"resnet": (ArchSpec, ResNet), "vit": (ViTSpec, ViT)}


def spec_from_dict(d: dict) -> Spec:
    """The spec a checkpoint or log row recorded."""
    family = d.get("family", "resnet")
    if family not in FAMILIES:
        raise ResgrowError(f"unknown model family {family!r} in a spec record; known: {', '.join(FAMILIES)}")
    return FAMILIES[family][0].from_dict(d)


def model_for(spec: Spec) -> nn.Module:
    """The model a spec describes, freshly initialised."""
    for spec_cls, model_cls in FAMILIES.values():
        if isinstance(spec, spec_cls):
            return model_cls(spec)
    raise ResgrowError(f"not a resgrow model spec: {type(spec).__name__}")


def growable_spec(model: nn.Module) -> Spec | None:
    """The spec of a model resgrow can grow (a ResNet or a ViT of its own), else None (a model of your own)."""
    if isinstance(model, ResNet):
        return spec_of(model)
    if isinstance(model, ViT):
        return model.spec
    return None
