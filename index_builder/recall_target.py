"""One rule for "does this configuration meet the recall target, and if none does, which one to take".

Why one home: tuning (over trained indexes) and the on-device calibration (leaves-to-search
re-checked on all rows) must decide alike. When they did not, a plateau was climbed at calibration
for nothing (measured at 1M rows, 64-byte codes: leaves-to-search 80 -> 640 of 1000 for recall
0.792 -> 0.799): when the target is out of reach, the codes cap recall, and searching more leaves
only costs time. So: a configuration meets the target when its recall, less ``confidence_z``
standard errors, reaches it; if none does, every configuration within ``ceiling_tolerance`` of the
best recall reached (the ceiling) is as good, and the caller takes the cheapest of those.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

import numpy as np

# One-sided 95% confidence: the winner is picked on these very queries, so its bare mean overstates
# unseen-query recall (measured at 200K: 0.9505 on the tuning queries, 0.948 on fresh ones).
CONFIDENCE_Z = 1.64
# Recall this close to the ceiling counts as the ceiling (measured on device at 123K: without it, all
# 175 leaves were searched, 14 ms per TextSearcher query, for recall 0.968 where 0.9 was asked).
CEILING_TOLERANCE = 0.01


class Measured(Protocol):
    recall: float
    meets_target: bool


MeasuredT = TypeVar("MeasuredT", bound=Measured)


@dataclass(frozen=True)
class RecallEstimate:
    mean: float
    standard_error: float

    @classmethod
    def of(cls, per_query: np.ndarray) -> RecallEstimate:
        """Mean recall over queries and the standard error of that mean."""
        error = float(per_query.std(ddof=1) / np.sqrt(len(per_query))) if len(per_query) > 1 else 0.0
        return cls(float(per_query.mean()), error)


@dataclass(frozen=True)
class TargetRule:
    target: float
    confidence_z: float = CONFIDENCE_Z
    ceiling_tolerance: float = CEILING_TOLERANCE

    def __post_init__(self) -> None:
        if not 0 < self.target <= 1:
            raise ValueError(f"target recall must be in (0, 1], got {self.target}")
        if not 0 <= self.ceiling_tolerance < 1:
            raise ValueError(f"ceiling_tolerance must be in [0, 1), got {self.ceiling_tolerance}")
        if self.confidence_z < 0:
            raise ValueError(f"confidence_z must be >= 0, got {self.confidence_z}")

    def meets(self, estimate: RecallEstimate) -> bool:
        return estimate.mean - self.confidence_z * estimate.standard_error >= self.target

    def eligible(self, candidates: Sequence[MeasuredT]) -> list[MeasuredT]:
        """Those meeting the target; if none does, those within the tolerance of the ceiling.

        Callers take the cheapest of these by their own cost (latency, bytes, leaves searched).
        """
        if not candidates:
            raise ValueError("no configuration was measured")
        met = [c for c in candidates if c.meets_target]
        if met:
            return met
        ceiling = max(c.recall for c in candidates)
        return [c for c in candidates if c.recall >= ceiling - self.ceiling_tolerance]


@dataclass(frozen=True)
class TargetOutcome:
    """What eval.json and the job's last log line say about a target."""

    target_recall: float
    target_met: bool
    best_recall: float  # the most accurate configuration measured (the ceiling when the target is missed)
    best_bytes_per_item: int  # its index bytes per item
    # What was not tried that might reach the target, and how to try it ("" when everything allowed was tried).
    untried: str = ""

    @property
    def message(self) -> str:
        if self.target_met:
            return f"target {self.target_recall} met"
        missed = f"target missed: best reachable {self.best_recall:.4f} at {self.best_bytes_per_item} B/item"
        return f"{missed} ({self.untried})" if self.untried else missed

    def report(self) -> dict[str, Any]:
        report: dict[str, Any] = {"target_recall": self.target_recall, "target_met": self.target_met}
        if not self.target_met:
            report["target_message"] = self.message
        return report


def outcome(rule: TargetRule, candidates: Sequence[Any], chosen: Measured, bytes_per_item: Any) -> TargetOutcome:
    """``bytes_per_item(candidate)`` gives a candidate's bytes per item (for the message)."""
    best = max(candidates, key=lambda c: (c.recall, -bytes_per_item(c)))
    return TargetOutcome(rule.target, chosen.meets_target, best.recall, int(bytes_per_item(best)))
