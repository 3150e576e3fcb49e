"""Logs and reports of runs."""

from .compare import RunSummary, compare_table, load_run, plot_runs, protocol_warnings, seeds_table, stages_table
from .metrics import CSV_COLUMNS, MetricsLog

__all__ = ["MetricsLog", "CSV_COLUMNS", "RunSummary", "compare_table", "load_run", "plot_runs", "protocol_warnings",
           "seeds_table", "stages_table"]
