"""Solve a batch of requests: one batched model call for all of them, then a search per request.

``BatchSolver.solve_batch`` is the blocking ``process`` function the ``Batcher`` runs in its
executor, in the monolith and in a worker process alike. N requests in, N replies out, in
order; an error travels in its own reply and never takes the others down with it.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from gnn_model.backends import Backend, FeatureBatch
from gnn_model.features import GraphFeatures, build_features, local_scores
from gnn_model.search import SearchParams, serving_stall, solve
from routing_core.messages import SolveReply, SolveRequest

log = logging.getLogger(__name__)

MIN_SHARE_MS = 5.0  # the least search budget a request of a full batch gets (see BatchSolver._share_ms)
MIN_GUIDED_NODES = 4  # smaller problems are solved exactly by the search alone: no model call
NO_BACKEND = "none"
# The reply's backend when the model should have guided a request but failed (the predict call
# raised, or its features could not be built): the plain search guided by k-nearest candidates ran.
FALLBACK_BACKEND = "fallback:knn"


@dataclass(frozen=True)
class SolverStats:
    """Counters since the solver was made."""

    batches: int
    requests: int
    guided: int
    deadline_misses: int
    errors: int
    backend_failures: int  # model calls (or feature builds) that raised
    fallbacks: int  # requests answered by the plain search because the model failed
    backend: str
    model_version: str


class BatchSolver:
    """Solve batches of ``SolveRequest`` with an optional model ``backend`` (None = plain search).

    Thread-safe: ``swap_backend`` may be called from any thread while a batch runs; each
    batch uses the backend it started with.

    When the model fails (its batched call raises, or one problem's features cannot be
    built) the requests it should have guided are still answered, by the plain search
    guided by k-nearest candidates, with ``backend = FALLBACK_BACKEND`` in their replies
    (and ``model_version`` of the model that failed), and counted in ``stats().fallbacks``.
    """

    def __init__(self, backend: Backend | None, worker_id: str, search_threads: int | None = None) -> None:
        """``search_threads``: searches of one batch run in parallel on this many threads (default: CPUs)."""
        self.worker_id = worker_id
        self._backend = backend
        self._lock = threading.Lock()
        threads = search_threads if search_threads is not None else (os.cpu_count() or 1)
        self._search_threads = threads
        self._search_pool = ThreadPoolExecutor(threads, thread_name_prefix="search") if threads > 1 else None
        self._batches = 0
        self._requests = 0
        self._guided = 0
        self._deadline_misses = 0
        self._errors = 0
        self._backend_failures = 0
        self._fallbacks = 0

    @property
    def backend(self) -> Backend | None:
        return self._backend

    def swap_backend(self, new: Backend | None) -> Backend | None:
        """Use ``new`` from the next batch on (model hot swap); returns the backend it replaces."""
        with self._lock:
            old, self._backend = self._backend, new
        log.info("model backend swapped: %s -> %s", _describe(old), _describe(new))
        return old

    def stats(self) -> SolverStats:
        backend = self._backend
        with self._lock:
            return SolverStats(
                batches=self._batches, requests=self._requests, guided=self._guided,
                deadline_misses=self._deadline_misses, errors=self._errors,
                backend_failures=self._backend_failures, fallbacks=self._fallbacks,
                backend=backend.name if backend is not None else NO_BACKEND,
                model_version=backend.version if backend is not None else "",
            )  # fmt: skip

    def solve_batch(self, requests: list[SolveRequest]) -> list[SolveReply]:
        """One reply per request, in order. Never raises."""
        try:
            return self._solve_batch(requests)
        except Exception as exc:  # a bug here must still answer every request
            log.exception("batch of %d failed", len(requests))
            with self._lock:
                self._errors += len(requests)
            return [self._reply(r, len(requests), error=f"internal: {exc}") for r in requests]

    # -- internals ---------------------------------------------------------------------

    def _solve_batch(self, requests: list[SolveRequest]) -> list[SolveReply]:
        size = len(requests)
        with self._lock:
            backend = self._backend
            self._batches += 1
            self._requests += size
        received = time.time()
        replies: list[SolveReply | None] = [None] * size
        queue_wait = [_queue_wait_ms(r, received) for r in requests]

        # 1. Expired requests: nobody waits for them any more.
        live: list[int] = []
        for i, r in enumerate(requests):
            if r.deadline <= received:
                replies[i] = self._deadline_reply(r, size, queue_wait[i])
            else:
                live.append(i)

        # 2. Features for the problems the model should see (per request: one bad problem fails alone).
        features: dict[int, GraphFeatures] = {}
        feature_ms: dict[int, float] = {}
        wanted: set[int] = set()  # requests the model should guide; those left unguided are fallbacks
        if backend is not None:
            for i in live:
                if requests[i].problem.n_nodes < MIN_GUIDED_NODES:
                    continue
                wanted.add(i)
                t0 = time.perf_counter()
                try:
                    features[i] = build_features(requests[i].problem)
                except Exception as exc:
                    with self._lock:
                        self._backend_failures += 1
                    log.warning("features of request %s failed: %s", requests[i].request_id, exc)
                feature_ms[i] = (time.perf_counter() - t0) * 1e3

        # 3. ONE model call for the whole batch.
        scores: dict[int, np.ndarray] = {}
        inference_ms = 0.0
        if backend is not None and features:
            order = list(features)
            t0 = time.perf_counter()
            try:
                out = backend.predict(FeatureBatch.of([features[i] for i in order]))
                if len(out) != len(order):
                    raise ValueError(f"backend returned {len(out)} score arrays for {len(order)} problems")
                for i, edge_scores in zip(order, out, strict=True):
                    scores[i] = local_scores(features[i], np.asarray(edge_scores, dtype=np.float64).ravel())
            except Exception as exc:
                scores.clear()
                with self._lock:
                    self._backend_failures += 1
                log.error("backend %s failed on a batch of %d; plain search instead: %s",
                          _describe(backend), len(order), exc, exc_info=True)  # fmt: skip
            inference_ms = (time.perf_counter() - t0) * 1e3

        # 4. A search per request, each within its own budget (and never past its deadline).
        # The compiled search releases the GIL, so the searches of a batch run on all cores.
        def search_one(i: int) -> None:
            r = requests[i]
            remaining_ms = (r.deadline - time.time()) * 1e3
            if remaining_ms <= 0:
                replies[i] = self._deadline_reply(r, size, queue_wait[i])
                return
            guided = i in scores
            timings = {"queue_wait": queue_wait[i], "inference": inference_ms if guided else 0.0}
            if i in feature_ms:
                timings["features"] = feature_ms[i]
            t0 = time.perf_counter()
            try:
                budget_ms = min(r.time_budget_ms, remaining_ms, self._share_ms(r.time_budget_ms, size))
                params = SearchParams(time_limit_ms=max(0.0, budget_ms), seed=r.seed,
                                      stall_iterations=serving_stall(r.problem.n_nodes))  # fmt: skip
                result = solve(r.problem, params, scores=scores[i] if guided else None)
            except Exception as exc:
                log.warning("search for request %s failed: %s", r.request_id, exc)
                with self._lock:
                    self._errors += 1
                timings["search"] = (time.perf_counter() - t0) * 1e3
                replies[i] = self._reply(r, size, error=f"internal: {exc}", timings=timings)
                return
            timings["search"] = (time.perf_counter() - t0) * 1e3
            if guided and backend is not None:
                with self._lock:
                    self._guided += 1
                replies[i] = self._reply(r, size, order=result.order, timings=timings, backend=backend.name,
                                         model_version=backend.version, guided=True)  # fmt: skip
            elif i in wanted and backend is not None:
                with self._lock:
                    self._fallbacks += 1
                replies[i] = self._reply(r, size, order=result.order, timings=timings, backend=FALLBACK_BACKEND,
                                         model_version=backend.version)  # fmt: skip
            else:
                replies[i] = self._reply(r, size, order=result.order, timings=timings)

        if len(live) > 1 and self._search_pool is not None:
            list(self._search_pool.map(search_one, live))
        else:
            for i in live:
                search_one(i)
        return [rep if rep is not None else self._reply(requests[k], size, error="internal: no reply")
                for k, rep in enumerate(replies)]  # fmt: skip

    def _share_ms(self, budget_ms: float, size: int) -> float:
        """Under backlog a batch shares its budget: its searches, ``threads`` at a time, end within about
        one budget, so a full batch costs one budget of latency, not ``size / threads`` of them.
        Each still gets at least ``MIN_SHARE_MS`` (or its whole budget, if smaller)."""
        share = budget_ms * self._search_threads / max(1, size)
        return max(share, min(budget_ms, MIN_SHARE_MS))

    def _deadline_reply(self, request: SolveRequest, size: int, queue_wait_ms: float) -> SolveReply:
        with self._lock:
            self._deadline_misses += 1
        return self._reply(request, size, error="deadline", timings={"queue_wait": queue_wait_ms})

    def _reply(self, request: SolveRequest, size: int, *, order: tuple[int, ...] = (), error: str | None = None,
               timings: dict[str, float] | None = None, backend: str = NO_BACKEND, model_version: str = "",
               guided: bool = False) -> SolveReply:  # fmt: skip
        return SolveReply(
            request_id=request.request_id, order=order, error=error, worker=self.worker_id, batch_size=size,
            backend=backend, model_version=model_version, guided=guided, timings_ms=dict(timings or {}),
        )  # fmt: skip


def _queue_wait_ms(request: SolveRequest, now: float) -> float:
    """Milliseconds since the queue adapter stamped the request (0 when it was never stamped)."""
    if request.enqueued_at <= 0:
        return 0.0
    return max(0.0, (now - request.enqueued_at) * 1e3)


def _describe(backend: Backend | None) -> str:
    return NO_BACKEND if backend is None else f"{backend.name} {backend.version}"
