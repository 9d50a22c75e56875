"""Helpers for data sets read from files."""

from __future__ import annotations

import os
from pathlib import Path

# the extensions torchvision's ImageFolder accepts
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")


def one_line(e: BaseException) -> str:
    """An exception as one line of text, for DataError messages."""
    return " ".join(f"{type(e).__name__}: {e}".split())


def image_files(folder: Path) -> list[str]:
    """Image files under ``folder`` (any depth, symlinks followed, as ImageFolder), relative to it, sorted."""
    found = []
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=True):
        dirnames.sort()
        rel = os.path.relpath(dirpath, folder)
        found += [f if rel == "." else os.path.join(rel, f) for f in sorted(filenames)
                  if f.lower().endswith(IMAGE_EXTENSIONS)]
    return found
