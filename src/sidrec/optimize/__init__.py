"""Optimization strategies: a bad-case report -> config overrides that the training stages honour."""

from sidrec.optimize.strategies import (
    REGISTRY,
    STRATEGIES,
    BadcaseReport,
    Choice,
    apply_strategies,
    auto_select,
    optimize,
    parse_report,
    read_report,
)

__all__ = ["REGISTRY", "STRATEGIES", "BadcaseReport", "Choice", "apply_strategies", "auto_select", "optimize",
           "parse_report", "read_report"]
