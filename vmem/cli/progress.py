"""A minimal progress bar for long work, drawn on stderr only when it is a terminal."""

from __future__ import annotations

import sys
from typing import TextIO


class ProgressBar:
    """Redraws one line: label, bar, percentage, done/total (in MiB when the unit is bytes)."""

    def __init__(self, label: str, total: int, *, stream: TextIO | None = None, width: int = 30, unit: str = "bytes") -> None:
        self.label = label
        self.unit = unit
        self.total = max(total, 1)
        self.stream = stream if stream is not None else sys.stderr
        self.width = width
        self.enabled = self.stream.isatty()
        self._last = -1

    def update(self, done: int, _total: int | None = None) -> None:
        if not self.enabled:
            return
        pct = min(100, done * 100 // self.total)
        if pct == self._last:
            return
        self._last = pct
        filled = self.width * pct // 100
        bar = "#" * filled + "-" * (self.width - filled)
        amount = (f"{done / 2**20:.1f}/{self.total / 2**20:.1f} MiB" if self.unit == "bytes"
                  else f"{done}/{self.total} {self.unit}")
        self.stream.write(f"\r{self.label} [{bar}] {pct:3d}% {amount}")
        self.stream.flush()

    def close(self) -> None:
        if self.enabled and self._last >= 0:
            self.stream.write("\n")
            self.stream.flush()
