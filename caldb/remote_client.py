"""A client for the calibrationDbRemote access points that cannot cause a request storm.

Section 12.2 describes "an unusually high number of requests of the same parameters" from
ZMQ callers "with improper timeout error handling". The rules here that prevent it:

- every attempt uses a new REQ socket, closed with linger 0 after a timeout, so a request
  is sent exactly once per attempt and is never queued again by a stuck socket;
- the number of attempts is bounded (``max_attempts``); each goes to another access point
  (a random order, as "most calibration routines will randomly pick one", 12.1);
- between attempts the client waits a jittered, growing backoff, so many clients that
  time out together do not come back together;
- an answer that says "no" (no constant, version taken, bad request) is final and never
  retried: retrying cannot change it and would only repeat the load.

- the whole request has a time budget (``budget_s``): no attempt starts, and no backoff
  sleeps, beyond it, and the last attempt waits only for what is left of it.

With every access point down a request therefore sends at most ``max_attempts`` messages
and returns within ``budget_s`` (by default ``max_attempts * timeout_s`` plus the
backoffs, at most ``(max_attempts - 1) * backoff_cap_s``), plus the milliseconds that
opening and closing a socket takes.  After that it raises ``CalDBUnreachable`` with the
facility's wording, "Resource temporarily unavailable" (11.3).
"""

from __future__ import annotations

import random
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np
import zmq

from caldb._time import format_time, require_aware
from caldb._wire import array_from, array_meta, decode, encode, error_from_reply
from caldb.errors import BadRequest, CalDBError, CalDBUnreachable, VersionTaken
from caldb.versions import VersionInfo
from engine.registry import guard_transport

__all__ = ["RemoteClient", "Attempt"]


@dataclass(frozen=True)
class Attempt:
    """One try of one request: where it went and what came of it."""

    endpoint: str
    outcome: str  # "reply", "timeout" or "error: ..."


def endpoints_of(interface: str) -> list[str]:
    """``tcp://host:8015#8044`` (the webservice's --cal-db-interface, a port range) or
    comma-separated endpoints -> one ``tcp://host:port`` per access point."""
    out: list[str] = []
    for part in filter(None, (p.strip() for p in interface.split(","))):
        base, sep, last = part.rpartition("#")
        if not sep:
            out.append(part)
            continue
        head, _, first = base.rpartition(":")
        if not (head.startswith("tcp://") and first.isdigit() and last.isdigit()
                and int(first) <= int(last) and int(last) - int(first) < 1000):
            raise BadRequest(f"not an access point interface: {part!r} "
                             "(expected tcp://host:8015#8044)")
        out += [f"{head}:{port}" for port in range(int(first), int(last) + 1)]
    if not out:
        raise BadRequest(f"no access point in {interface!r}")
    return out


