"""Iterated local search for routes without time windows, compiled with numba (nogil).

The route is the same Hamiltonian path as in ``gnn_model.search``: position 0 is the start,
the last position the end, and no move touches either. Costs are read from an asymmetric
matrix ``D``; every move's delta is exact for asymmetric costs:

* Or-opt: a segment of 1-3 stops moves next to a candidate partner, forward or reversed (the
  reversed segment's inner legs are costed in the new direction);
* 2-opt: a stretch is reversed; its inner cost in the new direction comes from prefix sums
  of both directions (on a symmetric matrix the inner cost does not change and the sums are
  not kept);
* or-3opt (segment swap): two adjacent segments trade places, both keeping their direction,
  ``A B C D -> A C B D``. Three edges change and nothing is reversed, so one-way costs stay
  as they were inside both segments: the move for asymmetric road matrices. It generalises
  Or-opt to segments of any length.

Each stop taken from the work queue (don't-look bits) tries the moves that join it to one of
its candidates, where that new edge is shorter than the stop's edge it replaces (the gain
criterion of Lin-Kernighan); the best improving one is applied. Moves are applied in place
and only the stretch of positions they touch is rewritten, so a kick and its repair cost
time in proportion to what they change, not to the route's length: the walk keeps its
accepted route in a second array and, when a kick is rejected, restores only that stretch.

A kick is several random segment swaps around one random stop (a single swap is an or-3opt
move, which the local search would simply undo). The walk accepts a route up to
``accept`` worse than where it stands and goes back to the best route every few kicks.

The search state lives in plain arrays (``IlsState``) and the random stream is a seeded
xorshift generator in the state, so a run continues exactly where the previous call left it:
the result depends on the seed and the number of kicks only, never on how the kicks are
split into calls (the caller sizes calls by the clock).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numba import njit

MOVE_OR_OPT = 1
MOVE_TWO_OPT = 2
MOVE_OR_3OPT = 4
ALL_MOVES = MOVE_OR_OPT | MOVE_TWO_OPT | MOVE_OR_3OPT

# Slots of the options array the kernels read (IlsOptions.as_array).
_O_THIRD = 0
_O_SPAN = 1
_O_RESTART = 2
_O_NEAR_KICKS = 3
_O_SWAPS = 4
_O_MOVES = 5
_O_CLUSTER = 6


@dataclass(frozen=True)
class IlsOptions:
    """Knobs of the search (defaults tuned on road and Euclidean problems that are not the benchmark's;
    bench/search_tuning.py). Passed to the kernels as an array, so trying values needs no recompiling."""

    third_cut_candidates: int = 4  # candidates tried for the third cut of an or-3opt move
    kick_span: int = 50  # positions a window kick's three cuts lie within
    restart_every: int = 16  # kicks after which the walk goes back to the best route (if it stands on a worse one)
    near_kicks_per_mille: int = 500  # share of kicks cut next to a stop and its candidates (else in a window)
    swaps_per_kick: int | None = None  # segment swaps per kick; None: one per 8 stops, 2 to 10
    moves: int = ALL_MOVES  # MOVE_* bits: the moves the local search tries
    clustered: bool = True  # the swaps of one kick lie around one random stop (else anywhere in the route)

    def __post_init__(self) -> None:
        for name, least in (("third_cut_candidates", 0), ("kick_span", 3), ("restart_every", 1),
                            ("swaps_per_kick", 1)):  # fmt: skip
            if getattr(self, name) is not None and getattr(self, name) < least:
                raise ValueError(f"{name} must be >= {least}, got {getattr(self, name)}")
        if not 0 <= self.near_kicks_per_mille <= 1000:
            raise ValueError(f"near_kicks_per_mille must be in [0, 1000], got {self.near_kicks_per_mille}")
        if not 0 <= self.moves <= ALL_MOVES:
            raise ValueError(f"moves must be a combination of the MOVE_* bits, got {self.moves}")

    def as_array(self, n_stops: int) -> np.ndarray:
        # Small routes get fewer swaps: the same perturbation for less repair work, and the
        # serving stall limit (kicks without improvement) is reached sooner.
        swaps = self.swaps_per_kick if self.swaps_per_kick is not None else min(10, max(2, n_stops // 8))
        return np.array(
            [self.third_cut_candidates, self.kick_span, self.restart_every, self.near_kicks_per_mille,
             swaps, self.moves, int(self.clustered)], np.int64,
        )  # fmt: skip


# st_i slots
_SINCE_RESTART = 0
_STALLED = 1
_LO = 2  # the stretch of positions rewritten since the walk's route was last saved
_HI = 3
_MOVES = 4  # counters: moves applied, stops looked at (for tuning)
_POPS = 5
# st_f slots
_CUR = 0
_BEST = 1


@dataclass
class IlsState:
    """Everything the search carries between calls (arrays the kernels update in place)."""

    tour: np.ndarray  # the route being worked on (position -> node)
    cur: np.ndarray  # the walk's accepted route
    best: np.ndarray  # the best route seen
    pos: np.ndarray  # node -> position in ``tour``
    fwd: np.ndarray  # prefix sums of leg costs along ``tour`` (asymmetric matrices only)
    bwd: np.ndarray  # the same against the direction of travel
    active: np.ndarray  # don't-look bits: True = look at this node again
    queue: np.ndarray
    buf: np.ndarray
    rng: np.ndarray  # xorshift64* state
    st_i: np.ndarray  # since-restart, stalled, rewritten lo, hi
    st_f: np.ndarray  # walk cost, best cost
    opts: np.ndarray  # the knobs (_O_* slots)
    sym: bool

    @property
    def best_cost(self) -> float:
        return float(self.st_f[_BEST])

    @property
    def stalled(self) -> int:
        """Kicks in a row that found no better route."""
        return int(self.st_i[_STALLED])


def is_symmetric(D: np.ndarray) -> bool:
    """Whether the legs among the stops (positions 1..n-2 of any route) cost the same both ways."""
    inner = D[1:-1, 1:-1]
    return bool(np.array_equal(inner, inner.T))


def new_state(
    D: np.ndarray, tour: np.ndarray, cand: np.ndarray, seed: int, options: IlsOptions | None = None
) -> IlsState:
    """Local optimum from ``tour`` (a path from position 0 to the last), ready for ``run_kicks``."""
    n = tour.size
    sym = is_symmetric(D)
    opts = (options or IlsOptions()).as_array(n - 2)
    st = IlsState(
        tour=tour.astype(np.int64).copy(), cur=np.empty(n, np.int64), best=np.empty(n, np.int64),
        pos=np.empty(n, np.int64), fwd=np.zeros(n), bwd=np.zeros(n), active=np.zeros(n, np.bool_),
        queue=np.empty(n + 16, np.int64), buf=np.empty(n, np.int64), rng=np.empty(1, np.uint64),
        st_i=np.zeros(6, np.int64), st_f=np.zeros(2), opts=opts, sym=sym,
    )  # fmt: skip
    _init(D, cand, st.tour, st.cur, st.best, st.pos, st.fwd, st.bwd, st.active, st.queue, st.buf, st.rng,
          st.st_i, st.st_f, opts, sym, np.uint64(seed & 0xFFFFFFFFFFFFFFFF))  # fmt: skip
    return st


def run_kicks(D: np.ndarray, cand: np.ndarray, st: IlsState, kicks: int, stall_limit: int, accept: float) -> int:
    """Up to ``kicks`` kicks (fewer once ``stall_limit`` kicks in a row found nothing better); returns how many."""
    done = _run(D, cand, st.tour, st.cur, st.best, st.pos, st.fwd, st.bwd, st.active, st.queue, st.buf, st.rng,
                st.st_i, st.st_f, st.opts, st.sym, kicks, stall_limit, accept)  # fmt: skip
    return int(done)


# -- random stream -------------------------------------------------------------------


@njit(cache=True, nogil=True)
def _next(rs):  # type: ignore[no-untyped-def]
    """xorshift64*: the next 64 random bits as a non-negative int64 (top 63 bits)."""
    x = rs[0]
    x ^= x >> np.uint64(12)
    x ^= x << np.uint64(25)
    x ^= x >> np.uint64(27)
    rs[0] = x
    return np.int64((x * np.uint64(2685821657736338717)) >> np.uint64(1))


@njit(cache=True, nogil=True)
def _randint(rs, m):  # type: ignore[no-untyped-def]
    """Uniform in [0, m)."""
    return _next(rs) % m


@njit(cache=True, nogil=True)
def _random(rs):  # type: ignore[no-untyped-def]
    """Uniform in [0, 1)."""
    return (_next(rs) >> 10) * (1.0 / 9007199254740992.0)


# -- bookkeeping ---------------------------------------------------------------------


@njit(cache=True, nogil=True)
def _refresh(D, tour, pos, fwd, bwd, lo, hi, sym):  # type: ignore[no-untyped-def]
    """Positions lo..hi were rewritten: fix ``pos`` there and the prefix sums from lo on."""
    for k in range(lo, hi + 1):
        pos[tour[k]] = k
    if sym:
        return
    n = tour.size
    last = n - 2
    start = max(lo, 1)
    for k in range(start, n):
        fwd[k] = fwd[k - 1] + D[tour[k - 1], tour[k]]
        # Backward legs into the start or out of the end are never used by a move, and they
        # hold the huge "forbidden" weight: left out, or differences would lose precision.
        back = 0.0 if (k - 1 == 0 or k - 1 == last) else D[tour[k], tour[k - 1]]
        bwd[k] = bwd[k - 1] + back


@njit(cache=True, nogil=True)
def _path_cost(D, tour):  # type: ignore[no-untyped-def]
    total = 0.0
    for k in range(tour.size - 1):
        total += D[tour[k], tour[k + 1]]
    return total


# -- moves: deltas and in-place application ------------------------------------------


@njit(cache=True, nogil=True)
def _swap_delta(D, tour, p, q, r):  # type: ignore[no-untyped-def]
    """Cost change of A B C D -> A C B D with B = tour[p:q], C = tour[q:r] (1 <= p < q < r <= n-1)."""
    a1 = tour[p - 1]
    b1 = tour[p]
    a2 = tour[q - 1]
    b2 = tour[q]
    a3 = tour[r - 1]
    b3 = tour[r]
    return D[a1, b2] + D[a3, b1] + D[a2, b3] - D[a1, b1] - D[a2, b2] - D[a3, b3]


@njit(cache=True, nogil=True)
def _apply_swap(tour, buf, p, q, r):  # type: ignore[no-untyped-def]
    """A B C D -> A C B D in place; rewrites positions p..r-1."""
    buf[: r - p] = tour[p:r]
    tour[p : p + r - q] = buf[q - p : r - p]
    tour[p + r - q : r] = buf[: q - p]


@njit(cache=True, nogil=True)
def _apply_reverse(tour, i, j):  # type: ignore[no-untyped-def]
    """Reverse tour[i..j] in place."""
    while i < j:
        t = tour[i]
        tour[i] = tour[j]
        tour[j] = t
        i += 1
        j -= 1


@njit(cache=True, nogil=True)
def _apply_oropt(tour, buf, i, s, x, rev):  # type: ignore[no-untyped-def]
    """Move tour[i:i+s] between tour[x] and tour[x+1] (x outside i-1..i+s-1); returns the rewritten (lo, hi)."""
    for q in range(s):
        buf[q] = tour[i + s - 1 - q] if rev else tour[i + q]
    if x > i + s - 1:
        for p in range(i + s, x + 1):
            tour[p - s] = tour[p]
        for q in range(s):
            tour[x - s + 1 + q] = buf[q]
        return i, x
    for p in range(i - 1, x, -1):
        tour[p + s] = tour[p]
    for q in range(s):
        tour[x + 1 + q] = buf[q]
    return x + 1, i + s - 1


# -- local search --------------------------------------------------------------------


@njit(cache=True, nogil=True, inline="always")
def _push(v, active, queue, qn):  # type: ignore[no-untyped-def]
    if not active[v] and qn < queue.size:
        active[v] = True
        queue[qn] = v
        qn += 1
    return qn


@njit(cache=True, nogil=True)
def _local_search(D, tour, pos, fwd, bwd, cand, active, queue, qn, buf, st_i, opts, sym, eps):  # type: ignore[no-untyped-def]
    """Improve ``tour`` in place until no candidate move helps, starting from the ``qn`` stops
    queued (their ``active`` bit set). Returns the total cost change; widens the rewritten
    stretch st_i[_LO], st_i[_HI].

    For each stop v taken from the queue, the best improving move that joins v to one of its
    candidates c is applied. A move is only tried where the new edge at v is shorter than
    v's edge it replaces (the gain criterion of Lin-Kernighan), which prunes most of them.
    The deltas are written out inline: numba does not inline small helpers that take arrays,
    and calling one per evaluated move made the search several times slower.
    """
    n = tour.size
    total = 0.0
    n3 = opts[_O_THIRD]
    moves = opts[_O_MOVES]
    use_or = (moves & MOVE_OR_OPT) != 0
    use_2opt = (moves & MOVE_TWO_OPT) != 0
    use_or3 = (moves & MOVE_OR_3OPT) != 0 and n3 > 0
    kc = cand.shape[1]
    moves_left = 50 * n * n + 1000  # a safety net: local search never spins for ever
    while qn > 0 and moves_left > 0:
        moves_left -= 1
        qn -= 1
        v = queue[qn]
        active[v] = False
        st_i[_POPS] += 1
        pv = pos[v]
        if pv == 0 or pv == n - 1:
            continue
        best_delta = -eps
        kind = 0
        m1 = m2 = m3 = 0
        mrev = False
        succ = tour[pv + 1]
        pred = tour[pv - 1]
        d_out = D[v, succ]
        d_in = D[pred, v]
        for ci in range(kc):
            c = cand[v, ci]
            pc = pos[c]
            g_in = d_in - D[c, v]  # c -> v instead of pred -> v
            g_out = d_out - D[v, c]  # v -> c instead of v -> succ
            if g_in <= 0.0 and g_out <= 0.0:
                continue
            # Or-opt: a segment of 1-3 stops with v at one end moves next to c, v joined to c:
            # after c (c -> v: v first, or last when reversed) or before c (v -> c: v last, or
            # first when reversed).
            for side in range(2 if use_or else 0):
                if (g_in if side == 0 else g_out) <= 0.0:
                    continue
                x = pc if side == 0 else pc - 1
                if x < 0 or x > n - 2:
                    continue
                a = tour[x]
                b = tour[x + 1]
                d_ab = D[a, b]
                for s in range(1, 4):
                    for rev in range(2 if s > 1 else 1):
                        i = pv if (side == 0) == (rev == 0) else pv - s + 1
                        if i < 1 or i + s - 1 > n - 2 or (i - 1 <= x and x <= i + s - 1):
                            continue
                        f = tour[i]
                        last = tour[i + s - 1]
                        pp = tour[i - 1]
                        qq = tour[i + s]
                        delta = D[pp, qq] - D[pp, f] - D[last, qq] - d_ab
                        if rev == 1:
                            delta += D[a, last] + D[f, b]
                            if not sym:
                                delta += (bwd[i + s - 1] - bwd[i]) - (fwd[i + s - 1] - fwd[i])
                        else:
                            delta += D[a, f] + D[last, b]
                        if delta < best_delta:
                            best_delta = delta
                            kind = 1
                            m1 = i
                            m2 = s
                            m3 = x
                            mrev = rev == 1
            # 2-opt: the new edge v -> c (reversing what lies between) or c -> v.
            for side in range(2 if use_2opt else 0):
                if side == 0:  # (v, v+1), (c, c+1) -> (v, c), (v+1, c+1)
                    if g_out <= 0.0:
                        continue
                    i = pv + 1
                    j = pc
                else:  # (c-1, c), (v-1, v) -> (c-1, v-1), (c, v)
                    if g_in <= 0.0:
                        continue
                    i = pc
                    j = pv - 1
                if i < 1 or j > n - 2 or j <= i:
                    continue
                a = tour[i - 1]
                b = tour[j + 1]
                delta = D[a, tour[j]] + D[tour[i], b] - D[a, tour[i]] - D[tour[j], b]
                if not sym:
                    delta += (bwd[j] - bwd[i]) - (fwd[j] - fwd[i])
                if delta < best_delta:
                    best_delta = delta
                    kind = 2
                    m1 = i
                    m2 = j
            # or-3opt, cuts p < q < r, new edges a1 -> b2, a3 -> b1, a2 -> b3 (a = tour[cut - 1],
            # b = tour[cut]). The edge v-c fixes two cuts (six ways: v is a1, a3 or a2 when
            # v -> c is shorter than v -> succ, b2, b1 or b3 when c -> v beats pred -> v); the
            # third cut comes from the candidates of the stops the other two new edges join.
            for cfg in range(6 if use_or3 else 0):
                if (g_out if cfg < 3 else g_in) <= 0.0:
                    continue
                p = q = r = -1
                free = 0
                if cfg == 0:  # v = a1, c = b2
                    if pc < pv + 2 or pc > n - 2:
                        continue
                    p, q, free = pv + 1, pc, 2
                elif cfg == 1:  # v = a3, c = b1
                    if pc < 1 or pc > pv - 1:
                        continue
                    p, r, free = pc, pv + 1, 1
                elif cfg == 2:  # v = a2, c = b3
                    if pc < pv + 2:
                        continue
                    q, r, free = pv + 1, pc, 0
                elif cfg == 3:  # v = b2, c = a1
                    if pc > pv - 2:
                        continue
                    p, q, free = pc + 1, pv, 2
                elif cfg == 4:  # v = b1, c = a3
                    if pc < pv + 1 or pc > n - 2:
                        continue
                    p, r, free = pv, pc + 1, 1
                else:  # v = b3, c = a2
                    if pc < 1 or pc > pv - 2:
                        continue
                    q, r, free = pc + 1, pv, 0
                for way in range(2):
                    if free == 2:  # r: a3 -> b1 (a3 near b1) or a2 -> b3 (b3 near a2)
                        anchor = tour[p] if way == 0 else tour[q - 1]
                    elif free == 1:  # q: a1 -> b2 (b2 near a1) or a2 -> b3 (a2 near b3)
                        anchor = tour[p - 1] if way == 0 else tour[r]
                    else:  # p: a1 -> b2 (a1 near b2) or a3 -> b1 (b1 near a3)
                        anchor = tour[q] if way == 0 else tour[r - 1]
                    for ti in range(min(n3, kc)):
                        pt = pos[cand[anchor, ti]]
                        if free == 2:
                            r = pt + 1 if way == 0 else pt
                            if r <= q or r > n - 1:
                                continue
                        elif free == 1:
                            q = pt if way == 0 else pt + 1
                            if q <= p or q >= r:
                                continue
                        else:
                            p = pt + 1 if way == 0 else pt
                            if p < 1 or p >= q:
                                continue
                        a1 = tour[p - 1]
                        b1 = tour[p]
                        a2 = tour[q - 1]
                        b2 = tour[q]
                        a3 = tour[r - 1]
                        b3 = tour[r]
                        delta = D[a1, b2] + D[a3, b1] + D[a2, b3] - D[a1, b1] - D[a2, b2] - D[a3, b3]
                        if delta < best_delta:
                            best_delta = delta
                            kind = 3
                            m1 = p
                            m2 = q
                            m3 = r
        if kind == 0:
            continue
        # The stops whose edges change look again.
        if kind == 1:
            for t in (tour[m1 - 1], tour[m1], tour[m1 + m2 - 1], tour[m1 + m2], tour[m3], tour[m3 + 1]):
                qn = _push(t, active, queue, qn)
            lo, hi = _apply_oropt(tour, buf, m1, m2, m3, mrev)
        elif kind == 2:
            for t in (tour[m1 - 1], tour[m1], tour[m2], tour[m2 + 1]):
                qn = _push(t, active, queue, qn)
            _apply_reverse(tour, m1, m2)
            lo, hi = m1, m2
        else:
            for t in (tour[m1 - 1], tour[m1], tour[m2 - 1], tour[m2], tour[m3 - 1], tour[m3]):
                qn = _push(t, active, queue, qn)
            _apply_swap(tour, buf, m1, m2, m3)
            lo, hi = m1, m3 - 1
        qn = _push(v, active, queue, qn)
        st_i[_MOVES] += 1
        _refresh(D, tour, pos, fwd, bwd, lo, hi, sym)
        st_i[_LO] = min(st_i[_LO], lo)
        st_i[_HI] = max(st_i[_HI], hi)
        total += best_delta
    return total


# -- kicks and the walk ----------------------------------------------------------------


@njit(cache=True, nogil=True)
def _kick_cuts(tour, pos, cand, rs, max_span, near, centre):  # type: ignore[no-untyped-def]
    """Three cuts p < q < r for one segment swap, close in space or in the route.

    ``near``: cut next to a stop and two of its candidate partners (close in space, possibly
    far apart in the route); else inside a window of ``max_span`` positions. With a
    ``centre`` stop (>= 0) the cuts lie around it (the stop or one of its candidates, the
    window over its position), else anywhere.
    """
    n = tour.size
    inner = n - 2  # movable positions 1..n-2
    k = cand.shape[1]
    if near:
        for _attempt in range(8):
            if centre < 0:
                v = tour[1 + _randint(rs, inner)]
            else:
                v = centre if _randint(rs, 2) == 0 else cand[centre, _randint(rs, k)]
            c1 = cand[v, _randint(rs, k)]
            c2 = cand[c1, _randint(rs, k)]
            a, b, c = pos[v], pos[c1], pos[c2]
            lo = min(a, min(b, c))
            hi = max(a, max(b, c))
            mid = a + b + c - lo - hi
            if lo >= 1 and hi <= n - 1 and lo < mid < hi:
                return lo, mid, hi
    span = min(inner, max_span)
    if centre < 0:
        lo = 1 + _randint(rs, inner - span + 1)
    else:
        lo = min(max(1, pos[centre] - _randint(rs, span)), inner - span + 1)
    p1 = lo + _randint(rs, span - 2)
    p2 = p1 + 1 + _randint(rs, lo + span - 1 - (p1 + 1))
    p3 = p2 + 1 + _randint(rs, lo + span - (p2 + 1))
    return p1, p2, p3


@njit(cache=True, nogil=True)
def _init(D, cand, tour, cur, best, pos, fwd, bwd, active, queue, buf, rs, st_i, st_f, opts, sym, seed):  # type: ignore[no-untyped-def]
    n = tour.size
    # splitmix64 of the seed: any seed (0 too) gives a well-mixed, non-zero xorshift state.
    z = seed + np.uint64(0x9E3779B97F4A7C15)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    z = z ^ (z >> np.uint64(31))
    rs[0] = z if z != np.uint64(0) else np.uint64(1)
    fwd[0] = 0.0
    bwd[0] = 0.0
    _refresh(D, tour, pos, fwd, bwd, 0, n - 1, sym)
    cost = _path_cost(D, tour)
    st_i[_LO] = n
    st_i[_HI] = -1
    for v in range(n):
        queue[v] = v
        active[v] = True
    _local_search(D, tour, pos, fwd, bwd, cand, active, queue, n, buf, st_i, opts, sym, 1e-9 * (1.0 + abs(cost)))
    cost = _path_cost(D, tour)
    cur[:] = tour
    best[:] = tour
    st_f[_CUR] = cost
    st_f[_BEST] = cost
    st_i[_SINCE_RESTART] = 0
    st_i[_STALLED] = 0


@njit(cache=True, nogil=True)
def _run(
    D, cand, tour, cur, best, pos, fwd, bwd, active, queue, buf, rs, st_i, st_f, opts, sym, kicks, stall_limit, accept
):  # type: ignore[no-untyped-def]
    """Kick + local search, up to ``kicks`` times or until ``stall_limit`` kicks in a row found no
    better route; the walk may step to a route up to ``accept`` (relative) worse than where it
    stands, and goes back to the best route every ``restart_every`` kicks. Returns the number of
    kicks made."""
    n = tour.size
    if n - 2 < 8:
        return 0
    done = 0
    eps = 1e-9 * (1.0 + abs(st_f[_BEST]))
    while done < kicks and st_i[_STALLED] < stall_limit:
        if st_i[_SINCE_RESTART] >= opts[_O_RESTART]:
            st_i[_SINCE_RESTART] = 0
            if st_f[_CUR] > st_f[_BEST]:
                tour[:] = best
                cur[:] = best
                _refresh(D, tour, pos, fwd, bwd, 0, n - 1, sym)
                st_f[_CUR] = st_f[_BEST]
        st_i[_LO] = n
        st_i[_HI] = -1
        delta = 0.0
        qn = 0
        # One kick: several segment swaps (one alone the or-3opt move would undo at once),
        # around one centre stop or scattered over the route.
        near = _randint(rs, 1000) < opts[_O_NEAR_KICKS]
        centre = tour[1 + _randint(rs, n - 2)] if opts[_O_CLUSTER] != 0 else -1
        for _s in range(opts[_O_SWAPS]):
            p, q, r = _kick_cuts(tour, pos, cand, rs, opts[_O_SPAN], near, centre)
            delta += _swap_delta(D, tour, p, q, r)
            _apply_swap(tour, buf, p, q, r)
            _refresh(D, tour, pos, fwd, bwd, p, r - 1, sym)
            st_i[_LO] = min(st_i[_LO], p)
            st_i[_HI] = max(st_i[_HI], r - 1)
            for x in (p - 1, p, p + r - q - 1, p + r - q, r - 1, r):
                qn = _push(tour[x], active, queue, qn)
        delta += _local_search(D, tour, pos, fwd, bwd, cand, active, queue, qn, buf, st_i, opts, sym, eps)
        cost = st_f[_CUR] + delta
        lo = st_i[_LO]
        hi = st_i[_HI]
        # Equal cost is accepted too: it lets the search walk across plateaus.
        if cost <= st_f[_CUR] * (1.0 + accept) + 1e-9:
            cur[lo : hi + 1] = tour[lo : hi + 1]
            st_f[_CUR] = cost
            if cost < st_f[_BEST] - eps:
                best[:] = tour
                cost = _path_cost(D, tour)  # exact again: no drift from summed deltas
                st_f[_CUR] = cost
                st_f[_BEST] = cost
                st_i[_STALLED] = 0
            else:
                st_i[_STALLED] += 1
        else:
            tour[lo : hi + 1] = cur[lo : hi + 1]
            _refresh(D, tour, pos, fwd, bwd, lo, hi, sym)
            st_i[_STALLED] += 1
        st_i[_SINCE_RESTART] += 1
        done += 1
    return done
