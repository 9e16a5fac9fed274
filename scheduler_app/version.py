"""The package's version, in one place: ``pyproject.toml`` reads it when building, and
``scheduler_app`` re-exports it as ``__version__``."""

from __future__ import annotations

__version__ = "0.2.0"
