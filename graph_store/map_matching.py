"""Map matching: a GPS trace onto the road graph, with a hidden Markov model (Newson & Krumm 2009).

States. For each fix, every road within its search radius gives a candidate road position
(its closest point, ``SegmentIndex.within``); a two-way road gives two states, one per driving
direction, so a matched path always drives edges the way they may be driven.

Emission. Gaussian on the fix's distance to the candidate: ``log p = -0.5 (d / sigma)^2``.
``sigma`` is the fix's GPS standard deviation in metres: its entry of ``radiuses`` (OSRM's
meaning of ``radiuses`` in ``match``), else ``DEFAULT_SIGMA_M`` = 5 m (OSRM's default; Newson
and Krumm fitted 4.07 m on their data). Candidates are searched within
``max(SEARCH_FACTOR * sigma, MIN_SEARCH_RADIUS_M)``, at most ``max_candidates`` roads per fix.

Transition. Exponential on how much the road distance between two candidates differs from the
great-circle distance between their fixes: ``log p = -|route_m - gc_m| / beta``. Road distances
are SHORTEST-DISTANCE paths (not the fastest paths the router answers with): a second CCH
customised with edge lengths in decimetres, cached per graph (``distance_cch``), one
many-to-many query per pair of consecutive fixes. ``beta`` grows with the fixes' noise:
``max(BETA_MIN_M, BETA_PER_SIGMA * sigma)``, the mean of the two fixes' sigmas.

Moving backwards. A later candidate behind an earlier one on the same directed edge, by no more
than ``JITTER_SIGMAS * sigma``, is GPS noise of a vehicle that moved little: its road distance
is 0 (so it pays the fixes' whole great-circle distance, and a moving trace prefers driving
forwards) and the matched path waits where it is; without this, projections that swap order
on a one-way street would force a drive round the block. Only on one edge: across a node a
wait would let the path take back a turn it has made (behind the turn, then down the other
branch); there the next edge's start, a candidate of the fix too, plays that part. Farther back, the path must drive round. A
turn back onto the same road (state on edge e, then on e's reverse) is a U-turn; it only
happens at the edge's end node and pays ``UTURN_PENALTY_M`` on top of its distance, so the
trace itself has to show it.

Breaks. A fix with no road in reach is left out (``None`` in ``tracepoints``). Where no
transition is possible (no path, a detour over ``MAX_DETOUR_M``, faster than
``MAX_SPEED_MPS`` when there are timestamps) or, with ``gaps="split"``, where two timestamps
are more than ``max_gap_s`` apart, the trace splits into sub-matchings, as OSRM does; a
sub-matching of one fix is dropped.

Output. Per sub-matching: the matched fixes, the directed edges driven (the first entered and
the last left part way), each with the time it was entered and left, interpolated along the
path between the fixes' timestamps (without timestamps, fix i is at time i), and a confidence:
the mean posterior probability (forward-backward) of the chosen candidate over its fixes.
"""

from __future__ import annotations

import threading
import weakref
from dataclasses import dataclass

import numpy as np
import pyroutingkit

from graph_store.geo import haversine_m
from graph_store.routing_graph import RoadGraph, RoutingSnapshot

DEFAULT_SIGMA_M = 5.0
SEARCH_FACTOR = 4.0
MIN_SEARCH_RADIUS_M = 25.0
MAX_CANDIDATES = 16
BETA_MIN_M = 5.0
BETA_PER_SIGMA = 1.0
UTURN_PENALTY_M = 50.0
MAX_DETOUR_M = 2000.0
MAX_SPEED_MPS = 60.0
MAX_GAP_S = 60.0
JITTER_SIGMAS = 3.0
_INF_WEIGHT = int(pyroutingkit.INF_WEIGHT)
_DM = 10.0  # distance-CCH weights: decimetres

_dist_cch: weakref.WeakKeyDictionary[RoadGraph, pyroutingkit.CCH] = weakref.WeakKeyDictionary()
_dist_lock = threading.Lock()


