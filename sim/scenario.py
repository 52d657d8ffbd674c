"""Scenario files: an instrument and a list of faults, each a cause at a position.

```yaml
instrument: SPB
faults:
  - kind: webserver_down
    host: spb-br-sys-cal-3
  - kind: module_not_sending
    module: 5
```
Every kind, its parameters and the guideline section it comes from are in
docs/scenarios.md.  Load with ``load_scenario(path)``; problems are reported as
``file:line:col: message``, all at once.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter
from pydantic import ValidationError as PydanticError

from engine._yaml import load_yaml, pydantic_problems
from engine.errors import ValidationError

__all__ = ["Scenario", "Fault", "FAULT_KINDS", "load_scenario", "parse_scenario",
           "parse_fault"]

Module = Annotated[int, Field(ge=0, le=15)]


class _F(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    instrument: Literal["SPB", "MID", "FXE", "SCS"] | None = None


class NewServer(_F):
    """11.1: a new device server on a restart host, not in the omit list."""
    kind: Literal["new_server"]
    host: str
    name: str = ""


class WebserverDown(_F):
    """11.1: the host's karabo-webserver service is down."""
    kind: Literal["webserver_down"]
    host: str


class WebserverFilter(_F):
    """11.1: the webserver's --filter does not name the host's calibration server."""
    kind: Literal["webserver_filter"]
    host: str
    filter: list[str] | None = None


class BadWebserverTemplate(_F):
    """11.1: RESTART's webserver template is misconfigured."""
    kind: Literal["bad_webserver_template"]
    template: str = "http://{host}:8008"


class DetectorPushing(_F):
    """11.2 / 11.3: the detector sends data during a restart or while constants load."""
    kind: Literal["detector_pushing"]
    during: Literal["restart", "constants"] = "restart"


class KaraboNotStarted(_F):
    """11.2: the Karabo installation of a restart host was not started."""
    kind: Literal["karabo_not_started"]
    host: str


class CudaMissing(_F):
    """11.2: a GPU server's run file lacks the CUDA path, or names one not installed."""
    kind: Literal["cuda_missing"]
    host: str
    cuda_version: str | None = None


class OldInstallation(_F):
    """11.2: an old (CPU) installation started on an exflonc host, same device ids."""
    kind: Literal["old_installation"]
    host: str = ""
    modules: list[Module] = Field(default_factory=lambda: [0])


class CaldbRemoteDown(_F):
    """11.3: the calibrationDbRemote server (xcal) is not running."""
    kind: Literal["caldb_remote_down"]
    host: str = ""


class OperatingCondition(_F):
    """11.3: an operating condition that matches no constant, or a field left at None."""
    kind: Literal["operating_condition"]
    parameter: str = "beam_energy"
    value: str = "None"


class DetectorOperationChanged(_F):
    """11.4: operators changed the detector's operation (4.5 MHz, other memory cells)."""
    kind: Literal["detector_operation_changed"]
    acquisition_rate: float | None = 4.5
    memory_cells: int | None = None


class DaqState(_F):
    """10.1 / 10.2: the DAQ is in neither MONITOR nor RECORD."""
    kind: Literal["daq_not_monitoring"]


class DetectorNotSending(_F):
    """10.1 / 10.2: the detector is not powered, not configured, or not started."""
    kind: Literal["detector_not_sending"]
    cause: Literal["unpowered", "unconfigured", "stopped"] = "stopped"


class AggregatorError(_F):
    """10.1 / 11.5: a data aggregator is in ERROR."""
    kind: Literal["aggregator_error"]
    module: Module
    reason: str = "network link down"


class ModuleNotSending(_F):
    """11.5: a module of the detector sends no data."""
    kind: Literal["module_not_sending"]
    module: Module


class MinModules(_F):
    """10.2 / 11.5: min-modules of an appender above the modules that send."""
    kind: Literal["min_modules"]
    value: Annotated[int, Field(ge=0, le=16)] = 16
    appender: Literal["raw", "corrected", "both"] = "both"


