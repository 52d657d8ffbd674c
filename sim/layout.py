"""Where the twin runs what, per MHz instrument: hosts, accounts, servers, devices.

Plain data that ``sim.twin`` iterates.  Choices (the guidelines give hosts and accounts,
11.1/11.3, but not which server holds which device):

- restart hosts ``<p>-br-sys-cal-[0-7]`` (account ``<inst>onc``) run one middlelayer server
  each, ``ml<inst>_<inst>_cal_<i>`` (serverId ``ml<INST>/<inst>_cal_<i>``), holding the
  SPLITTER, correction and (AGIPD) MEDIUM GAIN ADJUST of modules 2i and 2i+1; host 0's
  server also holds CAL_MANAGER, INIT and the two APPENDERs, so a restart puts "output
  every nth train" back to 50.  Each has a karabo-webserver on port 8080 whose
  ``--filter`` names the host's calibration servers, shaped like the run file of 11.1.
  GPU servers' run files put ``/usr/local/cuda-10.1/bin/`` on PATH (11.2).
- the calibrationDbRemote access points run on ``<caldb-prefix>-br-sys-cal-0`` as xcal,
  server ``pythonserver_sa<n>_daq_rcal_0`` (as in 11.3's example) with 4 devices
  ``SA<n>_DAQ_DATA/DM/CAL_REMOTE_<k>``; the other caldb hosts get no installation.
- the detector, the DAQ (run controller, 16 aggregators), the ZMQ bridge and RESTART run
  on a twin-only host ``<inst>-rr-sys-daq-1`` (account ``karabo``), server
  ``ml<inst>_<inst>_daq_ctrl``, which no restart touches.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sim.karabo_env import ServerSpec, WebserverSpec

__all__ = ["HostPlan", "InstallPlan", "InstrumentLayout", "Instrument", "INSTRUMENTS",
           "instrument_layout", "module_name", "default_constants", "DEVICE_CLASSES"]

CUDA = "10.1"
MODULES = 16
PER_HOST = 2

DEVICE_CLASSES = {
    "TwinDetector": "sim.devices.daq:TwinDetector",
    "TwinRunController": "sim.devices.daq:TwinRunController",
    "TwinDataAggregator": "sim.devices.daq:TwinDataAggregator",
    "TwinSplitter": "sim.devices.pipeline:TwinSplitter",
    "TwinCorrection": "sim.devices.pipeline:TwinCorrection",
    "TwinGainAdjust": "sim.devices.pipeline:TwinGainAdjust",
    "TwinCalManager": "sim.devices.manager:TwinCalManager",
    "TwinInit": "sim.devices.manager:TwinInit",
    "TwinAppender": "sim.devices.manager:TwinAppender",
    "TwinZmqBridge": "sim.devices.manager:TwinZmqBridge",
    "TwinGuiServer": "sim.devices.manager:TwinGuiServer",
    "TwinRestart": "sim.devices.restart:TwinRestart",
    "TwinCalDbRemote": "sim.devices.caldb_remote:TwinCalDbRemote",
}


@dataclass(frozen=True)
class Instrument:
    name: str
    sase: int
    karabo_id: str
    detector_type: str
    restart_prefix: str      # restart hosts: <restart_prefix>-br-sys-cal-[0-7]
    caldb_prefix: str        # caldb remote hosts: <caldb_prefix>-br-sys-cal-[0-8]
    memory_cells: int
    acquisition_rate: float
    conditions: tuple[tuple[str, str], ...]
    constants: tuple[str, ...]
    optional_constants: tuple[str, ...] = ()
    physical_prefix: str = ""

    @property
    def account(self) -> str:
        return f"{self.name.lower()}onc"


_AGIPD_CONSTANTS = ("Offset", "Noise", "ThresholdsDark", "BadPixelsDark")
INSTRUMENTS = {
    "SPB": Instrument("SPB", 1, "SPB_DET_AGIPD1M-1", "AGIPD", "spb", "spb", 352, 1.1,
                      (("memory_cells", "352"), ("acquisition_rate", "1.1"),
                       ("bias_voltage", "300"), ("gain_setting", "0"), ("beam_energy", "")),
                      _AGIPD_CONSTANTS, ("SlopesFF",), "AGIPD_SIV1_AGIPDV11_M3"),
    "MID": Instrument("MID", 2, "MID_DET_AGIPD1M-1", "AGIPD", "mid", "mid", 352, 1.1,
                      (("memory_cells", "352"), ("acquisition_rate", "1.1"),
                       ("bias_voltage", "300"), ("gain_setting", "0"), ("beam_energy", "")),
                      _AGIPD_CONSTANTS, ("SlopesFF",), "AGIPD_SIV1_AGIPDV11_M4"),
    "FXE": Instrument("FXE", 1, "FXE_DET_LPD1M-1", "LPD", "sa1", "fxe", 512, 4.5,
                      (("memory_cells", "512"), ("bias_voltage", "250"),
                       ("capacitor", "5"), ("beam_energy", "")),
                      ("Offset", "Noise", "BadPixelsDark"), (), "LPD_SIV1_LPDV2_M0"),
    "SCS": Instrument("SCS", 3, "SCS_DET_DSSC1M-1", "DSSC", "scs", "scs", 400, 4.5,
                      (("memory_cells", "400"), ("bias_voltage", "100"), ("pulseid_checksum", "0"),
                       ("acquisition_rate", "4.5"), ("beam_energy", "")),
                      ("Offset", "Noise"), (), "DSSC_F1_M0"),
}


@dataclass(frozen=True)
class HostPlan:
    name: str
    accounts: tuple[str, ...]
    gpu: bool = False
    cuda: tuple[str, ...] = ()   # versions installed under /usr/local/cuda-<v>


@dataclass(frozen=True)
class InstallPlan:
    host: str
    account: str
    servers: tuple[ServerSpec, ...]
    webserver: WebserverSpec | None


@dataclass(frozen=True)
class InstrumentLayout:
    """Everything the twin starts for one instrument; get one from ``instrument_layout``."""

    instrument: Instrument
    hosts: tuple[HostPlan, ...]
    installs: tuple[InstallPlan, ...]
    devices: dict[str, Any] = field(default_factory=dict)   # role -> id (or list of ids)
    restart_hosts: tuple[str, ...] = ()
    caldb_hosts: tuple[str, ...] = ()
    online_cluster: str = ""

    def install(self, host: str, account: str) -> InstallPlan:
        for plan in self.installs:
            if plan.host == host and plan.account == account:
                return plan
        raise KeyError(f"no Karabo installation for {account}@{host} in "
                       f"{self.instrument.name}")

    @property
    def device_ids(self) -> list[str]:
        """Every device that the layout's servers hold."""
        return sorted(d for plan in self.installs for spec in plan.servers
                      for d in spec.devices)

    def server_of(self, device_id: str) -> tuple[InstallPlan, ServerSpec]:
        for plan in self.installs:
            for spec in plan.servers:
                if device_id in spec.devices:
                    return plan, spec
        raise KeyError(f"device {device_id} is not in the {self.instrument.name} layout")


