"""The message format between calibrationDbRemote access points and their clients.

A request is one JSON frame, plus one raw frame holding the array for an ``inject``. A
reply is one JSON frame ``{"success", "info", "app_info", "data", "request_id",
"device_id"}`` (the shape calibration_client's responses have), plus the array frame when
a retrieve asked for ``meta_only: false``. Arrays travel as raw bytes with ``dtype`` and
``shape`` in the JSON, never pickled.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np

from caldb.errors import BadRequest, CalDBError, ConstantNotFound, UnknownName, VersionTaken

__all__ = ["ERRORS", "encode", "decode", "array_meta", "array_from", "error_from_reply"]

ERRORS: dict[str, type[CalDBError]] = {
    cls.__name__: cls
    for cls in (BadRequest, UnknownName, ConstantNotFound, VersionTaken, CalDBError)
}


def encode(payload: dict[str, Any]) -> bytes:
    return json.dumps(payload).encode()


def decode(frame: bytes) -> dict[str, Any]:
    try:
        value = json.loads(frame)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BadRequest(f"message is not JSON: {exc}") from exc
    if not isinstance(value, dict):
        raise BadRequest("message must be a JSON object")
    return value


def array_meta(data: np.ndarray) -> dict[str, Any]:
    return {"dtype": data.dtype.str, "shape": list(data.shape)}


def array_from(meta: dict[str, Any], frame: bytes) -> np.ndarray:
    try:
        dtype = np.dtype(meta["dtype"])
        shape = tuple(int(n) for n in meta["shape"])
    except (KeyError, TypeError, ValueError) as exc:
        raise BadRequest(f"array needs a numeric dtype and a shape: {exc}") from exc
    if dtype.hasobject or dtype.kind not in "biufc":
        raise BadRequest(f"array dtype {dtype} is not numeric")
    expected = int(np.prod(shape)) * dtype.itemsize
    if len(frame) != expected:
        raise BadRequest(f"array frame has {len(frame)} bytes, dtype and shape need {expected}")
    return np.frombuffer(frame, dtype=dtype).reshape(shape).copy()


def error_from_reply(reply: dict[str, Any]) -> CalDBError:
    name = (reply.get("app_info") or {}).get("error", "CalDBError")
    return ERRORS.get(name, CalDBError)(str(reply.get("info", "request failed")))
