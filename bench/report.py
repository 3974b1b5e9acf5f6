"""What a benchmark suite hands back to the driver, and how it is printed."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True, kw_only=True)
class Row:
    """One line of the markdown table."""

    figure: str
    """What was measured, in words."""
    value: str
    """The figure with its unit, already formatted."""
    note: str = ""
    """How to read it (baseline, ratio, sample size)."""


@dataclass(frozen=True, kw_only=True)
class SuiteResult:
    """A finished suite: table rows for people, raw figures for the JSON file."""

    name: str
    rows: list[Row]
    figures: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0
    """Wall time the suite took."""


def percentile(samples: Sequence[float], pct: float) -> float:
    """Nearest-rank percentile (``pct`` in 0..100) of a non-empty sample."""
    if not samples:
        raise ValueError("percentile of an empty sample")
    ordered = sorted(samples)
    rank = max(1, math.ceil(pct / 100 * len(ordered)))
    return ordered[rank - 1]


def markdown_table(results: Sequence[SuiteResult]) -> str:
    lines = ["| suite | figure | value | notes |", "|---|---|---|---|"]
    for result in results:
        for row in result.rows:
            cells = (result.name, row.figure, row.value, row.note)
            lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return "\n".join(lines)