class OutputEveryNth(_F):
    """11.6: "output every nth train" left at 50 after a restart."""
    kind: Literal["output_every_nth"]
    value: Annotated[int, Field(ge=1)] = 50


class PulseFilter(_F):
    """11.6: a too aggressive pulse filter (with every nth train)."""
    kind: Literal["pulse_filter"]
    expression: str = "range(0, 352)"
    every_nth: Annotated[int, Field(ge=1)] = 10


class WrongDaqOutput(_F):
    """11.7: a correction device connected to the wrong output."""
    kind: Literal["wrong_daq_output"]
    module: Module
    channel: str = ""


class GuiServerTrouble(_F):
    """11.5: the GUI server does not forward images (appenders fine)."""
    kind: Literal["gui_server_trouble"]


class WebserviceDead(_F):
    """4.2.1 / 4.3: the calibration webservice process on max-exfl016 died (kill -9)."""
    kind: Literal["webservice_dead"]


class OverviewDown(_F):
    """4.4 / 9: the overview page's process (serve_overview.py) died."""
    kind: Literal["overview_down"]


class MaxwellBusy(_F):
    """8.1 / 9.1: other users' long jobs take every node of Maxwell's partition."""
    kind: Literal["maxwell_busy"]
    nodes: Annotated[int, Field(ge=1)] = 1
    seconds: Annotated[int, Field(ge=60)] = 3600
    start_timeout: Annotated[float, Field(gt=0, le=1800)] = 300.0


class JobsPilingUp(_F):
    """4.2.3 / 9.2: a burst of long correction jobs of xcal, more than Maxwell holds."""
    kind: Literal["jobs_piling_up"]
    jobs: Annotated[int, Field(ge=2, le=100)] = 12
    proposal: Annotated[int, Field(gt=0, lt=1_000_000)] = 2214
    run: Annotated[int, Field(ge=1)] = 77
    seconds: Annotated[int, Field(ge=60)] = 3600


class JobNeverLaunched(_F):
    """8.1: Maxwell's calibration partition is drained, so sbatch refuses new jobs."""
    kind: Literal["job_never_launched"]


class ReportRenderingFailed(_F):
    """8.1: xcal's matplotlibrc asks for LaTeX, which the node lacks: no figure renders."""
    kind: Literal["report_rendering_failed"]


class PlottingErrorsOnly(_F):
    """8.2 A: xcal's matplotlibrc names a font the node lacks: plots fall back, with errors."""
    kind: Literal["plotting_errors_only"]
    font: str = "XFEL Sans"


class WrongInputParameter(_F):
    """8.2 B: the calibration configuration gives the detector a wrong option."""
    kind: Literal["wrong_input_parameter"]
    karabo_id: str = ""
    option: str = "condition"
    value: str = "sensor_bias_voltage=None"


class VersionTaken(_F):
    """12.2: the same darks were characterized and injected before (an identical request)."""
    kind: Literal["version_taken"]
    karabo_id: str = ""
    proposal: Annotated[int, Field(gt=0, lt=1_000_000)]
    runs: list[Annotated[int, Field(ge=1)]] = Field(min_length=1)
    timeout: Annotated[float, Field(gt=0, le=1800)] = 300.0


class CaldbRemoteOverloaded(_F):
    """12.2: the offline access points ran out of memory: they take queries and neither
    answer nor log, while a correction job of xcal keeps querying."""
    kind: Literal["caldb_remote_overloaded"]
    seconds: Annotated[int, Field(ge=60)] = 3600


class CaldbRequestStorm(_F):
    """12.2: a job of xcal with legacy code and too short a timeout repeats one request."""
    kind: Literal["caldb_request_storm"]
    timeout: Annotated[float, Field(gt=0, le=60)] = 0.05
    interval: Annotated[float, Field(ge=0, le=60)] = 0.05
    seconds: Annotated[int, Field(ge=60)] = 3600


