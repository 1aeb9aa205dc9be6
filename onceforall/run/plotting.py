"""Figures: matplotlib, imported on first use (not at package import) and drawing to files only."""

from __future__ import annotations

from types import ModuleType

__all__ = ["pyplot"]


def pyplot() -> ModuleType:
    """matplotlib.pyplot on the Agg backend (files only; imported on first use, not at package import)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt
