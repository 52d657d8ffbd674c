"""The calibration-constant DB: store, lookup rules, REST and ZMQ servers and clients.

Entry points (import them from their modules; this package stays light to import, so the
``runbook`` CLI starts fast):

- ``caldb.store.CalDB``: open a store, ``seed``, ``find``, ``inject``, ``disable``/``enable``;
- ``caldb.client.CalCatClient`` and ``caldb.rest.RestServer``: CalCat's REST API;
- ``caldb.remote_client.RemoteClient`` and ``caldb.remote.AccessPoints``: the
  calibrationDbRemote ZMQ access points (section 12);
- ``caldb.cli.app``: ``runbook caldb ...``.

The rules (condition matching, closest/prior, crash safety) are in docs/caldb.md.
"""

from caldb.errors import (
    BadRequest,
    CalDBError,
    CalDBUnreachable,
    ConstantNotFound,
    UnknownName,
    VersionTaken,
)

__all__ = [
    "BadRequest",
    "CalDBError",
    "CalDBUnreachable",
    "ConstantNotFound",
    "UnknownName",
    "VersionTaken",
]