class FaultyConstants(_F):
    """7: darks taken with the detector off (flat) were injected for one module."""
    kind: Literal["faulty_constants"]
    module: Module = 3


_OFFLINE = (WebserviceDead, OverviewDown, MaxwellBusy, JobsPilingUp, JobNeverLaunched,
            ReportRenderingFailed, PlottingErrorsOnly, WrongInputParameter, VersionTaken,
            CaldbRemoteOverloaded, CaldbRequestStorm, FaultyConstants)


Fault = Annotated[
    NewServer | WebserverDown | WebserverFilter | BadWebserverTemplate | DetectorPushing
    | KaraboNotStarted | CudaMissing | OldInstallation | CaldbRemoteDown
    | OperatingCondition | DetectorOperationChanged | DaqState | DetectorNotSending
    | AggregatorError | ModuleNotSending | MinModules | OutputEveryNth | PulseFilter
    | WrongDaqOutput | GuiServerTrouble | WebserviceDead | OverviewDown | MaxwellBusy
    | JobsPilingUp | JobNeverLaunched | ReportRenderingFailed | PlottingErrorsOnly
    | WrongInputParameter | VersionTaken | CaldbRemoteOverloaded | CaldbRequestStorm
    | FaultyConstants,
    Field(discriminator="kind"),
]
FAULT_KINDS = sorted(
    t.model_fields["kind"].annotation.__args__[0]  # type: ignore[union-attr]
    for t in (NewServer, WebserverDown, WebserverFilter, BadWebserverTemplate,
              DetectorPushing, KaraboNotStarted, CudaMissing, OldInstallation,
              CaldbRemoteDown, OperatingCondition, DetectorOperationChanged, DaqState,
              DetectorNotSending, AggregatorError, ModuleNotSending, MinModules,
              OutputEveryNth, PulseFilter, WrongDaqOutput, GuiServerTrouble, *_OFFLINE))


class Scenario(_F):
    """A scenario file; get one with ``load_scenario``."""
    instrument: Literal["SPB", "MID", "FXE", "SCS"]
    description: str = ""
    online: bool = Field(default=False, description="first bring the instrument online "
                         "(sim.operate: pipeline ACTIVE, detector sending)")
    faults: list[Fault] = Field(default_factory=list)


_FAULT = TypeAdapter(Fault)


def parse_fault(data: dict[str, object]) -> Fault:
    """One fault from a plain dict (for ``sim inject`` and tests)."""
    try:
        return _FAULT.validate_python(data)
    except PydanticError as exc:
        raise ValidationError([f"fault {data}: {e['msg']} at {e['loc']}"
                               for e in exc.errors()]) from exc


def parse_scenario(data: object, positions: object = None, file: str = "<scenario>") -> Scenario:
    try:
        return Scenario.model_validate(data)
    except PydanticError as exc:
        if positions is None:
            raise ValidationError([f"{file}: {e['msg']} at {'.'.join(map(str, e['loc']))}"
                                   for e in exc.errors()]) from exc
        raise ValidationError(pydantic_problems(_Untagged(exc), positions,  # type: ignore[arg-type]
                                                model=Scenario)) from exc


class _Untagged:
    """pydantic puts the union's tag (the fault kind) into ``loc``; YAML has no such level."""

    def __init__(self, exc: PydanticError) -> None:
        self.exc = exc

    def errors(self) -> list[dict[str, object]]:
        out = []
        for err in self.exc.errors():
            loc = err["loc"]
            keep = [p for i, p in enumerate(loc)
                    if not (i > 0 and isinstance(loc[i - 1], int) and p in FAULT_KINDS)]
            out.append({**err, "loc": tuple(keep)})
        return out


def load_scenario(path: Path | str) -> Scenario:
    data, positions = load_yaml(path)
    if not isinstance(data, dict):
        raise ValidationError([f"{path}:1:1: a scenario is a mapping with 'instrument' "
                               "and 'faults'"])
    return parse_scenario(data, positions, str(path))
