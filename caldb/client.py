"""A CalCat REST client, speaking the endpoints as calibration_client and EXtra call them.

It returns CalCat's JSON (dicts and lists) unchanged, because checks compare those fields
with what the facility's backend shows (section 11.3 "Parameter conditions"). Every call
has a timeout; transport failures become ``CalDBUnreachable``, 404 ``UnknownName``, 400
``BadRequest``, anything else ``CalDBError``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

import httpx

from caldb._time import format_time, require_aware
from caldb.errors import BadRequest, CalDBError, CalDBUnreachable, UnknownName

__all__ = ["CalCatClient"]


class CalCatClient:
    """``CalCatClient("http://127.0.0.1:8080")``; the ``/api/`` prefix is added."""

    def __init__(self, base_url: str, timeout: float = 10.0, user_email: str = "") -> None:
        self.base_url = base_url.rstrip("/") + "/api/"
        self._http = httpx.Client(
            timeout=httpx.Timeout(timeout),
            headers={"Accept": "application/json; version=2", "X-User-Email": user_email},
        )

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> CalCatClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def get(
        self, relative_url: str, params: Mapping[str, Any] | None = None, body: Any = None
    ) -> Any:
        """GET with an optional JSON body (CalCat's condition lookup sends one on a GET)."""
        url = self.base_url + relative_url.lstrip("/")
        content = None if body is None else json.dumps(body).encode()
        headers = {"Content-Type": "application/json"} if content is not None else None
        try:
            resp = self._http.request(
                "GET", url, params=dict(params or {}), content=content, headers=headers
            )
        except httpx.TimeoutException as exc:
            raise CalDBUnreachable(f"CalCat at {self.base_url} did not answer in time") from exc
        except httpx.TransportError as exc:
            raise CalDBUnreachable(f"CalCat at {self.base_url} is unreachable: {exc}") from exc
        if resp.status_code >= 400:
            try:
                info = resp.json().get("info", resp.text)
            except (ValueError, AttributeError):
                info = resp.text
            message = f"Error {resp.status_code} from CalCat {relative_url}: {info}"
            if resp.status_code == 404:
                raise UnknownName(message)
            if resp.status_code == 400:
                raise BadRequest(message)
            raise CalDBError(message)
        return resp.json() if resp.content else None

    def _one(self, endpoint: str, key: str, value: str) -> dict[str, Any]:
        rows = self.get(endpoint, {key: value})
        if not rows:
            raise UnknownName(f"no {endpoint.rstrip('s')} with {key} {value!r}")
        if len(rows) > 1:
            raise CalDBError(f"several {endpoint} with {key} {value!r}")
        return dict(rows[0])

    def detector_by_identifier(self, identifier: str) -> dict[str, Any]:
        return self._one("detectors", "identifier", identifier)

    def calibration_by_name(self, name: str) -> dict[str, Any]:
        return self._one("calibrations", "name", name)

    def parameter_by_name(self, name: str) -> dict[str, Any]:
        return self._one("parameters", "name", name)

    def pdu_by_name(self, physical_name: str) -> dict[str, Any]:
        return self._one("physical_detector_units", "physical_name", physical_name)

    def pdus_by_detector(
        self, detector_id: int, pdu_snapshot_at: datetime | None = None
    ) -> list[dict[str, Any]]:
        at = (
            ""
            if pdu_snapshot_at is None
            else format_time(require_aware(pdu_snapshot_at, "pdu_snapshot_at"))
        )
        return list(
            self.get(
                "physical_detector_units/get_all_by_detector",
                {"detector_id": detector_id, "pdu_snapshot_at": at},
            )
        )

    def ccv(self, ccv_id: int) -> dict[str, Any]:
        return dict(self.get(f"calibration_constant_versions/{ccv_id}"))

    def get_by_detector_conditions(
        self,
        detector_identifier: str,
        calibrations: Sequence[str],
        conditions: Mapping[str, float],
        event_at: datetime | None = None,
        karabo_da: str = "",
        pdu_snapshot_at: datetime | None = None,
        begin_at_strategy: str = "closest",
    ) -> list[dict[str, Any]]:
        """The versions for each module, as ``CalibrationData.from_condition`` asks for them."""
        ids = [self.calibration_by_name(name)["id"] for name in calibrations]
        times = {
            key: "" if value is None else format_time(require_aware(value, key))
            for key, value in (("event_at", event_at), ("pdu_snapshot_at", pdu_snapshot_at))
        }
        body = {
            "parameters_conditions_attributes": [
                {"parameter_name": k, "value": v} for k, v in conditions.items()
            ]
        }
        params = {
            "detector_identifier": detector_identifier,
            "calibration_id": str(ids),
            "karabo_da": karabo_da,
            "begin_at_strategy": begin_at_strategy,
            **times,
        }
        return list(
            self.get("calibration_constant_versions/get_by_detector_conditions", params, body=body)
        )
