"""The twin's calibration DB: one `caldb` store per twin, behind its access points.

The access points (`sim.devices.caldb_remote`) answer from it, the online corrections load
their constants through them, and a dark characterization requested at the webservice
injects through the offline ones (section 12).  `seed` gives a new twin what the facility's
DB already has: the detector, one PDU per module, and for each module its current darks at
the instrument's operating conditions plus older ones at other conditions (so that wrong
conditions find old constants, 11.4).  The constant files live in the facility's store
(``/gpfs/exfel/d/cal/caldb_store`` on the twin's hosts).
"""

from __future__ import annotations

import hashlib
import shutil
import tempfile
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from sim.karabo_env import ServerSpec

__all__ = ["db_url", "store_root", "calcat_conditions", "seed", "max_web_server",
           "max_web_interface", "max_web_topic", "ONLINE_PORT", "MAX_WEB_PORT", "MAX_WEB_SERVER",
           "MAX_WEB_PREFIX", "MAX_WEB_COUNT", "PDU_SINCE"]

ONLINE_PORT = 7015      # SA<n>_DAQ_DATA/DM/CAL_REMOTE_<k> listens on ONLINE_PORT + k
MAX_WEB_PORT = 8015     # 12: the site's zmq_interface tcp://max-exfl016:8015#8044
MAX_WEB_SERVER = "pythonserver_max_web_rcal_0"
MAX_WEB_PREFIX = "MAX_WEB_DATA/DM/CAL_REMOTE_"
PDU_SINCE = datetime(2023, 1, 1, tzinfo=UTC)

#: the manager's operating-condition rows (11.4) under the detector model's field names
_FIELDS = {"bias_voltage": "sensor_bias_voltage", "capacitor": "feedback_capacitor",
           "pulseid_checksum": "pulse_id_checksum"}


def db_url(twin_dir: Path | str) -> str:
    return f"sqlite:///{Path(twin_dir).resolve() / 'caldb' / 'caldb.sqlite'}"


def store_root(twin_dir: Path | str) -> Path:
    return Path(twin_dir).resolve() / "gpfs" / "exfel" / "d" / "cal" / "caldb_store"


def calcat_conditions(detector_type: str, rows: Mapping[str, str]) -> dict[str, float]:
    """A manager's ``{parameter: value}`` rows as CalCat conditions, by the rules that the
    dark characterization injects with; raises ``detectors.ConditionsError``."""
    from detectors import get_detector_type

    values = {_FIELDS.get(k, k): _number(v) for k, v in rows.items()
              if str(v).strip() not in ("", "None") and k != "beam_energy"}
    found = get_detector_type(detector_type).conditions(**values)
    return {k: float(v) for k, v in found.items()}  # type: ignore[arg-type]


def _number(value: object) -> object:
    try:
        return float(str(value))
    except ValueError:
        return value


CACHE = Path("/tmp/runbook-twin-caldb")


def _key(instruments: list[str]) -> str:
    """Seeds are rebuilt when the code that makes them changes."""
    here = Path(__file__).resolve().parent
    files = [here / "caldb_twin.py", here / "layout.py",
             *sorted((here.parent / "caldb").glob("*.py")),
             *sorted((here.parent / "detectors").glob("*.py"))]
    digest = hashlib.sha1(",".join(instruments).encode())
    for f in files:
        digest.update(f.read_bytes())
    return digest.hexdigest()[:16]


def seed(twin_dir: Path | str, instruments: list[str]) -> None:
    """Give the twin a DB that knows `instruments`' detectors and constants.

    Injecting a few hundred constants takes seconds of CPU, so the seeded DB is built
    once per machine (and code version) under `CACHE` and copied into each twin."""
    names = sorted(i.upper() for i in instruments)
    cache = CACHE / _key(names)
    if not (cache / "done").exists():
        CACHE.mkdir(parents=True, exist_ok=True)
        build = Path(tempfile.mkdtemp(dir=CACHE, prefix=".build-"))
        for name in names:
            _seed_one(build, name)
        (build / "done").touch()
        try:
            build.rename(cache)
        except OSError:  # another twin built it meanwhile
            shutil.rmtree(build, ignore_errors=True)
    target = Path(twin_dir).resolve()
    (target / "caldb").mkdir(parents=True, exist_ok=True)
    if not (target / "caldb" / "caldb.sqlite").exists():
        shutil.copyfile(cache / "caldb" / "caldb.sqlite", target / "caldb" / "caldb.sqlite")
        shutil.copytree(store_root(cache), store_root(target), dirs_exist_ok=True)


def _seed_one(twin_dir: Path, instrument: str) -> None:
    from caldb.store import CalDB
    from detectors import get_detector_type
    from detectors.dark.seed import dark_seed
    from sim.layout import INSTRUMENTS, MODULES, default_constants

    ins = INSTRUMENTS[instrument]
    det = get_detector_type(ins.detector_type)
    (twin_dir / "caldb").mkdir(parents=True, exist_ok=True)
    with CalDB.open(db_url(twin_dir), store_root(twin_dir)) as db:
        pdus = {m: f"{ins.physical_prefix}{m:02d}" for m in range(MODULES)}
        spec = dark_seed(det, ins.karabo_id, range(MODULES), PDU_SINCE, pdus=pdus)
        spec["calibrations"] += [c for c in ins.optional_constants
                                 if c not in spec["calibrations"]]
        db.seed(spec)
        rng = np.random.default_rng(7)
        for entry in default_constants(ins.name):
            begin = datetime.fromisoformat(entry["begin_validity"]).replace(tzinfo=UTC)
            # A few values with a dark's spread: a flat array would be a faulty constant (7).
            data = rng.normal(4000.0, 30.0, (4, 4)).astype(np.float32)
            db.inject(pdu=entry["physical_device"], calibration=entry["constant"],
                      conditions=calcat_conditions(ins.detector_type, entry["conditions"]),
                      begin_at=begin, data=data, description="seeded by the twin")


MAX_WEB_COUNT = 6   # the sim site's access_points (30 at the facility; six keep the twin light)


def max_web_server() -> ServerSpec:
    """The offline access points (12.1): xcal's server on max-exfl016."""
    from sim.karabo_env import ServerSpec

    devices = {f"{MAX_WEB_PREFIX}{n}": {"classId": "TwinCalDbRemote", "port": MAX_WEB_PORT + n}
               for n in range(MAX_WEB_COUNT)}
    return ServerSpec(name=MAX_WEB_SERVER, server_id="pythonserver/max_web_rcal_0",
                      device_classes=("TwinCalDbRemote",), devices=devices)


def max_web_topic(topic_prefix: str) -> str:
    """The broker topic of the offline access points' Karabo installation (ITDM's own)."""
    return f"{topic_prefix}MAX_WEB"


def max_web_interface(address: str) -> str:
    """The webservice's --cal-db-interface for the offline access points at `address`."""
    return f"tcp://{address}:{MAX_WEB_PORT}#{MAX_WEB_PORT + MAX_WEB_COUNT - 1}"
