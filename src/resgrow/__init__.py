"""resgrow: train residual networks faster by changing their size while they learn.

    from resgrow import build, load_dataset, Trainer, TrainConfig, load_model
"""

__version__ = "0.1.0"

from .data import load_dataset  # noqa: E402
from .errors import ResgrowError  # noqa: E402
from .grow import deepen  # noqa: E402
from .methods import build_method  # noqa: E402
from .models import ArchSpec, ResNet, build  # noqa: E402
from .train import TrainConfig, Trainer, load_model  # noqa: E402

__all__ = ["__version__", "build", "ArchSpec", "ResNet", "load_dataset", "Trainer", "TrainConfig", "deepen",
           "build_method", "ResgrowError", "load_model"]
