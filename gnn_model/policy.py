"""The route optimizer as the service uses it: model scores (when a model is given), then search."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from gnn_model.features import GraphFeatures, build_features, local_scores
from gnn_model.search import SearchParams, SearchResult, solve
from routing_core.problem import Problem

# A scorer maps one problem's candidate graph to one logit per candidate edge.
EdgeScoreFn = Callable[[GraphFeatures], np.ndarray]


def guided_solve(problem: Problem, params: SearchParams, scorer: EdgeScoreFn | None) -> SearchResult:
    """Search guided by ``scorer`` (GNN); without one, by k-nearest candidates (the baseline)."""
    if scorer is None or problem.n_nodes < 4:
        return solve(problem, params)
    features = build_features(problem)
    return solve(problem, params, scores=local_scores(features, scorer(features)))


def torch_scorer(model: object) -> EdgeScoreFn:
    """Eager PyTorch scoring of one problem (the reference backend)."""
    import torch

    def score(features: GraphFeatures) -> np.ndarray:
        with torch.no_grad():
            out = model(  # type: ignore[operator]
                torch.from_numpy(features.x), torch.from_numpy(features.edge_index),
                torch.from_numpy(features.edge_attr),
            )  # fmt: skip
        return out.numpy()

    return score