def module_name(index: int) -> str:
    """Module index -> quadrant/module name: 0 -> Q1M1, 15 -> Q4M4."""
    return f"Q{index // 4 + 1}M{index % 4 + 1}"


ONLINE_CLUSTER = {1: "exflonc10", 2: "exflonc17", 3: "exflonc14"}


def instrument_layout(instrument: str, *, twin_dir: str = ".") -> InstrumentLayout:
    """The layout of one MHz instrument (SPB, MID, FXE, SCS)."""
    key = instrument.upper()
    if key not in INSTRUMENTS:
        raise KeyError(f"no MHz detector twin for {instrument!r}; "
                       f"known: {', '.join(sorted(INSTRUMENTS))}")
    ins = INSTRUMENTS[key]
    low, kid = ins.name.lower(), ins.karabo_id
    cal = f"{kid}/CAL"
    ids: dict[str, Any] = {
        "cal_manager": f"{cal}/CAL_MANAGER", "init": f"{cal}/INIT",
        "restart": f"{cal}/RESTART", "raw_appender": f"{cal}/RAW_APPENDER",
        "corrected_appender": f"{cal}/CORRECTED_APPENDER", "bridge": f"{kid}/ZEROMQ/RAW",
        "detector": f"{kid}/DET/CONTROL", "run_controller": f"{ins.name}_DAQ_DATA/DM/RUN_CONTROL",
        "aggregators": [f"{ins.name}_DAQ_DATA/DA/{m:02d}" for m in range(MODULES)],
        "splitters": [f"{cal}/FEM_SPLITTER_{module_name(m)}" for m in range(MODULES)],
        "corrections": [f"{cal}/OFFSET_CORR_{module_name(m)}" for m in range(MODULES)],
        "gain_adjusts": ([f"{cal}/MEDIUM_GAIN_ADJUST_{module_name(m)}" for m in range(MODULES)]
                         if ins.detector_type == "AGIPD" else []),
        "cal_remotes": [f"SA{ins.sase}_DAQ_DATA/DM/CAL_REMOTE_{k}" for k in range(4)],
        "gui_server": f"{ins.name}_RR_SYS_CON_GUI1/GUI/SERVER",
    }
    restart_hosts = tuple(f"{ins.restart_prefix}-br-sys-cal-{i}" for i in range(8))
    caldb_hosts = tuple(f"{ins.caldb_prefix}-br-sys-cal-{i}" for i in range(9))
    daq_host = f"{low}-rr-sys-daq-1"
    corrected_src = ids["gain_adjusts"] or ids["corrections"]
    installs: list[InstallPlan] = []
    for i, host in enumerate(restart_hosts):
        devices: dict[str, dict[str, Any]] = {}
        for m in range(i * PER_HOST, (i + 1) * PER_HOST):
            devices.update(_module_devices(ins, ids, m))
        if i == 0:
            devices.update(_control_devices(ins, ids, corrected_src))
        classes = sorted({d["classId"] for d in devices.values()})
        name = f"ml{low}_{low}_cal_{i}"
        server = ServerSpec(name=name, server_id=f"ml{ins.name}/{low}_cal_{i}",
                            device_classes=tuple(classes), devices=devices, cuda=CUDA)
        flt = (f"cpp{low}_{low}_cal_{i}", f"py{low}_{low}_cal_{i}", name)
        installs.append(InstallPlan(host, ins.account, (server,), WebserverSpec(filter=flt)))
    installs.append(InstallPlan(caldb_hosts[0], "xcal", (_caldb_server(ins, ids),),
                                None))
    installs.append(InstallPlan(daq_host, "karabo",
                                (_daq_server(ins, ids, restart_hosts, twin_dir),), None))
    hosts = [HostPlan(h, (ins.account, "xcal") if h in caldb_hosts else (ins.account,),
                      gpu=True, cuda=(CUDA,)) for h in restart_hosts]
    hosts += [HostPlan(h, ("xcal",)) for h in caldb_hosts if h not in restart_hosts]
    hosts.append(HostPlan(daq_host, ("karabo",)))
    hosts.append(HostPlan(ONLINE_CLUSTER[ins.sase], (ins.account,)))
    return InstrumentLayout(ins, tuple(hosts), tuple(installs), ids, restart_hosts,
                            caldb_hosts, ONLINE_CLUSTER[ins.sase])


