"""calibrationDbRemote access points (section 12): ZMQ servers that look up and inject.

Each ``AccessPoint`` is one device (``MAX_WEB_DATA/DM/CAL_REMOTE_5``) with its own thread
and ROUTER socket; ``AccessPoints`` runs N of them over one ``CalDB``. They log the
facility's lines (12.1), e.g. ``INFO MAX_WEB_DATA/DM/CAL_REMOTE_0 : Start searching in
Calibration Catalogue...``, through ``logging`` (logger ``caldb.remote.<device id>``;
``karabo_log_handler`` writes them as a device server's ``current`` log).

For the error scenarios of 12.2 an access point can be put in a mode while it runs:
``ok``; ``slow`` (answers after ``delay_s``); ``hung`` (takes requests and never answers
or logs, the "do not respond to queries" case); and it can be stopped and started again on
the same endpoint (``karabo-kill`` of its server). ``received`` counts requests, so tests
can assert that clients send a bounded number of them.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import zmq

from caldb._time import parse_time
from caldb._wire import array_from, array_meta, decode, encode
from caldb.catalogue import detector_by_identifier
from caldb.errors import BadRequest, CalDBError
from caldb.store import CalDB
from caldb.versions import VersionInfo

__all__ = ["AccessPoint", "AccessPoints", "KaraboLogFormatter", "karabo_log_handler", "MODES"]

MODES = ("ok", "slow", "hung")
_LEVELS = {"WARNING": "WARN", "CRITICAL": "FATAL"}


class KaraboLogFormatter(logging.Formatter):
    """``INFO <message>`` / ``WARN <message>``, as Karabo device servers log."""

    def format(self, record: logging.LogRecord) -> str:
        return f"{_LEVELS.get(record.levelname, record.levelname)} {record.getMessage()}"


def karabo_log_handler(path: str | Path) -> logging.Handler:
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(KaraboLogFormatter())
    return handler


class AccessPoint:
    """``AccessPoint("MAX_WEB_DATA/DM/CAL_REMOTE_0", db).start()``; ``endpoint`` once started."""

    def __init__(self, device_id: str, db: CalDB, endpoint: str = "tcp://127.0.0.1:*",
                 on_inject: Callable[[VersionInfo], None] | None = None) -> None:
        """``on_inject`` is told of each version injected through this point (the twin
        logs them as mutations)."""
        self.device_id = device_id
        self.on_inject = on_inject
        self.db = db
        self.endpoint = endpoint
        self.mode = "ok"
        self.delay_s = 0.0
        self.received = 0
        self.log = logging.getLogger(f"caldb.remote.{device_id}")
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None

    def set_mode(self, mode: str, delay_s: float = 0.0) -> None:
        if mode not in MODES:
            raise CalDBError(f"access point mode {mode!r}: expected one of {', '.join(MODES)}")
        self.mode, self.delay_s = mode, float(delay_s)

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self, timeout_s: float = 10.0) -> AccessPoint:
        if self.running:
            return self
        self._stop.clear()
        self._ready.clear()
        self._error = None
        self._thread = threading.Thread(target=self._serve, name=self.device_id, daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout_s) or self._error is not None:
            raise CalDBError(f"{self.device_id} could not bind {self.endpoint}: {self._error}")
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        self._thread = None

    def _info(self, message: str) -> None:
        self.log.info("%s : %s", self.device_id, message)

    def _serve(self) -> None:
        sock: zmq.Socket[bytes] = zmq.Context.instance().socket(zmq.ROUTER)
        sock.setsockopt(zmq.LINGER, 0)
        try:
            sock.bind(self.endpoint)
            # Keep the concrete port, so a restart binds where clients already point.
            self.endpoint = sock.getsockopt_string(zmq.LAST_ENDPOINT)
        except zmq.ZMQError as exc:
            self._error = exc
            sock.close()
            self._ready.set()
            return
        self._ready.set()
        self._info("Waiting on data")
        try:
            while not self._stop.is_set():
                if not sock.poll(50):
                    continue
                frames = sock.recv_multipart()
                self.received += 1
                if self.mode == "hung":
                    continue
                if self.mode == "slow" and self._stop.wait(self.delay_s):
                    break
                envelope, body = self._split(frames)
                if envelope is None:
                    continue
                sock.send_multipart([*envelope, *self._handle(body)])
                self._info("Waiting on data")
        finally:
            sock.close(linger=0)

    @staticmethod
    def _split(frames: list[bytes]) -> tuple[list[bytes] | None, list[bytes]]:
        # ROUTER frames from a REQ peer: identity, empty delimiter, then the message.
        if b"" not in frames:
            return None, []
        cut = frames.index(b"") + 1
        return frames[:cut], frames[cut:]

    def _handle(self, body: list[bytes]) -> list[bytes]:
        request_id = None
        reply: dict[str, Any]
        extra: list[bytes]
        try:
            if not body:
                raise CalDBError("empty request")
            header = decode(body[0])
            request_id = header.get("request_id")
            kind = header.get("request")
            if kind == "ping":
                reply, extra = {"info": "pong"}, []
            elif kind == "retrieve":
                reply, extra = self._retrieve(header)
            elif kind == "inject":
                if len(body) != 2:
                    raise CalDBError("an inject request carries the array as a second frame")
                reply, extra = self._inject(header, body[1])
            else:
                raise CalDBError(f"unknown request {kind!r} (ping, retrieve or inject)")
            reply.update(success=True, app_info={})
        except CalDBError as exc:
            self.log.warning("%s : %s", self.device_id, exc)
            reply = {"success": False, "info": str(exc), "app_info": {"error": type(exc).__name__}}
            extra = []
        except Exception as exc:  # noqa: BLE001 - a server answers and keeps serving
            self.log.exception("%s : internal error", self.device_id)
            reply = {
                "success": False,
                "info": f"internal error: {exc!r}",
                "app_info": {"error": "CalDBError"},
            }
            extra = []
        reply.update(request_id=request_id, device_id=self.device_id)
        return [encode(reply), *extra]

    def _retrieve(self, h: dict[str, Any]) -> tuple[dict[str, Any], list[bytes]]:
        self._info("Start searching in Calibration Catalogue...")
        meta_only = bool(h.get("meta_only", True))
        if not isinstance(h.get("conditions"), dict):
            raise BadRequest("conditions must be an object {parameter name: value}")
        event_at = parse_time(h.get("event_at"), "event_at")
        snapshot = h.get("pdu_snapshot_at")
        version = self.db.find_one(
            calibration=str(h.get("calibration")),
            conditions=h.get("conditions") or {},
            event_at=event_at,
            detector=h.get("detector"),
            karabo_da=h.get("karabo_da"),
            pdu=h.get("pdu"),
            strategy=h.get("strategy", "closest"),
            pdu_snapshot_at=None if snapshot is None else parse_time(snapshot, "pdu_snapshot_at"),
        )
        label = h.get("pdu") or self._detector_name(str(h.get("detector")))
        self._info(f"Got calibration: {version.calibration} ({label}), meta_only: {meta_only}")
        reply: dict[str, Any] = {
            "info": "Got calibration_constant_version successfully",
            "data": version.to_json(),
        }
        if meta_only:
            return reply, []
        data = self.db.read(version)
        reply["array"] = array_meta(data)
        return reply, [data.tobytes()]

    def _detector_name(self, identifier: str) -> str:
        with self.db.session() as s:
            return detector_by_identifier(s, identifier).name

    def _inject(self, h: dict[str, Any], frame: bytes) -> tuple[dict[str, Any], list[bytes]]:
        fields = dict(h.get("fields") or {})
        data = array_from(h.get("array") or {}, frame)
        for key in ("begin_at", "begin_validity_at", "end_validity_at"):
            if fields.get(key) is not None:
                fields[key] = parse_time(fields[key], key)
        if "deviations" in fields and fields["deviations"] is not None:
            fields["deviations"] = {k: tuple(v) for k, v in fields["deviations"].items()}
        if "dims" in fields and fields["dims"] is not None:
            fields["dims"] = tuple(fields["dims"])
        try:
            version = self.db.inject(data=data, **fields)
        except TypeError as exc:
            raise CalDBError(f"bad inject fields: {exc}") from exc
        self._info(f"Saved file {version.file_name} at {version.path_to_file}")
        self._info("Start writing to Calibration Catalogue...")
        self._info("Finnish writing to Calibration Catalogue...")  # sic, as 12.1 shows it
        self._info(f"Registered {version.file_name} successfully")
        if self.on_inject is not None:
            self.on_inject(version)
        return {
            "info": "calibration_constant_version created successfully",
            "data": version.to_json(),
        }, []


class AccessPoints:
    """``AccessPoints(db, 30)`` devices ``<prefix>0`` .. ``<prefix>29`` on loopback ports."""

    def __init__(self, db: CalDB, count: int, prefix: str = "MAX_WEB_DATA/DM/CAL_REMOTE_") -> None:
        if count < 1:
            raise CalDBError("run at least one access point")
        self.points = [AccessPoint(f"{prefix}{i}", db) for i in range(count)]

    @property
    def endpoints(self) -> list[str]:
        return [p.endpoint for p in self.points]

    @property
    def received(self) -> int:
        return sum(p.received for p in self.points)

    def __getitem__(self, index: int) -> AccessPoint:
        return self.points[index]

    def __iter__(self) -> Iterator[AccessPoint]:
        return iter(self.points)

    def __len__(self) -> int:
        return len(self.points)

    def start(self) -> AccessPoints:
        for p in self.points:
            p.start()
        return self

    def stop(self) -> None:
        for p in self.points:
            p.stop()

    def __enter__(self) -> AccessPoints:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