def distance_cch(graph: RoadGraph) -> pyroutingkit.CCH:
    """The graph's CCH customised with edge lengths (decimetres, at least 1); built once per graph."""
    with _dist_lock:
        cch = _dist_cch.get(graph)
        if cch is None:
            cch = graph.new_cch(np.maximum(1, np.round(graph.edge_length_m * _DM)).astype(np.int64))
            _dist_cch[graph] = cch
        return cch


@dataclass(frozen=True)
class MatchedPoint:
    """A fix on its road: ``index`` in the input trace, position ``fraction`` along directed ``edge``."""

    index: int
    edge: int
    fraction: float
    lat: float
    lon: float
    distance_m: float  # from the fix to the matched position
    time: float
    alternatives: int  # other candidates with a posterior probability of 1% or more


@dataclass(frozen=True)
class EdgeTraversal:
    """One directed edge driven from fraction ``enter_fraction`` to ``exit_fraction`` of its length
    (0 and 1 except where the sub-matching starts or ends on it), entered at ``enter_ts``, left at
    ``exit_ts`` (interpolated from the fixes' timestamps); ``length_m`` is the whole edge's length."""

    edge: int
    enter_fraction: float
    exit_fraction: float
    enter_ts: float
    exit_ts: float
    length_m: float

    @property
    def covered(self) -> float:
        return self.exit_fraction - self.enter_fraction

    @property
    def covered_m(self) -> float:
        return self.covered * self.length_m


@dataclass(frozen=True)
class Pieces:
    """A path as consecutive edge pieces: piece i drives ``edge[i]`` from fraction ``f0[i]`` to
    ``f1[i]`` (``length_m[i]`` metres), from time ``t0[i]`` to ``t1[i]``, between matched fixes
    ``leg[i]`` and ``leg[i] + 1``."""

    leg: np.ndarray
    edge: np.ndarray
    f0: np.ndarray
    f1: np.ndarray
    t0: np.ndarray
    t1: np.ndarray
    length_m: np.ndarray


@dataclass(frozen=True)
class SubMatching:
    points: tuple[MatchedPoint, ...]
    edges: tuple[EdgeTraversal, ...]
    pieces: Pieces
    confidence: float
    distance_m: float

    @property
    def leg_distances_m(self) -> np.ndarray:
        """Metres driven between consecutive matched fixes."""
        p = self.pieces
        return np.bincount(p.leg, weights=p.length_m, minlength=len(self.points) - 1)


@dataclass(frozen=True)
class MatchResult:
    """Sub-matchings in trace order; ``tracepoints[i]`` is (sub-matching, position in it) of fix i,
    or None where the fix was not matched."""

    matchings: tuple[SubMatching, ...]
    tracepoints: tuple[tuple[int, int] | None, ...]


@dataclass(frozen=True)
class _States:
    """Directed candidate states of one fix."""

    edge: np.ndarray
    fraction: np.ndarray
    lat: np.ndarray
    lon: np.ndarray
    distance_m: np.ndarray
    emission: np.ndarray  # log