class RemoteClient:
    """``RemoteClient(endpoints, timeout_s=30)``; ``retrieve(...)`` and ``inject(...)``.

    - ``timeout_s``: how long one attempt waits for its answer;
    - ``max_attempts``: how many messages one request may send at most (one per attempt);
    - ``backoff_s``, ``backoff_cap_s``: the jittered pause before attempt n is drawn from
      ``[0, min(backoff_cap_s, backoff_s * 2 ** (n - 1))]``;
    - ``budget_s``: the most one request may take in all, attempts and pauses together
      (``None``: no bound beyond the attempts' own, see the module docstring).

    ``last_attempts`` lists the attempts of the latest request, for diagnosis and tests.
    """

    def __init__(
        self,
        endpoints: Sequence[str],
        timeout_s: float = 30.0,
        max_attempts: int = 3,
        backoff_s: float = 0.5,
        backoff_cap_s: float = 10.0,
        rng: random.Random | None = None,
        context: zmq.Context[zmq.Socket[bytes]] | None = None,
        budget_s: float | None = None,
    ) -> None:
        if not endpoints:
            raise BadRequest("give at least one access point endpoint")
        if timeout_s <= 0 or max_attempts < 1:
            raise BadRequest("timeout_s must be positive and max_attempts at least 1")
        if budget_s is not None and budget_s <= 0:
            raise BadRequest("budget_s must be positive (or None for no overall bound)")
        if backoff_s < 0 or backoff_cap_s < 0:
            raise BadRequest("backoff_s and backoff_cap_s cannot be negative")
        self.budget_s = budget_s
        self.endpoints = list(endpoints)
        self.timeout_s = timeout_s
        self.max_attempts = max_attempts
        self.backoff_s = backoff_s
        self.backoff_cap_s = backoff_cap_s
        self.rng = rng or random.Random()
        self.context = context or zmq.Context.instance()
        self.last_attempts: list[Attempt] = []

    def close(self) -> None:
        """Nothing to release: each attempt has its own socket (for `CalDB`'s callers)."""

    def _backoff(self, attempt: int) -> float:
        return self.rng.uniform(0.0, min(self.backoff_cap_s, self.backoff_s * 2 ** (attempt - 1)))

    def _once(self, endpoint: str, frames: list[bytes], request_id: str,
              wait_s: float) -> list[bytes] | None:
        sock = self.context.socket(zmq.REQ)
        sock.setsockopt(zmq.LINGER, 0)
        try:
            sock.connect(endpoint)
            sock.send_multipart(frames)
            deadline = time.monotonic() + wait_s
            while (left := deadline - time.monotonic()) > 0:
                if not sock.poll(int(left * 1000) + 1):
                    continue
                reply = sock.recv_multipart()
                try:
                    ours = bool(reply) and decode(reply[0]).get("request_id") == request_id
                except BadRequest:
                    ours = False
                return reply if ours else None  # not our answer: a failed attempt
            return None
        finally:
            sock.close(linger=0)  # never reuse a REQ socket that may still wait for a reply

    def request(
        self, header: Mapping[str, Any], data: np.ndarray | None = None
    ) -> tuple[dict[str, Any], list[bytes]]:
        """Send one request with bounded retries; return the reply header and extra frames."""
        request_id = uuid.uuid4().hex
        frames = [encode({**header, "request_id": request_id})]
        if data is not None:
            frames.append(np.ascontiguousarray(data).tobytes())
        order = self.rng.sample(self.endpoints, len(self.endpoints))
        self.last_attempts = []
        start = time.monotonic()
        end = None if self.budget_s is None else start + self.budget_s
        for attempt in range(self.max_attempts):
            if attempt:
                pause = self._backoff(attempt)
                if end is not None:
                    pause = min(pause, end - time.monotonic())
                if pause > 0:
                    time.sleep(pause)
            wait_s = self.timeout_s if end is None else min(self.timeout_s,
                                                             end - time.monotonic())
            if wait_s <= 0:
                break  # the budget is spent: no attempt that could not wait for its answer
            endpoint = order[attempt % len(order)]
            try:
                reply = self._once(endpoint, frames, request_id, wait_s)
            except zmq.ZMQError as exc:
                self.last_attempts.append(Attempt(endpoint, f"error: {exc}"))
                continue
            if reply is None:
                self.last_attempts.append(Attempt(endpoint, "timeout"))
                continue
            self.last_attempts.append(Attempt(endpoint, "reply"))
            head = decode(reply[0])
            if not head.get("success"):
                error = error_from_reply(head)
                if isinstance(error, VersionTaken) and attempt:
                    error = VersionTaken(
                        f"{error} (an earlier attempt that timed out may have injected it)"
                    )
                raise error
            return head, reply[1:]
        tried = ", ".join(f"{a.endpoint} ({a.outcome})" for a in self.last_attempts)
        within = (f"within {self.timeout_s:g} s" if self.budget_s is None
                  else f"within {self.timeout_s:g} s each and {self.budget_s:g} s in all")
        raise CalDBUnreachable(
            f"Resource temporarily unavailable: no calibrationDbRemote access point answered "
            f"{within} in {len(self.last_attempts)} of at most {self.max_attempts} attempts "
            f"({time.monotonic() - start:.1f} s): {tried}"
        )

    def ping(self) -> str:
        """The device id of whichever access point answered."""
        head, _ = self.request({"request": "ping"})
        return str(head["device_id"])

    def retrieve(
        self,
        *,
        calibration: str,
        conditions: Mapping[str, float],
        event_at: datetime,
        detector: str | None = None,
        karabo_da: str | None = None,
        pdu: str | None = None,
        strategy: str = "closest",
        pdu_snapshot_at: datetime | None = None,
        meta_only: bool = True,
    ) -> tuple[VersionInfo, np.ndarray | None]:
        """One module's version; its array too unless ``meta_only`` (the default, 12.2)."""
        header = {
            "request": "retrieve",
            "calibration": calibration,
            "conditions": dict(conditions),
            "event_at": format_time(require_aware(event_at, "event_at")),
            "detector": detector,
            "karabo_da": karabo_da,
            "pdu": pdu,
            "strategy": strategy,
            "pdu_snapshot_at": None
            if pdu_snapshot_at is None
            else format_time(require_aware(pdu_snapshot_at, "pdu_snapshot_at")),
            "meta_only": meta_only,
        }
        head, extra = self.request(header)
        version = VersionInfo.from_json(head["data"])
        if meta_only:
            return version, None
        if len(extra) != 1 or "array" not in head:
            raise CalDBError("access point sent no array for a meta_only=False retrieve")
        return version, array_from(head["array"], extra[0])

    def inject(self, *, data: np.ndarray, **fields: Any) -> VersionInfo:
        """Inject through an access point; ``fields`` as for ``CalDB.inject``. Refused
        inside a plan or diagnose walk, before anything is sent."""
        guard_transport("inject a constant through calibrationDbRemote")
        if not isinstance(data, np.ndarray):
            raise BadRequest(f"constant data must be a numpy array, got {type(data).__name__}")
        wire = dict(fields)
        for key in ("begin_at", "begin_validity_at", "end_validity_at"):
            if wire.get(key) is not None:
                wire[key] = format_time(require_aware(wire[key], key))
        head, _ = self.request(
            {"request": "inject", "fields": wire, "array": array_meta(data)}, data=data
        )
        return VersionInfo.from_json(head["data"])
