"""Rules every template follows, checked on the source."""

from __future__ import annotations

import re
from pathlib import Path

TEMPLATES = Path(__file__).resolve().parent.parent / "templates"


def test_every_table_scrolls_inside_a_wrapper() -> None:
    """On a phone a wide table scrolls inside div.table-scroll. Making the table itself the scroll box (display:
    block) would make screen readers read it as plain text, so every table but the week grid (inside its own
    .week-scroll) sits directly in the wrapper."""
    unwrapped = []
    for path in sorted(TEMPLATES.rglob("*.html")):
        source = path.read_text(encoding="utf-8")
        for match in re.finditer(r"<table\b[^>]*>", source):
            if "week-grid" in match.group(0):
                continue
            before = source[: match.start()].rstrip()
            if not before.endswith('<div class="table-scroll">'):
                line = source.count("\n", 0, match.start()) + 1
                unwrapped.append(f"{path.relative_to(TEMPLATES)}:{line}")
    assert not unwrapped, unwrapped