def match_trace(
    snapshot: RoutingSnapshot | RoadGraph,
    lat: np.ndarray,
    lon: np.ndarray,
    timestamps: np.ndarray | None = None,
    radiuses: np.ndarray | None = None,
    *,
    max_candidates: int = MAX_CANDIDATES,
    gaps: str = "split",
    max_gap_s: float = MAX_GAP_S,
    beta_m: float | None = None,
    uturn_penalty_m: float = UTURN_PENALTY_M,
) -> MatchResult:
    """Match a trace (degrees; ``timestamps`` in seconds, increasing; ``radiuses`` = per-fix GPS
    standard deviation in metres, NaN or None for the default) to the road graph.
    ``gaps="split"`` splits at timestamp gaps over ``max_gap_s``; ``"ignore"`` never does.
    ``beta_m`` fixes the transition scale instead of deriving it from sigma."""
    graph = snapshot.graph if isinstance(snapshot, RoutingSnapshot) else snapshot
    lat = np.atleast_1d(np.asarray(lat, dtype=np.float64))
    lon = np.atleast_1d(np.asarray(lon, dtype=np.float64))
    n = lat.size
    if lon.size != n:
        raise ValueError("lat and lon differ in length")
    has_time = timestamps is not None
    times = np.arange(n, dtype=np.float64) if timestamps is None else np.asarray(timestamps, dtype=np.float64)
    if times.size != n:
        raise ValueError("timestamps differ in length from the coordinates")
    if n > 1 and np.any(np.diff(times) <= 0):
        raise ValueError("timestamps must increase")
    sigma = np.full(n, DEFAULT_SIGMA_M)
    if radiuses is not None:
        r = np.asarray(radiuses, dtype=np.float64)
        if r.size != n:
            raise ValueError("radiuses differ in length from the coordinates")
        sigma = np.where(np.isfinite(r), r, DEFAULT_SIGMA_M)
        if np.any(sigma <= 0):
            raise ValueError("radiuses must be > 0")
    if gaps not in ("split", "ignore"):
        raise ValueError("gaps must be 'split' or 'ignore'")
    search = np.maximum(SEARCH_FACTOR * sigma, MIN_SEARCH_RADIUS_M)
    states = _candidate_states(graph, lat, lon, sigma, search, max_candidates)
    cch = distance_cch(graph)

    # Viterbi over chains of fixes with candidates; a chain ends where no transition is possible.
    chains: list[list[int]] = []  # fix indices
    chain_scores: list[list[np.ndarray]] = []
    chain_back: list[list[np.ndarray]] = []
    chain_trans: list[list[np.ndarray]] = []
    prev = -1
    for i in range(n):
        st = states[i]
        if st is None:
            continue
        before = states[prev] if prev >= 0 else None
        if before is not None and not (gaps == "split" and times[i] - times[prev] > max_gap_s):
            dt = times[i] - times[prev] if has_time else None
            trans = _transition(graph, cch, before, st, lat, lon, prev, i, sigma, search, dt,
                                beta_m, uturn_penalty_m)  # fmt: skip
            total = chain_scores[-1][-1][:, None] + trans
            back = np.argmax(total, axis=0)
            best = total[back, np.arange(st.edge.size)]
            if np.isfinite(best).any():
                chains[-1].append(i)
                chain_scores[-1].append(best + st.emission)
                chain_back[-1].append(back)
                chain_trans[-1].append(trans)
                prev = i
                continue
        chains.append([i])
        chain_scores.append([st.emission.copy()])
        chain_back.append([])
        chain_trans.append([])
        prev = i

    matchings: list[SubMatching] = []
    tracepoints: list[tuple[int, int] | None] = [None] * n
    for fixes, scores, backs, transes in zip(chains, chain_scores, chain_back, chain_trans, strict=True):
        if len(fixes) < 2:
            continue
        chosen = np.empty(len(fixes), dtype=np.int64)
        chosen[-1] = int(np.argmax(scores[-1]))
        for k in range(len(fixes) - 1, 0, -1):
            chosen[k - 1] = backs[k - 1][chosen[k]]
        chain = [st for i in fixes if (st := states[i]) is not None]
        posterior = _posteriors(chain, transes)
        m = len(matchings)
        for k, i in enumerate(fixes):
            tracepoints[i] = (m, k)
        matchings.append(_build(graph, cch, fixes, chain, chosen, posterior, times, sigma))
    return MatchResult(tuple(matchings), tuple(tracepoints))


def edge_traversals(result: MatchResult) -> list[tuple[int, float, float, float]]:
    """(directed edge, entered at, left at, fraction of the edge covered) for every edge driven,
    in driving order over all sub-matchings: what a travel-time learner needs from a ping trace."""
    return [(t.edge, t.enter_ts, t.exit_ts, t.covered) for m in result.matchings for t in m.edges]


# -- internals ---------------------------------------------------------------------------


