"""Route search: guided construction, then iterated local search, compiled with numba.

The route is a Hamiltonian path over a local matrix ``D`` whose first position is the
start and whose last is the end (the start again for ``return``, the end node for
``fixed``, a free virtual node for ``open``), so every move keeps both ends in place.

Without time windows the search is ``gnn_model.ils``: Or-opt, 2-opt and or-3opt (segment
swap) from candidate lists, moves applied in place, kicks of several segment swaps around
one stop. Candidate lists hold the k best partners of each node: by the model's edge scores,
or by travel time for the unguided baseline.

With time windows the objective is ``travel + LATE_PENALTY * lateness`` (lateness first) and
every move is evaluated exactly on the whole route: Or-opt (segments of 1-3 stops, forward or
reversed) and 2-opt from the candidate lists, with don't-look bits, and an iterated local
search that kicks the route with a random local double bridge (segment swap, no reversal).

Deterministic for a given seed and iteration count: the time budget is checked only between
calls into the compiled search, and what a call does depends on the seed and the kicks made
so far, not on when the clock was read, so a run that stops on iterations gives the same
route every time.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np
from numba import njit

from gnn_model import ils
from routing_core.problem import EndKind, Evaluation, Problem, evaluate

LATE_PENALTY = 1.0e6  # seconds of travel one second of lateness is worth (lateness first)
_BIG = 1.0e9  # stands in for inf inside the compiled code
KICKS_PER_ROUND = 16


@dataclass(frozen=True)
class SearchParams:
    """Search settings. ``time_limit_ms``, ``max_iterations`` and ``stall_iterations`` bound the ILS
    (the first reached stops it). ``stall_iterations``: stop after this many kicks in a row found
    nothing better (None: never; the budget is then always spent in full)."""

    time_limit_ms: float = 100.0
    max_iterations: int = 1_000_000
    stall_iterations: int | None = None
    seed: int = 0
    n_candidates: int = 14
    accept_worse: float = 0.003  # relative: the walk may step to a route this much worse (0 = never worse)

    def __post_init__(self) -> None:
        if not self.time_limit_ms >= 0:
            raise ValueError(f"time_limit_ms must be >= 0, got {self.time_limit_ms}")
        if self.max_iterations < 0:
            raise ValueError(f"max_iterations must be >= 0, got {self.max_iterations}")
        if self.stall_iterations is not None and self.stall_iterations < 1:
            raise ValueError(f"stall_iterations must be >= 1 or None, got {self.stall_iterations}")
        if not 0.0 <= self.accept_worse < 1.0:
            raise ValueError(f"accept_worse must be in [0, 1), got {self.accept_worse}")
        if self.n_candidates < 1:
            raise ValueError(f"n_candidates must be >= 1, got {self.n_candidates}")


@dataclass(frozen=True)
class SearchResult:
    order: tuple[int, ...]  # stops in visiting order (problem node indices)
    evaluation: Evaluation
    elapsed_ms: float
    iterations: int
    construction_cost: float


# -- compiled kernels ----------------------------------------------------------------


@njit(cache=True, nogil=True)
def _evaluate(D, tour, early, late, serv):  # type: ignore[no-untyped-def]
    travel = 0.0
    lateness = 0.0
    t = 0.0
    for k in range(tour.size - 1):
        a, b = tour[k], tour[k + 1]
        d = D[a, b]
        travel += d
        t += d
        if t < early[b]:
            t = early[b]
        if t > late[b]:
            lateness += t - late[b]
        t += serv[b]
    return travel, lateness


@njit(cache=True, nogil=True)
def _objective(D, tour, early, late, serv, has_tw):  # type: ignore[no-untyped-def]
    travel, lateness = _evaluate(D, tour, early, late, serv)
    if has_tw:
        return travel + LATE_PENALTY * lateness
    return travel


@njit(cache=True, nogil=True)
def _prefix(D, tour, fwd, bwd, pos):  # type: ignore[no-untyped-def]
    fwd[0] = 0.0
    bwd[0] = 0.0
    last = tour.size - 2
    for k in range(tour.size - 1):
        fwd[k + 1] = fwd[k] + D[tour[k], tour[k + 1]]
        # Backward legs into the start or out of the end are never used by a move, and
        # they hold the huge "forbidden" weight: leave them out, or differences of the
        # prefix sums would lose their precision (and the search could cycle on noise).
        back = 0.0 if (k == 0 or k == last) else D[tour[k + 1], tour[k]]
        bwd[k + 1] = bwd[k] + back
    for k in range(tour.size):
        pos[tour[k]] = k


@njit(cache=True, nogil=True)
def _apply_oropt(tour, i, s, x, rev, out):  # type: ignore[no-untyped-def]
    """Move tour[i:i+s] to sit between tour[x] and tour[x+1] (x outside the segment)."""
    n = tour.size
    k = 0
    for p in range(n):
        if i <= p < i + s:
            continue
        out[k] = tour[p]
        k += 1
        if p == x:
            for q in range(s):
                out[k] = tour[i + s - 1 - q] if rev else tour[i + q]
                k += 1


@njit(cache=True, nogil=True)
def _apply_2opt(tour, i, j, out):  # type: ignore[no-untyped-def]
    """Reverse tour[i..j] inclusive."""
    for p in range(tour.size):
        if i <= p <= j:
            out[p] = tour[i + j - p]
        else:
            out[p] = tour[p]


@njit(cache=True, nogil=True)
def _local_search(D, tour, cand, early, late, serv, has_tw, active):  # type: ignore[no-untyped-def]
    """Improve ``tour`` in place until no candidate move helps; returns its objective."""
    n = tour.size
    fwd = np.empty(n)
    bwd = np.empty(n)
    pos = np.empty(n, np.int64)
    scratch = np.empty_like(tour)
    _prefix(D, tour, fwd, bwd, pos)
    cur = _objective(D, tour, early, late, serv, has_tw)
    # An improvement must beat float noise relative to the route's size.
    eps = 1e-9 * (1.0 + abs(cur))
    moves_left = 100 * n * n + 1000  # a safety net: local search never spins for ever
    queue = np.empty(4 * n + 16, np.int64)
    qn = 0
    for v in range(n):
        if active[v]:
            queue[qn] = v
            qn += 1
    while qn > 0 and moves_left > 0:
        moves_left -= 1
        qn -= 1
        v = queue[qn]
        active[v] = False
        if pos[v] == 0 or pos[v] == n - 1:
            continue
        improved = False
        best_delta = -eps
        best_kind = 0
        bi = bj = bs = 0
        brev = False
        # Or-opt: segments that start or end at v.
        for s in range(1, 4):
            for which in range(2):
                i = pos[v] if which == 0 else pos[v] - s + 1
                if i < 1 or i + s - 1 > n - 2:
                    continue
                f = tour[i]
                last = tour[i + s - 1]
                p = tour[i - 1]
                q = tour[i + s]
                remove_gain = D[p, f] + D[last, q] - D[p, q]
                inner_f = fwd[i + s - 1] - fwd[i]
                inner_b = bwd[i + s - 1] - bwd[i]
                for c_idx in range(cand.shape[1]):
                    c = cand[v, c_idx]
                    if c < 0:
                        break
                    for side in range(2):
                        x = pos[c] if side == 0 else pos[c] - 1
                        if x < 0 or x + 1 > n - 1 or (i - 1 <= x <= i + s - 1):
                            continue
                        a = tour[x]
                        b = tour[x + 1]
                        for r in range(2):
                            if s == 1 and r == 1:
                                continue
                            if r == 0:
                                add = D[a, f] + D[last, b] - D[a, b]
                            else:
                                add = D[a, last] + D[f, b] - D[a, b] + inner_b - inner_f
                            delta = add - remove_gain
                            if has_tw:
                                _apply_oropt(tour, i, s, x, r == 1, scratch)
                                delta = _objective(D, scratch, early, late, serv, has_tw) - cur
                            if delta < best_delta:
                                best_delta = delta
                                best_kind = 1
                                bi, bs, bj, brev = i, s, x, r == 1
        # 2-opt: new edge v -> c (reverse between) or c -> v.
        for c_idx in range(cand.shape[1]):
            c = cand[v, c_idx]
            if c < 0:
                break
            for side in range(2):
                if side == 0:  # edges (v, v+1) and (c, c+1) -> (v, c), (v+1, c+1)
                    i = pos[v] + 1
                    j = pos[c]
                else:  # edges (c-1, c) and (v-1, v) -> (c-1, v-1), (c, v)
                    i = pos[c]
                    j = pos[v] - 1
                if i < 1 or j > n - 2 or j <= i:
                    continue
                a = tour[i - 1]
                b = tour[j + 1]
                old = D[a, tour[i]] + (fwd[j] - fwd[i]) + D[tour[j], b]
                new = D[a, tour[j]] + (bwd[j] - bwd[i]) + D[tour[i], b]
                delta = new - old
                if has_tw:
                    _apply_2opt(tour, i, j, scratch)
                    delta = _objective(D, scratch, early, late, serv, has_tw) - cur
                if delta < best_delta:
                    best_delta = delta
                    best_kind = 2
                    bi, bj = i, j
        touched = np.empty(6, np.int64)
        if best_kind == 1:
            touched[0] = tour[bi - 1]
            touched[1] = tour[bi + bs]
            touched[2] = tour[bj]
            touched[3] = tour[bj + 1]
            touched[4] = tour[bi]
            touched[5] = tour[bi + bs - 1]
            _apply_oropt(tour, bi, bs, bj, brev, scratch)
            improved = True
        elif best_kind == 2:
            touched[0] = tour[bi - 1]
            touched[1] = tour[bi]
            touched[2] = tour[bj]
            touched[3] = tour[bj + 1]
            touched[4] = v
            touched[5] = v
            _apply_2opt(tour, bi, bj, scratch)
            improved = True
        if improved:
            tour[:] = scratch
            _prefix(D, tour, fwd, bwd, pos)
            cur = _objective(D, tour, early, late, serv, has_tw)
            for t_node in touched:
                if not active[t_node] and qn < queue.size:
                    active[t_node] = True
                    queue[qn] = t_node
                    qn += 1
            if not active[v] and qn < queue.size:
                active[v] = True
                queue[qn] = v
                qn += 1
    return _objective(D, tour, early, late, serv, has_tw)


@njit(cache=True, nogil=True)
def _segment_swap(tour, out, p1, p2, p3):  # type: ignore[no-untyped-def]
    """A B C D -> A C B D with B = tour[p1:p2], C = tour[p2:p3]."""
    n = tour.size
    k = 0
    for p in range(p1):
        out[k] = tour[p]
        k += 1
    for p in range(p2, p3):
        out[k] = tour[p]
        k += 1
    for p in range(p1, p2):
        out[k] = tour[p]
        k += 1
    for p in range(p3, n):
        out[k] = tour[p]
        k += 1


@njit(cache=True, nogil=True)
def _kick(tour, out, pos, cand, max_span):  # type: ignore[no-untyped-def]
    """Double bridge (segment swap, no reversal) at cut points close in space or in the route.

    Half the kicks cut next to a random node and two of its candidate partners
    (close in space, possibly far apart in the route); the others cut inside a random
    window of ``max_span`` positions. Returns the cut points (p1, p2, p3).
    """
    n = tour.size
    inner = n - 2  # movable positions 1..n-2
    if np.random.random() < 0.5:
        for _attempt in range(8):
            v = tour[1 + np.random.randint(0, inner)]
            c1 = cand[v, np.random.randint(0, cand.shape[1])]
            c2 = cand[c1, np.random.randint(0, cand.shape[1])]
            a, b, c = pos[v], pos[c1], pos[c2]
            lo = min(a, min(b, c))
            hi = max(a, max(b, c))
            mid = a + b + c - lo - hi
            if lo >= 1 and hi <= n - 1 and lo < mid < hi:
                _segment_swap(tour, out, lo, mid, hi)
                return lo, mid, hi
    span = min(inner, max_span)
    lo = 1 + np.random.randint(0, inner - span + 1)
    p1 = lo + np.random.randint(0, span - 2)
    p2 = p1 + 1 + np.random.randint(0, lo + span - 1 - (p1 + 1))
    p3 = p2 + 1 + np.random.randint(0, lo + span - (p2 + 1))
    _segment_swap(tour, out, p1, p2, p3)
    return p1, p2, p3


@njit(cache=True, nogil=True)
def _seed(seed):  # type: ignore[no-untyped-def]
    np.random.seed(seed)


@njit(cache=True, nogil=True)
def _ils_round(D, best, cand, early, late, serv, has_tw, kicks, best_cost, accept):  # type: ignore[no-untyped-def]
    """``kicks`` rounds of kick + local search; ``best`` (and its cost) improve in place.

    The walk starts from ``best`` and may step to a route up to ``accept`` (relative)
    worse than where it stands, which lets it leave a local optimum; the best route seen
    is kept. Each round restarts the walk from the best route.
    """
    n = best.size
    cur = best.copy()
    cur_cost = best_cost
    trial = np.empty_like(best)
    active = np.zeros(n, np.bool_)
    pos = np.empty(n, np.int64)
    for k in range(n):
        pos[cur[k]] = k
    for _ in range(kicks):
        if n - 2 < 8:
            return best_cost
        p1, p2, p3 = _kick(cur, trial, pos, cand, 30)
        # The three new joins: before B's new place, between C and B, after B.
        mid = p1 + (p3 - p2)
        for p in (p1 - 1, p1, mid - 1, mid, p3 - 1, p3):
            if 0 <= p < n:
                active[trial[p]] = True
        cost = _local_search(D, trial, cand, early, late, serv, has_tw, active)
        # Equal cost is accepted too: it lets the search walk across plateaus.
        if cost <= cur_cost * (1.0 + accept) + 1e-9:
            cur_cost = cost
            cur[:] = trial
            for k in range(n):
                pos[cur[k]] = k
            if cost < best_cost - 1e-9:
                best_cost = cost
                best[:] = trial
    return best_cost


@njit(cache=True, nogil=True)
def _construct(D, scores, use_scores):  # type: ignore[no-untyped-def]
    """Greedy path from position 0 to the fixed last node: best-scored (or nearest) next node."""
    n = D.shape[0]
    tour = np.empty(n, np.int64)
    used = np.zeros(n, np.bool_)
    tour[0] = 0
    used[0] = True
    used[n - 1] = True
    cur = 0
    for k in range(1, n - 1):
        best = -1
        best_val = np.inf
        for c in range(1, n - 1):
            if used[c]:
                continue
            if use_scores:
                # Scored edges first (best score), then the nearest unscored node.
                val = -scores[cur, c] if scores[cur, c] > -1.0e8 else 1.0e12 + D[cur, c]
            else:
                val = D[cur, c]
            if val < best_val:
                best_val = val
                best = c
        tour[k] = best
        used[best] = True
        cur = best
    tour[n - 1] = n - 1
    return tour


# -- Python entry points -------------------------------------------------------------


@dataclass(frozen=True)
class LocalProblem:
    """A problem laid out for the kernels: position 0 = start, last = end."""

    D: np.ndarray
    nodes: np.ndarray  # local index -> problem node (-1 for a virtual end)
    early: np.ndarray
    late: np.ndarray
    serv: np.ndarray
    has_tw: bool


def localize(problem: Problem) -> LocalProblem:
    stops = problem.stops
    m = problem.matrix
    L = stops.size + 2
    idx = np.concatenate(([problem.start], stops))
    D = np.full((L, L), _BIG)
    core = np.minimum(m[np.ix_(idx, idx)], _BIG)
    D[: L - 1, : L - 1] = core
    if problem.end is EndKind.RETURN:
        D[: L - 1, L - 1] = np.minimum(m[idx, problem.start], _BIG)
        end_node = problem.start
    elif problem.end is EndKind.FIXED and problem.end_node is not None:
        D[: L - 1, L - 1] = np.minimum(m[idx, problem.end_node], _BIG)
        end_node = problem.end_node
    else:
        D[: L - 1, L - 1] = 0.0
        end_node = -1
    D[:, 0] = _BIG  # nothing re-enters the start
    D[L - 1, :] = _BIG  # nothing leaves the end
    np.fill_diagonal(D, 0.0)
    nodes = np.concatenate((idx, [end_node]))
    early = np.zeros(L)
    late = np.full(L, np.inf)
    serv = np.zeros(L)
    early[1 : L - 1] = problem.earliest[stops]
    late[1 : L - 1] = problem.latest[stops]
    serv[1 : L - 1] = problem.service_s[stops]
    return LocalProblem(D, nodes, early, late, serv, problem.has_windows)


def candidate_lists(D: np.ndarray, k: int, scores: np.ndarray | None = None) -> np.ndarray:
    """k partners per node: highest ``scores`` (either direction) or least travel time either way."""
    L = D.shape[0]
    k = max(1, min(k, L - 1))
    near = np.minimum(D, D.T)
    if scores is not None:
        sym = np.maximum(scores, scores.T)
        # Best-scored partners first; pairs the model did not score follow, nearest first.
        key = np.where(sym > -1.0e8, -sym, 1.0e12 + near)
    else:
        key = near
    key = key.astype(np.float64).copy()
    np.fill_diagonal(key, np.inf)
    return _k_smallest(key, k)


@njit(cache=True, nogil=True)
def _k_smallest(key, k):  # type: ignore[no-untyped-def]
    """Per row, the columns of the k least keys in increasing order, ties by column: the first k
    of a stable argsort, in O(n k) per row instead of O(n log n) (half a second at n = 2,392)."""
    L = key.shape[0]
    out = np.empty((L, k), np.int64)
    vals = np.empty(k)
    for i in range(L):
        m = 0
        for j in range(key.shape[1]):
            x = key[i, j]
            if m == k and not x < vals[k - 1]:
                continue
            t = m if m < k else k - 1
            while t > 0 and vals[t - 1] > x:  # strictly greater: an equal key keeps its earlier column first
                if t < k:
                    vals[t] = vals[t - 1]
                    out[i, t] = out[i, t - 1]
                t -= 1
            vals[t] = x
            out[i, t] = j
            if m < k:
                m += 1
    return out


def solve(problem: Problem, params: SearchParams | None = None, scores: np.ndarray | None = None) -> SearchResult:
    """Best route found within the budget; ``scores`` (local layout, higher = better edge) guide it."""
    params = params or SearchParams()
    t0 = time.perf_counter()
    lp = localize(problem)
    L = lp.D.shape[0]
    if L <= 3:  # at most one stop: the only route is the construction
        order = tuple(int(x) for x in lp.nodes[1 : L - 1])
        only = float(_objective(lp.D, np.arange(L, dtype=np.int64), lp.early, lp.late, lp.serv, lp.has_tw))
        return SearchResult(order, evaluate(problem, order), (time.perf_counter() - t0) * 1e3, 0, only)
    use_scores = scores is not None
    sc = scores if scores is not None else np.zeros((1, 1))
    tour = _construct(lp.D, sc, use_scores)
    construction = float(_objective(lp.D, tour, lp.early, lp.late, lp.serv, lp.has_tw))
    if lp.has_tw:
        # Windows: also try visiting in order of deadline, keep the better start.
        by_deadline = np.concatenate(([0], 1 + np.argsort(lp.late[1 : L - 1], kind="stable"), [L - 1]))
        if _objective(lp.D, by_deadline, lp.early, lp.late, lp.serv, True) < construction:
            tour = by_deadline.astype(np.int64)
    cand = candidate_lists(lp.D, params.n_candidates, scores)
    stall_limit = params.stall_iterations if params.stall_iterations is not None else params.max_iterations + 1
    deadline = t0 + params.time_limit_ms / 1000.0
    if lp.has_tw:
        tour, iterations = _windows_search(lp, tour, cand, params, stall_limit, deadline)
    else:
        tour, iterations = _travel_search(lp, tour, cand, params, stall_limit, deadline)
    order = tuple(int(x) for x in lp.nodes[tour[1 : L - 1]])
    evaluation = evaluate(problem, order)
    # The kernels keep a permutation; this guards the invariant. A route that must use a leg with
    # no path (a stop nobody can reach) is still returned: its evaluation says so (not valid, cost inf).
    if sorted(order) != problem.stops.tolist():
        raise RuntimeError(f"search produced an invalid route: {evaluation.problems}")
    return SearchResult(order, evaluation, (time.perf_counter() - t0) * 1e3, iterations, construction)


def _travel_search(
    lp: LocalProblem, tour: np.ndarray, cand: np.ndarray, params: SearchParams, stall_limit: int, deadline: float
) -> tuple[np.ndarray, int]:
    """The iterated local search of ``gnn_model.ils`` (no windows): calls sized by the clock, so the
    time check costs little at any n, while the route depends on the seed and kick count only."""
    st = ils.new_state(lp.D, tour, cand, params.seed)
    iterations = 0
    chunk = 8
    # One call should take about a fiftieth of the budget, within 0.2-5 ms.
    target = min(5e-3, max(2e-4, params.time_limit_ms / 1000.0 / 50.0))
    while iterations < params.max_iterations and st.stalled < stall_limit and lp.D.shape[0] - 2 >= 8:
        now = time.perf_counter()
        if now >= deadline:
            break
        kicks = min(chunk, params.max_iterations - iterations)
        done = ils.run_kicks(lp.D, cand, st, kicks, stall_limit, params.accept_worse)
        iterations += done
        spent = time.perf_counter() - now
        if done == kicks and spent > 0.0:
            rate = done / spent
            chunk = int(min(max(1.0, rate * min(target, deadline - time.perf_counter())), 4.0 * chunk, 1e6))
    return st.best, iterations


def _windows_search(
    lp: LocalProblem, tour: np.ndarray, cand: np.ndarray, params: SearchParams, stall_limit: int, deadline: float
) -> tuple[np.ndarray, int]:
    """With time windows: every move is evaluated on the whole route (lateness first), in
    fixed rounds of KICKS_PER_ROUND kicks."""
    L = lp.D.shape[0]
    active = np.ones(L, np.bool_)
    cost = _local_search(lp.D, tour, cand, lp.early, lp.late, lp.serv, True, active)
    _seed(params.seed)
    iterations = 0
    stalled = 0
    while (iterations < params.max_iterations and stalled < stall_limit and time.perf_counter() < deadline
           and L - 2 >= 8):  # fmt: skip
        kicks = min(KICKS_PER_ROUND, params.max_iterations - iterations)
        before = cost
        cost = _ils_round(lp.D, tour, cand, lp.early, lp.late, lp.serv, True, kicks, cost, params.accept_worse)
        iterations += kicks
        stalled = stalled + kicks if cost >= before - 1e-9 else 0
    return tour, iterations


def serving_stall(n_stops: int) -> int:
    """The stall limit a served request gets: the search stops once this many kicks in a row found
    nothing better. 20 per stop (at least 200): on road problems of 10-100 stops it loses nothing
    measurable against spending the whole budget (BENCHMARKS.md, "Serving"), and small problems
    are answered in a few milliseconds instead of the full budget."""
    return max(200, 20 * n_stops)


_warm = False


def warm_up() -> None:
    """Compile (or load from numba's cache) every kernel, so budgets measure search only."""
    global _warm
    if _warm:
        return
    rng = np.random.default_rng(0)
    xy = rng.random((12, 2))
    d = np.sqrt(((xy[:, None] - xy[None]) ** 2).sum(-1))
    tw = Problem(d, earliest=np.zeros(12), latest=np.full(12, 100.0))
    for p in (Problem(d), tw):
        lp = localize(p)
        solve(p, SearchParams(time_limit_ms=1e6, max_iterations=16))
        solve(p, SearchParams(time_limit_ms=1e6, max_iterations=16), scores=-lp.D)
    _warm = True


def nearest_neighbour(problem: Problem) -> SearchResult:
    """The plain nearest-neighbour route (a baseline), no improvement."""
    t0 = time.perf_counter()
    lp = localize(problem)
    L = lp.D.shape[0]
    tour = _construct(lp.D, np.zeros((1, 1)), False) if L > 2 else np.arange(L)
    order = tuple(int(x) for x in lp.nodes[tour[1 : L - 1]])
    return SearchResult(order, evaluate(problem, order), (time.perf_counter() - t0) * 1e3, 0, math.nan)
