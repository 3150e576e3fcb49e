"""resgrow: train residual networks faster by changing their size while they learn.

    from resgrow import build, load_dataset, Trainer, TrainConfig, load_model

The names below are imported on first use, so `resgrow --help` and the catalogue commands start
without loading torch.
"""

import importlib

__version__ = "0.2.0"

_LAZY = {"load_dataset": "data", "ResgrowError": "errors", "deepen": "grow", "build_method": "methods",
         "ArchSpec": "models", "ResNet": "models", "build": "models", "TrainConfig": "train", "Trainer": "train",
         "load_model": "train"}

_SUBMODULES = {"atomic", "bench", "cli", "config", "data", "errors", "grow", "launch", "measure", "methods", "models",
               "report", "train"}

__all__ = ["__version__", *_LAZY]


def __getattr__(name: str):
    if name in _LAZY:
        value = getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
        globals()[name] = value
        return value
    if name in _SUBMODULES:  # `import resgrow; resgrow.train.evaluate_run(...)`
        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module 'resgrow' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_LAZY))