def _module_devices(ins: Instrument, ids: dict[str, Any], m: int) -> dict[str, dict]:
    splitter, corr = ids["splitters"][m], ids["corrections"][m]
    out: dict[str, dict[str, Any]] = {
        splitter: {"classId": "TwinSplitter", "module": m,
                   "aggregatorId": ids["aggregators"][m], "managerId": ids["cal_manager"],
                   "memoryCells": ins.memory_cells},
        corr: {"classId": "TwinCorrection", "module": m,
               "expectedInput": f"{splitter}:gpu", "dataInput": f"{splitter}:gpu",
               "detectorType": ins.detector_type, "karaboId": ins.karabo_id,
               "physicalDevice": f"{ins.physical_prefix}{m:02d}",
               "managerId": ids["cal_manager"], "calRemotes": ids["cal_remotes"],
               "constants": list(ins.constants),
               "optionalConstants": list(ins.optional_constants)},
    }
    if ids["gain_adjusts"]:
        out[ids["gain_adjusts"][m]] = {"classId": "TwinGainAdjust", "module": m,
                                       "correctionId": corr}
    return out


def _control_devices(ins: Instrument, ids: dict[str, Any],
                     corrected_src: list[str]) -> dict[str, dict]:
    conditions = [{"parameter": k, "value": v} for k, v in ins.conditions]
    return {
        ids["cal_manager"]: {
            "classId": "TwinCalManager", "detectorId": ids["detector"],
            "splitters": ids["splitters"], "corrections": ids["corrections"],
            "gainAdjusts": ids["gain_adjusts"],
            "appenders": [ids["raw_appender"], ids["corrected_appender"]],
            "pulseFilter": f"range(0, {ins.memory_cells})",
            "operatingConditions": conditions},
        ids["init"]: {"classId": "TwinInit", "managerId": ids["cal_manager"]},
        ids["raw_appender"]: {"classId": "TwinAppender",
                              "sources": [f"{s}:output_0" for s in ids["splitters"]]},
        ids["corrected_appender"]: {"classId": "TwinAppender",
                                    "sources": [f"{s}:output" for s in corrected_src]},
    }


