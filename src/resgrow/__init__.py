"""resgrow: train residual networks faster by changing their size while they learn."""

__version__ = "0.1.0"
