"""Plain-text tables for the command-line tools."""
from __future__ import annotations

from collections.abc import Sequence

__all__ = ['format_table']


def format_table(rows: Sequence[Sequence[str]], header: Sequence[str]) -> str:
    """Left-aligned columns separated by two spaces, with a rule under the header."""
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    lines = [header, ['-' * w for w in widths], *rows]
    return '\n'.join('  '.join(str(c).ljust(w) for c, w in zip(r, widths)).rstrip() for r in lines)