def _candidate_states(graph: RoadGraph, lat: np.ndarray, lon: np.ndarray, sigma: np.ndarray, search: np.ndarray,
                      max_candidates: int) -> list[_States | None]:  # fmt: skip
    cand = graph._segments.within(lat, lon, search, max_candidates)
    rev = graph.reverse_edge[cand.edge]
    two_way = rev >= 0
    # Each road position once per direction it may be driven.
    edge = np.concatenate((cand.edge, rev[two_way]))
    frac = np.concatenate((cand.fraction, 1.0 - cand.fraction[two_way]))
    row = np.concatenate((np.arange(cand.edge.size), np.flatnonzero(two_way)))
    order = np.lexsort((np.arange(row.size), cand.point[row]))
    edge, frac, row = edge[order], frac[order], row[order]
    point = cand.point[row]
    offsets = np.searchsorted(point, np.arange(lat.size + 1), side="left")
    dist = cand.distance_m[row]
    emission = -0.5 * (dist / sigma[point]) ** 2
    out: list[_States | None] = []
    for i in range(lat.size):
        a, b = int(offsets[i]), int(offsets[i + 1])
        if a == b:
            out.append(None)
            continue
        r = row[a:b]
        out.append(_States(edge[a:b], frac[a:b], cand.lat[r], cand.lon[r], dist[a:b], emission[a:b]))
    return out


def _transition(graph: RoadGraph, cch: pyroutingkit.CCH, a: _States, b: _States, lat: np.ndarray, lon: np.ndarray,
                i: int, j: int, sigma: np.ndarray, search: np.ndarray, dt: float | None, beta_m: float | None,
                uturn_penalty_m: float) -> np.ndarray:  # fmt: skip
    """Log transition probabilities [a states, b states] from fix i to fix j (-inf: impossible)."""
    route = _route_distances(graph, cch, a, b)
    la = graph.edge_length_m[a.edge][:, None]
    fa, fb = a.fraction[:, None], b.fraction[None, :]
    s = 0.5 * (sigma[i] + sigma[j])
    behind = (a.edge[:, None] == b.edge[None, :]) & (fb < fa) & ((fa - fb) * la <= JITTER_SIGMAS * s)
    route = np.where(behind, 0.0, route)  # stood still: the fixes' distance is all noise
    uturn = graph.reverse_edge[a.edge][:, None] == b.edge[None, :]  # turning back at a's end node
    gc = float(haversine_m(lat[i], lon[i], lat[j], lon[j]))
    beta = beta_m if beta_m is not None else max(BETA_MIN_M, BETA_PER_SIGMA * s)
    logp = -np.abs(route - gc) / beta - np.where(uturn, uturn_penalty_m / beta, 0.0)
    impossible = ~np.isfinite(route) | (route - gc > MAX_DETOUR_M)
    if dt is not None:
        impossible |= route > MAX_SPEED_MPS * dt + 2.0 * (search[i] + search[j])
    return np.where(impossible, -np.inf, logp)


def _route_distances(graph: RoadGraph, cch: pyroutingkit.CCH, a: _States, b: _States) -> np.ndarray:
    """Shortest road distance (m) from each state of ``a`` to each of ``b``, driving each state's edge
    in its direction: the rest of a's edge, nodes to nodes, the start of b's edge; or straight
    along one edge when b lies ahead of a on it."""
    src = graph.edge_target[a.edge]
    dst = graph.edge_source[b.edge]
    us, s_inv = np.unique(src, return_inverse=True)
    ut, t_inv = np.unique(dst, return_inverse=True)
    core = cch.distances_many_to_many(us.astype(np.uint32), ut.astype(np.uint32)).astype(np.float64)
    core = np.where(core >= _INF_WEIGHT, np.inf, core / _DM)[np.ix_(s_inv, t_inv)]
    la = graph.edge_length_m[a.edge][:, None]
    lb = graph.edge_length_m[b.edge][None, :]
    fa, fb = a.fraction[:, None], b.fraction[None, :]
    route = (1.0 - fa) * la + core + fb * lb
    ahead = (a.edge[:, None] == b.edge[None, :]) & (fb >= fa)
    return np.where(ahead, (fb - fa) * la, route)