def _caldb_server(ins: Instrument, ids: dict[str, Any]) -> ServerSpec:
    from sim.caldb_twin import ONLINE_PORT

    devices = {rid: {"classId": "TwinCalDbRemote", "port": ONLINE_PORT + k}
               for k, rid in enumerate(ids["cal_remotes"])}
    return ServerSpec(name=f"pythonserver_sa{ins.sase}_daq_rcal_0",
                      server_id=f"pythonserver/sa{ins.sase}_daq_rcal_0",
                      device_classes=("TwinCalDbRemote",), devices=devices)


def _daq_server(ins: Instrument, ids: dict[str, Any], restart_hosts: tuple[str, ...],
                twin_dir: str) -> ServerSpec:
    devices: dict[str, dict[str, Any]] = {
        ids["detector"]: {"classId": "TwinDetector", "detectorType": ins.detector_type,
                          "memoryCells": ins.memory_cells,
                          "acquisitionRate": ins.acquisition_rate,
                          "managerId": ids["cal_manager"]},
        ids["run_controller"]: {"classId": "TwinRunController", "instrument": ins.name,
                                "karaboId": ins.karabo_id, "detectorType": ins.detector_type,
                                "aggregators": ids["aggregators"], "dataRoot": twin_dir},
        ids["bridge"]: {"classId": "TwinZmqBridge",
                        "dataInput": f"{ids['raw_appender']}:output"},
        ids["restart"]: {"classId": "TwinRestart", "hosts": list(restart_hosts)},
        ids["gui_server"]: {"classId": "TwinGuiServer",
                            "appenderId": ids["corrected_appender"]},
    }
    for m, agg in enumerate(ids["aggregators"]):
        devices[agg] = {"classId": "TwinDataAggregator", "channel": m,
                        "detectorId": ids["detector"], "runControllerId": ids["run_controller"]}
    low = ins.name.lower()
    classes = sorted({d["classId"] for d in devices.values()})
    return ServerSpec(name=f"ml{low}_{low}_daq_ctrl", server_id=f"ml{ins.name}/{low}_daq_ctrl",
                      device_classes=tuple(classes), devices=devices)


