"""Attack metrics with a given AUC interval, for tests of what the report marks "not resolvable"."""

from __future__ import annotations

from crosslm_secure.audit.roc import AttackMetrics, Interval


def auc_metrics(members: int, non_members: int, low: float, high: float) -> AttackMetrics:
    """Metrics whose every interval is ``[low, high]`` around its midpoint."""
    point = Interval((low + high) / 2, low, high)
    return AttackMetrics(point, {0.01: point, 0.001: point}, point, members, non_members)