def _posteriors(states: list[_States], transes: list[np.ndarray]) -> list[np.ndarray]:
    """Forward-backward posterior probability of each state of each fix of one chain."""
    fwd = [states[0].emission - _logsumexp(states[0].emission)]
    for k, trans in enumerate(transes):
        x = _logsumexp_cols(fwd[-1][:, None] + trans) + states[k + 1].emission
        fwd.append(x - _logsumexp(x))
    bwd = [np.zeros(states[-1].edge.size)]
    for k in range(len(transes) - 1, -1, -1):
        x = _logsumexp_rows(transes[k] + (states[k + 1].emission + bwd[0])[None, :])
        bwd.insert(0, x - _logsumexp(x))
    out = []
    for f, b in zip(fwd, bwd, strict=True):
        x = f + b
        out.append(np.exp(x - _logsumexp(x)))
    return out


def _logsumexp(x: np.ndarray) -> float:
    m = float(np.max(x))
    if not np.isfinite(m):
        return m
    return m + float(np.log(np.sum(np.exp(x - m))))


def _logsumexp_cols(x: np.ndarray) -> np.ndarray:
    m = np.max(x, axis=0)
    safe = np.where(np.isfinite(m), m, 0.0)
    with np.errstate(divide="ignore"):
        return safe + np.log(np.sum(np.exp(x - safe[None, :]), axis=0))


def _logsumexp_rows(x: np.ndarray) -> np.ndarray:
    m = np.max(x, axis=1)
    safe = np.where(np.isfinite(m), m, 0.0)
    with np.errstate(divide="ignore"):
        return safe + np.log(np.sum(np.exp(x - safe[:, None]), axis=1))


def _build(graph: RoadGraph, cch: pyroutingkit.CCH, fixes: list[int], states: list[_States], chosen: np.ndarray,
           posterior: list[np.ndarray], times: np.ndarray, sigma: np.ndarray) -> SubMatching:  # fmt: skip
    """The chosen states' path as pieces and edge traversals."""
    lengths = graph.edge_length_m
    edges: list[int] = []
    f0s: list[float] = []
    f1s: list[float] = []
    legs: list[int] = []

    def add(e: int, a: float, b: float, leg: int) -> None:
        edges.append(e)
        f0s.append(a)
        f1s.append(b)
        legs.append(leg)

    node_paths: list[tuple[int, list[int]]] = []  # (position in the piece list, nodes) to fill in later
    st0 = states[0]
    prev_f = float(st0.fraction[chosen[0]])
    cur_edge, cur_f = int(st0.edge[chosen[0]]), prev_f
    for k in range(1, len(fixes)):
        st = states[k]
        e, f = int(st.edge[chosen[k]]), float(st.fraction[chosen[k]])
        # The same three cases as _transition, decided on the chosen states' own fractions; the
        # path's head (cur_f) never moves backwards.
        wait_m = JITTER_SIGMAS * 0.5 * (sigma[fixes[k - 1]] + sigma[fixes[k]])
        if e == cur_edge and f >= prev_f:  # ahead on the same edge
            add(e, cur_f, max(cur_f, f), k - 1)
            cur_f = max(cur_f, f)
        elif e == cur_edge and (prev_f - f) * lengths[e] <= wait_m:  # a little behind: wait
            add(e, cur_f, cur_f, k - 1)
        else:
            add(cur_edge, cur_f, 1.0, k - 1)
            u, v = int(graph.edge_target[cur_edge]), int(graph.edge_source[e])
            if u != v:
                node_paths.append((len(edges), _node_path(cch, u, v)))
                add(-1, 0.0, 1.0, k - 1)  # placeholder
            add(e, 0.0, f, k - 1)
            cur_edge, cur_f = e, f
        prev_f = f
    # Expand the placeholders into the whole edges along their node paths (one edge look-up for all).
    if node_paths:
        heads = np.concatenate([np.asarray(p[:-1], np.int64) for _, p in node_paths])
        tails = np.concatenate([np.asarray(p[1:], np.int64) for _, p in node_paths])
        middle = graph.edges_between(heads, tails).tolist()
        e_out: list[int] = []
        f0_out: list[float] = []
        f1_out: list[float] = []
        leg_out: list[int] = []
        at = used = 0
        for pos, nodes in node_paths:
            c = len(nodes) - 1
            e_out += edges[at:pos] + middle[used : used + c]
            f0_out += f0s[at:pos] + [0.0] * c
            f1_out += f1s[at:pos] + [1.0] * c
            leg_out += legs[at:pos] + [legs[pos]] * c
            at, used = pos + 1, used + c
        edges, f0s, f1s, legs = e_out + edges[at:], f0_out + f0s[at:], f1_out + f1s[at:], leg_out + legs[at:]
    edge = np.asarray(edges, dtype=np.int64)
    f0 = np.asarray(f0s, dtype=np.float64)
    f1 = np.asarray(f1s, dtype=np.float64)
    leg = np.asarray(legs, dtype=np.int64)
    length_m = (f1 - f0) * lengths[edge]
    t0, t1 = _piece_times(leg, length_m, times[np.asarray(fixes)])
    pieces = Pieces(leg, edge, f0, f1, t0, t1, length_m)
    points = []
    for k, i in enumerate(fixes):
        st, c = states[k], int(chosen[k])
        alternatives = int(np.count_nonzero(posterior[k] >= 0.01)) - int(posterior[k][c] >= 0.01)
        points.append(MatchedPoint(i, int(st.edge[c]), float(st.fraction[c]), float(st.lat[c]), float(st.lon[c]),
                                   float(st.distance_m[c]), float(times[i]), alternatives))  # fmt: skip
    confidence = float(np.mean([posterior[k][int(chosen[k])] for k in range(len(fixes))]))
    return SubMatching(tuple(points), _traversals(pieces, lengths), pieces, confidence, float(length_m.sum()))


