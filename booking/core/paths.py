"""Where templates, static files and migrations live: beside the package in a wheel, at the repo root in a checkout."""

from __future__ import annotations

from pathlib import Path

_PACKAGE = Path(__file__).resolve().parent.parent
_RESOURCES = _PACKAGE / "_resources"
_REPO = _PACKAGE.parent


def resource_dir(name: str) -> Path:
    installed = _RESOURCES / name
    if installed.is_dir():
        return installed
    return _REPO / name


TEMPLATES_DIR = resource_dir("templates")
STATIC_DIR = resource_dir("static")
ALEMBIC_DIR = resource_dir("alembic")
