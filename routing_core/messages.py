"""What travels between the API and the workers: a problem to solve and the answer.

The worker sees only the optimisation problem (matrix, windows, service times, start and
end rules), never the road graph. Encoding: one JSON object; arrays as base64 of
little-endian float32 (travel times in seconds: float32 keeps ~1 ms at an hour, and the
API re-evaluates every answer on its own float64 matrix).
"""

from __future__ import annotations

import base64
import json
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from routing_core.problem import EndKind, Problem


class MessageError(ValueError):
    """A message that cannot be decoded."""


def _pack(arr: np.ndarray) -> dict[str, Any]:
    a = np.ascontiguousarray(arr, dtype="<f4")
    return {"shape": list(a.shape), "b64": base64.b64encode(a.tobytes()).decode("ascii")}


def _unpack(obj: dict[str, Any]) -> np.ndarray:
    raw = base64.b64decode(obj["b64"])
    return np.frombuffer(raw, dtype="<f4").reshape(obj["shape"]).astype(np.float64)


@dataclass(frozen=True)
class SolveRequest:
    """One problem for a worker. ``deadline`` is Unix time (seconds) after which nobody waits."""

    request_id: str
    problem: Problem
    time_budget_ms: float
    deadline: float
    seed: int = 0
    enqueued_at: float = 0.0  # Unix time, set by the queue adapter

    def to_bytes(self) -> bytes:
        p = self.problem
        body = {
            "request_id": self.request_id, "time_budget_ms": self.time_budget_ms, "deadline": self.deadline,
            "seed": self.seed, "enqueued_at": self.enqueued_at,
            "matrix": _pack(p.matrix), "earliest": _pack(p.earliest), "latest": _pack(p.latest),
            "service_s": _pack(p.service_s), "start": p.start, "end": p.end.value, "end_node": p.end_node,
            "coords": _pack(p.coords) if p.coords is not None else None,
        }  # fmt: skip
        return json.dumps(body, separators=(",", ":")).encode()

    @classmethod
    def from_bytes(cls, data: bytes) -> SolveRequest:
        try:
            body = json.loads(data)
            problem = Problem(
                matrix=_unpack(body["matrix"]), earliest=_unpack(body["earliest"]), latest=_unpack(body["latest"]),
                service_s=_unpack(body["service_s"]), start=int(body["start"]), end=EndKind(body["end"]),
                end_node=body["end_node"], coords=_unpack(body["coords"]) if body.get("coords") else None,
            )  # fmt: skip
            return cls(str(body["request_id"]), problem, float(body["time_budget_ms"]), float(body["deadline"]),
                       int(body.get("seed", 0)), float(body.get("enqueued_at", 0.0)))  # fmt: skip
        except (KeyError, TypeError, ValueError) as exc:
            raise MessageError(f"bad solve request: {exc}") from None


@dataclass(frozen=True)
class SolveReply:
    """A worker's answer: the visiting order (problem node indices), or an error, plus how it was made."""

    request_id: str
    order: tuple[int, ...] = ()
    error: str | None = None  # e.g. "deadline", "invalid", "internal: ..."
    worker: str = ""
    batch_size: int = 0
    backend: str = ""  # the model backend, or "none" when the plain search ran
    model_version: str = ""
    guided: bool = False  # the model's scores guided the search
    timings_ms: dict[str, float] = field(default_factory=dict)  # queue_wait, inference, search

    def to_bytes(self) -> bytes:
        body = {**self.__dict__, "order": list(self.order)}
        body["timings_ms"] = {k: (v if math.isfinite(v) else None) for k, v in self.timings_ms.items()}
        return json.dumps(body, separators=(",", ":")).encode()

    @classmethod
    def from_bytes(cls, data: bytes) -> SolveReply:
        try:
            body = json.loads(data)
            body["order"] = tuple(int(x) for x in body.get("order", ()))
            body["timings_ms"] = {k: float(v) for k, v in (body.get("timings_ms") or {}).items() if v is not None}
            return cls(**body)
        except (KeyError, TypeError, ValueError) as exc:
            raise MessageError(f"bad solve reply: {exc}") from None
