"""A read-only server for CalCat's REST endpoints over a ``CalDB``, for the twin and tests.

Only the endpoints the facility's clients call are served, with their parameter names:

- ``GET /api/detectors?identifier=``, ``/api/detectors/{id}``
- ``GET /api/detector_types?name=``, ``/api/calibrations?name=``, ``/api/calibrations/{id}``
- ``GET /api/parameters?name=``, ``/api/physical_detector_units?physical_name=``
- ``GET /api/physical_detector_units/get_all_by_detector?detector_id=&pdu_snapshot_at=``
- ``GET /api/calibration_constant_versions/get_by_detector_conditions`` with
  ``detector_identifier``, ``calibration_id`` (``"[1, 2]"`` or ``"1"``), ``karabo_da``,
  ``event_at``, ``pdu_snapshot_at``, ``begin_at_strategy`` (calibration_client spells it
  ``begin_strategy_at``; both are read) and the conditions as a JSON body
  ``{"parameters_conditions_attributes": [{"parameter_name": ..., "value": ...}]}``
- ``GET /api/calibration_constant_versions/{id}``, ``GET /api/me``

Errors answer ``{"info": "..."}`` with 400 (bad request) or 404 (unknown name), as CalCat
does. It is the standard library's threading HTTP server: no framework is needed for a
handful of GET routes, and each request runs its own DB session.
"""

from __future__ import annotations

import json
import logging
import re
import threading
from collections.abc import Callable
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from sqlalchemy import select
from sqlalchemy.orm import Session

from caldb._time import now, parse_time
from caldb.calcat_json import (
    calibration_json,
    ccv_json,
    detector_json,
    detector_type_json,
    parameter_json,
    pdu_json,
)
from caldb.catalogue import modules_at
from caldb.errors import BadRequest, CalDBError, UnknownName
from caldb.lookup import find_versions
from caldb.models import (
    Calibration,
    CalibrationConstantVersion,
    Detector,
    DetectorType,
    Parameter,
    PhysicalDetectorUnit,
)
from caldb.store import CalDB

__all__ = ["RestServer"]

log = logging.getLogger(__name__)
Query = dict[str, str]


def _listing(
    model: Any, column: str, to_json: Callable[[Any], dict[str, Any]]
) -> Callable[[Session, Query, Any], Any]:
    def handler(s: Session, q: Query, _body: Any) -> Any:
        query = select(model).order_by(model.id)
        if q.get(column):
            query = query.where(getattr(model, column) == q[column])
        return [to_json(r) for r in s.scalars(query)]

    return handler


def _by_id(
    model: Any, kind: str, to_json: Callable[[Any], dict[str, Any]]
) -> Callable[[Session, Query, Any, int], Any]:
    def handler(s: Session, _q: Query, _body: Any, ident: int) -> Any:
        row = s.get(model, ident)
        if row is None:
            raise UnknownName(f"{kind} {ident} not found")
        return to_json(row)

    return handler


def _pdus_by_detector(s: Session, q: Query, _body: Any) -> Any:
    try:
        det = s.get(Detector, int(q.get("detector_id", "")))
    except ValueError as exc:
        raise BadRequest("detector_id must be an integer") from exc
    if det is None:
        raise UnknownName(f"detector {q.get('detector_id')} not found")
    at = parse_time(q.get("pdu_snapshot_at") or q.get("event_at"), "pdu_snapshot_at", now())
    rows = modules_at(s, det.identifier, at)
    if not rows:
        raise UnknownName(f"no physical_detector_units mapped to {det.identifier} at {at}")
    return [pdu_json(m.pdu, m) for m in rows]


def _calibration_ids(raw: str) -> list[int]:
    try:
        value = json.loads(raw) if raw.strip() else []
    except json.JSONDecodeError as exc:
        raise BadRequest(f"calibration_id {raw!r} is neither an id nor a list of ids") from exc
    ids = value if isinstance(value, list) else [value]
    if not ids or not all(isinstance(i, int) for i in ids):
        raise BadRequest(f"calibration_id {raw!r} is neither an id nor a list of ids")
    return ids


def _conditions(body: Any) -> dict[str, float]:
    try:
        items = body["parameters_conditions_attributes"]
        return {str(i["parameter_name"]): i["value"] for i in items}
    except (TypeError, KeyError) as exc:
        raise BadRequest(
            "send the conditions as a JSON body "
            '{"parameters_conditions_attributes": [{"parameter_name": ..., "value": ...}]}'
        ) from exc


