"""Installed package versions, recorded next to results (bench JSON, repository manifest) so two of
them can be compared honestly."""

from __future__ import annotations

import platform
from collections.abc import Iterable
from importlib import metadata


def library_versions(packages: Iterable[str]) -> dict[str, str]:
    """Python's version and each installed package's (packages not installed are left out)."""
    found = {"python": platform.python_version()}
    for name in packages:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return found
