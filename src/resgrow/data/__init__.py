"""Datasets as uint8 tensors, and loaders that keep them on the training device."""

from .loader import DeviceLoader, EvalLoader, channel_stats
from .sources import Dataset, Split, load_dataset, read_imagefolder, with_validation

__all__ = ["Dataset", "Split", "load_dataset", "read_imagefolder", "with_validation",
           "DeviceLoader", "EvalLoader", "channel_stats"]
