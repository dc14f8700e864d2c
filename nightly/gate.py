"""The validation gate: checks a run must pass before LATEST may name it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass
class Check:
    name: str
    passed: bool
    value: float | None
    threshold: float
    message: str

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "passed": self.passed,
            "value": self.value,
            "threshold": self.threshold,
            "message": self.message,
        }


def shrink_check(items: int, previous_items: int | None, max_shrink: float) -> Check:
    if not previous_items:
        return Check("max_shrink", True, None, max_shrink, "no published run to compare with")
    shrink = (previous_items - items) / previous_items
    passed = shrink <= max_shrink
    return Check(
        "max_shrink",
        passed,
        round(shrink, 6),
        max_shrink,
        f"item count {previous_items} -> {items} (shrink {shrink:.1%}, allowed {max_shrink:.1%})",
    )


def rejected_check(rejected: int, matched: int, max_fraction: float) -> Check:
    fraction = rejected / matched if matched else 0.0
    return Check(
        "max_rejected_fraction",
        fraction <= max_fraction,
        round(fraction, 6),
        max_fraction,
        f"{rejected} of {matched} inputs rejected ({fraction:.1%}, allowed {max_fraction:.1%})",
    )


def recall_check(recall: float | None, min_recall: float) -> Check:
    return _recall_check("min_recall", "server", recall, min_recall)


def ondevice_recall_check(recall: float | None, min_recall: float) -> Check:
    """The on-device index (eval.json's ondevice recall@10, measured over index.ldb as shipped)."""
    return _recall_check("min_ondevice_recall", "on-device", recall, min_recall)


def _recall_check(name: str, index: str, recall: float | None, min_recall: float) -> Check:
    if recall is None:
        return Check(name, False, None, min_recall, f"eval.json has no {index} recall@10")
    return Check(
        name,
        recall >= min_recall,
        round(recall, 6),
        min_recall,
        f"{index} recall@10 {recall:.4f} (required {min_recall:.4f})",
    )


def describe_failures(checks: list[Check]) -> str:
    return "; ".join(f"{c.name}: {c.message}" for c in checks if not c.passed)


def threshold_problem(
    max_shrink: float, max_rejected_fraction: float, min_recall: float, min_ondevice_recall: float = 0.0
) -> str | None:
    """What is wrong with the gate's thresholds, in flag terms (None: nothing)."""
    for flag, value in (
        ("--max_shrink", max_shrink),
        ("--max_rejected_fraction", max_rejected_fraction),
        ("--min_recall", min_recall),
        ("--min_ondevice_recall", min_ondevice_recall),
    ):
        if not 0 <= value <= 1:
            return f"{flag} must be in [0, 1], got {value}"
    return None


def catalog_checks(
    summary: dict[str, Any], previous_items: int | None, max_shrink: float, max_rejected_fraction: float
) -> list[Check]:
    """The checks that need only the run's embeddings (the index is built only when they pass)."""
    return [
        shrink_check(summary["embedded"], previous_items, max_shrink),
        rejected_check(summary["rejected"], summary["matched"], max_rejected_fraction),
    ]