def default_constants(instrument: str) -> list[dict[str, Any]]:
    """The in-twin constants table: current darks for the default conditions, plus older
    ones taken at other conditions (so that wrong conditions find old constants, 11.4)."""
    ins = INSTRUMENTS[instrument.upper()]
    current = {k: v for k, v in ins.conditions if v != ""}
    older = dict(current, memory_cells="202") if "memory_cells" in current else None
    table = []
    for m in range(MODULES):
        device = f"{ins.physical_prefix}{m:02d}"
        for name in ins.constants:
            table.append({"physical_device": device, "constant": name,
                          "conditions": current, "begin_validity": "2024-03-12T09:14:03"})
            if older is not None:
                table.append({"physical_device": device, "constant": name,
                              "conditions": older, "begin_validity": "2023-11-02T17:40:51"})
    return table


def install_instrument(layout: InstrumentLayout, hosts: dict[str, Any], *, broker_url: str,
                       topic: str, twin_dir: Any) -> list[Any]:
    """Write everything one instrument needs on disk: the CUDA folders of GPU hosts and each
    Karabo installation; returns the $KARABO folders.  (The constants: `sim.caldb_twin`.)

    ``hosts`` maps host names to ``sim.hosts.TwinHost`` (anything with name, address, root).
    """
    from pathlib import Path

    from sim.karabo_env import install_karabo

    for plan in layout.hosts:
        for version in plan.cuda:
            (Path(hosts[plan.name].root) / "usr" / "local" / f"cuda-{version}" / "bin").mkdir(
                parents=True, exist_ok=True)
    return [install_karabo(hosts[p.host], p.account, broker_url=broker_url, topic=topic,
                           servers=list(p.servers), webserver=p.webserver)
            for p in layout.installs]


@dataclass(frozen=True)
class PlainHost:
    """A twin host for ``start_instruments`` when ``sim.hosts`` is not in charge."""

    name: str
    address: str
    root: Any
    accounts: tuple[str, ...] = ()


@dataclass
class KaraboSide:
    """The Karabo half of a twin (broker, installations); get one from
    ``start_instruments`` and end it with ``stop()``."""

    dir: Any
    broker: Any
    hosts: dict[str, Any]
    layouts: dict[str, InstrumentLayout]
    topics: dict[str, str]
    karabo_dirs: list[Any] = field(default_factory=list)

    @property
    def broker_url(self) -> str:
        return str(self.broker.url)

    def stop(self) -> None:
        from sim.karabo_env import stop_karabo

        for karabo in self.karabo_dirs:
            stop_karabo(karabo)
        self.broker.stop()


def start_instruments(twin_dir: Any, instruments: list[str], *, port: int | None = None,
                      prefix: str = "t") -> KaraboSide:
    """Broker plus every installation of ``instruments``, each host on its own loopback
    address (127.0.<n>.<i>); writes ``hosts.json``.  The SSH side is ``sim.twin``'s."""
    import json
    from pathlib import Path

    from sim import caldb_twin
    from sim.broker import Broker, free_port
    from sim.karabo_env import start_karabo

    root = Path(twin_dir).resolve()
    root.mkdir(parents=True, exist_ok=True)
    layouts = {i.upper(): instrument_layout(i, twin_dir=str(root)) for i in instruments}
    hosts: dict[str, Any] = {}
    for layout in layouts.values():
        for plan in layout.hosts:
            if plan.name not in hosts:
                n = len(hosts) + 1
                hosts[plan.name] = PlainHost(plan.name, f"127.0.{100 + n // 250}.{n % 250 + 1}",
                                             root / "hosts" / plan.name, plan.accounts)
    (root / "hosts.json").write_text(json.dumps({h.name: h.address for h in hosts.values()}))
    broker = Broker.start(root, port=port or free_port())
    topics = {name: f"{prefix}_{name}" for name in layouts}
    side = KaraboSide(root, broker, hosts, layouts, topics)
    try:
        caldb_twin.seed(root, list(layouts))
        for name, layout in layouts.items():
            side.karabo_dirs += install_instrument(layout, hosts, broker_url=broker.url,
                                                   topic=topics[name], twin_dir=root)
        for karabo in side.karabo_dirs:
            start_karabo(karabo)
    except BaseException:
        side.stop()
        raise
    return side