def _by_conditions(s: Session, q: Query, body: Any) -> Any:
    names = []
    for ident in _calibration_ids(q.get("calibration_id", "")):
        cal = s.get(Calibration, ident)
        if cal is None:
            raise UnknownName(f"calibration {ident} not found")
        names.append(cal.name)
    event_at = parse_time(q.get("event_at"), "event_at", now())
    snapshot = parse_time(q.get("pdu_snapshot_at"), "pdu_snapshot_at", event_at)
    strategy = q.get("begin_at_strategy") or q.get("begin_strategy_at") or "closest"
    found = find_versions(
        s,
        detector=q.get("detector_identifier") or None,
        karabo_da=q.get("karabo_da") or None,
        calibrations=names,
        conditions=_conditions(body),
        event_at=event_at,
        strategy=strategy,
        pdu_snapshot_at=snapshot,
    )
    return [ccv_json(s, s.get_one(CalibrationConstantVersion, v.id), snapshot) for v in found]


ROUTES: list[tuple[re.Pattern[str], Callable[..., Any]]] = [
    (re.compile(r"/api/me/?"), lambda s, q, b: {"email": "twin@localhost"}),
    (re.compile(r"/api/detectors/?"), _listing(Detector, "identifier", detector_json)),
    (re.compile(r"/api/detectors/(\d+)"), _by_id(Detector, "detector", detector_json)),
    (re.compile(r"/api/detector_types/?"), _listing(DetectorType, "name", detector_type_json)),
    (re.compile(r"/api/calibrations/?"), _listing(Calibration, "name", calibration_json)),
    (re.compile(r"/api/calibrations/(\d+)"), _by_id(Calibration, "calibration", calibration_json)),
    (re.compile(r"/api/parameters/?"), _listing(Parameter, "name", parameter_json)),
    (
        re.compile(r"/api/physical_detector_units/?"),
        _listing(PhysicalDetectorUnit, "physical_name", lambda u: pdu_json(u, None)),
    ),
    (re.compile(r"/api/physical_detector_units/get_all_by_detector/?"), _pdus_by_detector),
    (
        re.compile(r"/api/calibration_constant_versions/get_by_detector_conditions/?"),
        _by_conditions,
    ),
    (
        re.compile(r"/api/calibration_constant_versions/(\d+)"),
        lambda s, q, b, i: ccv_json(s, _get_ccv(s, int(i))),
    ),
]


def _get_ccv(s: Session, ident: int) -> CalibrationConstantVersion:
    row = s.get(CalibrationConstantVersion, ident)
    if row is None:
        raise UnknownName("calibration_constant_version not found!")
    return row


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def do_GET(self) -> None:  # noqa: N802 - the stdlib's name
        parts = urlsplit(self.path)
        query = {k: v[-1] for k, v in parse_qs(parts.query, keep_blank_values=True).items()}
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        try:
            body = json.loads(raw) if raw else None
            for pattern, handler in ROUTES:
                match = pattern.fullmatch(parts.path)
                if match:
                    args = [int(g) for g in match.groups()]
                    with self.server.db.session() as s:
                        self._send(HTTPStatus.OK, handler(s, query, body, *args))
                    return
            self._send(HTTPStatus.NOT_FOUND, {"info": f"no route {parts.path}"})
        except json.JSONDecodeError as exc:
            self._send(HTTPStatus.BAD_REQUEST, {"info": f"body is not JSON: {exc}"})
        except UnknownName as exc:
            self._send(HTTPStatus.NOT_FOUND, {"info": str(exc)})
        except BadRequest as exc:
            self._send(HTTPStatus.BAD_REQUEST, {"info": str(exc)})
        except CalDBError as exc:
            self._send(HTTPStatus.INTERNAL_SERVER_ERROR, {"info": str(exc)})
        except Exception as exc:  # noqa: BLE001 - answer 500 and keep serving, logged
            log.exception("caldb REST %s failed", parts.path)
            self._send(HTTPStatus.INTERNAL_SERVER_ERROR, {"info": f"internal error: {exc!r}"})

    def _send(self, status: HTTPStatus, payload: Any) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)
        self.server.requests += 1

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        log.debug("%s " + format, self.address_string(), *args)


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], db: CalDB) -> None:
        super().__init__(address, _Handler)
        self.db = db
        self.requests = 0


class RestServer:
    """``RestServer(db).start()`` serves on 127.0.0.1 (a free port unless given); ``stop()``."""

    def __init__(self, db: CalDB, host: str = "127.0.0.1", port: int = 0) -> None:
        self._server = _Server((host, port), db)
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name="caldb-rest",
            daemon=True,
        )

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    @property
    def requests(self) -> int:
        return self._server.requests

    def start(self) -> RestServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=10)

    def __enter__(self) -> RestServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
