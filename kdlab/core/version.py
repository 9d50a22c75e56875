"""kdlab's version (pyproject.toml's), kept in the core so every layer may stamp it on what it writes."""

__version__ = "0.1.0"
