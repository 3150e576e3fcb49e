"""Logs and reports of runs."""

from .metrics import CSV_COLUMNS, MetricsLog

__all__ = ["MetricsLog", "CSV_COLUMNS"]
