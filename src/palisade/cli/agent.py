"""CLI commands of this group (see palisade.cli.main)."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add this group's commands (none yet)."""
