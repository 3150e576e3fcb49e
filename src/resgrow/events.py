"""Events: what a method did to a run (started it at a size, grew it, ...), logged with the epoch it ended.

An event is a dict: its `kind` ("start", "grow", "diverged", ...), a `text` for people (the progress line,
metrics.csv, TensorBoard) and details for programs (a growth: "from", "to", "why"). `resgrow compare`
reads the kind and the details, never the text.
"""

from __future__ import annotations

GROW = "grow"


def event(kind: str, text: str, **details) -> dict:
    return {"kind": kind, "text": text, **details}


def as_event(e) -> dict:
    """An event from a method (a dict, or a line of text) or from a log that kept events as lines (the depth
    logs committed under benchmarks/ do: a growth's line starts with "grew")."""
    if isinstance(e, dict):
        return e
    return event(GROW if e.startswith("grew ") else "note", e)


def event_text(e) -> str:
    return as_event(e)["text"]


def is_growth(e) -> bool:
    return as_event(e)["kind"] == GROW
