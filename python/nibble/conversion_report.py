"""What nibble.convert did to each torch.nn.Linear of a model: converted, or kept as it was and why.

A report, not a log: every Linear the walk met has exactly one row, so a layer can never be left out silently.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List

import torch


@dataclass(frozen=True)
class LayerDecision:
    """One torch.nn.Linear of the model: its qualified name, shape, and whether it now runs in the recipe."""

    name: str
    in_features: int
    out_features: int
    bias: bool
    dtype: torch.dtype
    device: torch.device
    converted: bool
    reason: str  # why it was kept; for a converted layer, a remark such as "same module as ..." or ""


@dataclass
class ConversionReport:
    """``converted``: the qualified names now running ``recipe``; ``kept``: name -> why it stayed as it was;
    ``notes``: what holds for the whole conversion (e.g. a token-count rule of the recipe's backward).
    ``print(report)`` shows one row per Linear."""

    recipe: str
    layers: List[LayerDecision] = field(default_factory=list)
    notes: List[str] = field(default_factory=list)

    @property
    def converted(self) -> List[str]:
        return [d.name for d in self.layers if d.converted]

    @property
    def kept(self) -> Dict[str, str]:
        return {d.name: d.reason for d in self.layers if not d.converted}

    def __repr__(self) -> str:
        return (f"ConversionReport(recipe={self.recipe!r}, converted={len(self.converted)}, "
                f"kept={len(self.kept)})")

    def __str__(self) -> str:
        rows = [("layer", "in -> out", "bias", "dtype", "device", "result")]
        for d in self.layers:
            result = ("converted" if d.converted else "kept") + (f": {d.reason}" if d.reason else "")
            rows.append((d.name, f"{d.in_features} -> {d.out_features}", "yes" if d.bias else "no",
                         str(d.dtype).replace("torch.", ""), str(d.device), result))
        # Every column but the last is padded to its widest cell; the reason column runs to the line's end.
        widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
        lines = [f"nibble.convert to {self.recipe}: {len(self.converted)} of {len(self.layers)} Linear layers "
                 f"converted, {len(self.kept)} kept"]
        for row in rows:
            lines.append("  ".join(cell.ljust(w) for cell, w in zip(row, widths)) + "  " + row[-1])
        lines += [f"note: {n}" for n in self.notes]
        return "\n".join(lines)
