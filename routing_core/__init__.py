"""Domain types of the routing service: problems, routes and their evaluation (no framework imports)."""

from routing_core.problem import EndKind, Evaluation, Problem, evaluate

__all__ = ["EndKind", "Evaluation", "Problem", "evaluate"]
