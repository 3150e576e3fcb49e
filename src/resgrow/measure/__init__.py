"""Measurements of a model: cost (FLOPs, parameters); Lipschitz bounds come with the depth methods."""

from .flops import flops_per_image, module_flops_per_image, param_count

__all__ = ["flops_per_image", "module_flops_per_image", "param_count"]