def _node_path(cch: pyroutingkit.CCH, u: int, v: int) -> list[int]:
    dist, path = cch.query(u, v)
    if int(dist) >= _INF_WEIGHT:  # cannot happen for a transition Viterbi chose
        raise RuntimeError(f"no path between nodes {u} and {v}")
    return [int(p) for p in path]


def _piece_times(leg: np.ndarray, length: np.ndarray, fix_times: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Enter and leave times of each piece: the time between two fixes spread over their pieces
    by length (a leg of zero length: each of its pieces spans the whole interval)."""
    legs = fix_times.size - 1
    total = np.bincount(leg, weights=length, minlength=legs)
    cum = np.cumsum(length)
    start = np.concatenate(([0.0], cum[:-1]))
    leg_first = np.searchsorted(leg, np.arange(legs), side="left")
    before = start - start[leg_first[leg]]
    span = fix_times[1:] - fix_times[:-1]
    moving = total[leg] > 0
    share0 = np.where(moving, before / np.where(moving, total[leg], 1.0), 0.0)
    share1 = np.where(moving, (before + length) / np.where(moving, total[leg], 1.0), 1.0)
    t0 = fix_times[leg] + share0 * span[leg]
    t1 = fix_times[leg] + np.minimum(share1, 1.0) * span[leg]
    return t0, t1


def _traversals(p: Pieces, lengths: np.ndarray) -> tuple[EdgeTraversal, ...]:
    """Consecutive pieces of one edge that continue each other become one traversal."""
    out: list[EdgeTraversal] = []
    for e, a, b, t0, t1 in zip(p.edge.tolist(), p.f0.tolist(), p.f1.tolist(), p.t0.tolist(), p.t1.tolist(),
                               strict=True):  # fmt: skip
        last = out[-1] if out else None
        if last is not None and last.edge == e and abs(last.exit_fraction - a) < 1e-12:
            out[-1] = EdgeTraversal(e, last.enter_fraction, b, last.enter_ts, t1, last.length_m)
        else:
            out.append(EdgeTraversal(e, a, b, t0, t1, float(lengths[e])))
    return tuple(out)
