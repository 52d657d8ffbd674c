"""The inventory: the facility tables of the guidelines, site overlays and their errors."""

from __future__ import annotations

import textwrap
from pathlib import Path

import jinja2
import pytest

from engine.errors import RunbookError, ValidationError
from engine.inventory import (
    HostView,
    UnknownName,
    known_sites,
    load_site,
    search_path,
    site_name,
)

INSTRUMENTS = ["SPB", "FXE", "SQS", "SCS", "MID", "HED"]


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch, tmp_path):
    monkeypatch.delenv("RUNBOOK_SITE", raising=False)
    monkeypatch.delenv("RUNBOOK_INVENTORY_PATH", raising=False)
    monkeypatch.setenv("RUNBOOK_SIM_DIR", str(tmp_path / "no-twin"))


@pytest.fixture(scope="module")
def xfel():
    return load_site("xfel")


def write_site(root: Path, name: str, **files: str) -> Path:
    """Write `<root>/<name>/<file>.yaml` for each keyword (site=..., extra=...)."""
    folder = root / name
    folder.mkdir(parents=True, exist_ok=True)
    for stem, text in files.items():
        (folder / f"{stem}.yaml").write_text(textwrap.dedent(text).lstrip("\n"))
    return folder


def use_path(monkeypatch, *dirs: Path) -> None:
    monkeypatch.setenv("RUNBOOK_INVENTORY_PATH", ":".join(str(d) for d in dirs))


def problems_of(name: str) -> list[str]:
    with pytest.raises(ValidationError) as info:
        load_site(name)
    return info.value.problems


TINY = """
    site: tiny
    vars: {level: site, only_site: 1}
    hosts:
      "box-[1-2]": {vars: {level: host}}
    groups:
      everyone: {hosts: [gw], vars: {level: site-group}}
    instruments:
      LAB:
        sase: 1
        karabo: {gui_server: gui, broker: "tcp://b:7777", topic: LAB}
        vars: {level: instrument, only_instrument: 2}
        groups:
          boxes: {hosts: ["box-[0-2]"], vars: {level: group, only_group: 3}}
"""


# --- the facility, as the guidelines document it -------------------------------------

def test_xfel_has_the_six_instruments(xfel):
    assert sorted(xfel.instrument_names()) == sorted(INSTRUMENTS)
    assert xfel.name == "xfel"
    assert [p.name for p in xfel.files] == ["site.yaml", "instruments.yaml"]


@pytest.mark.parametrize(
    ("instrument", "gui", "sase", "topic"),
    [
        pytest.param("SPB", "spb-rr-sys-con-gui1", "sa1", "SPB", id="SPB"),
        pytest.param("FXE", "fxe-rr-sys-con-gui1", "sa1", "FXE", id="FXE"),
        pytest.param("SQS", "sqs-rr-sys-con-gui1", "sa3", "SQS", id="SQS"),
        pytest.param("SCS", "scs-rr-sys-con-gui1", "sa3", "SCS", id="SCS"),
        pytest.param("MID", "mid-rr-sys-con-gui1", "sa2", "MID", id="MID"),
        pytest.param("HED", "hed-rr-sys-con-gui1", "sa2", "HED", id="HED"),
    ],
)
def test_section_2_gui_servers_and_brokers(xfel, instrument, gui, sase, topic):
    karabo = xfel.instrument(instrument).karabo
    assert karabo.gui_server == gui
    assert karabo.broker == f"tcp://{sase}-br-sys-broker-1:7777"
    assert karabo.topic == topic
    assert xfel.instrument(instrument).sase == int(sase[-1])


@pytest.mark.parametrize(
    ("instrument", "restart_hosts", "account", "caldb_first", "online"),
    [
        pytest.param("SPB", 8, "spbonc", "spb-br-sys-cal-0", "exflonc10", id="SPB"),
        pytest.param("FXE", 8, "fxeonc", "fxe-br-sys-cal-0", "exflonc10", id="FXE"),
        pytest.param("SQS", 1, "sqsonc", "scs-br-sys-cal-0", "exflonc14", id="SQS"),
        pytest.param("SCS", 8, "scsonc", "scs-br-sys-cal-0", "exflonc14", id="SCS"),
        pytest.param("MID", 8, "midonc", "mid-br-sys-cal-0", "exflonc17", id="MID"),
        pytest.param("HED", 1, "hedonc", "mid-br-sys-cal-0", "exflonc17", id="HED"),
    ],
)
def test_section_10_11_host_groups(xfel, instrument, restart_hosts, account, caldb_first,
                                   online):
    restart = xfel.group_hosts(instrument, "cal_restart")
    assert len(restart) == restart_hosts
    assert {h.vars["account"] for h in restart} == {account}
    caldb = xfel.group_hosts(instrument, "caldb_remote")
    assert len(caldb) == 9
    assert caldb[0].name == caldb_first
    assert caldb[-1].name == caldb_first[:-1] + "8"
    assert {h.vars["account"] for h in caldb} == {"xcal"}
    assert [h.name for h in xfel.group_hosts(instrument, "online_cluster")] == [online]


def test_fxe_restart_hosts_are_kept_as_written_in_11_1(xfel):
    names = [h.name for h in xfel.group_hosts("FXE", "cal_restart")]
    assert names[0] == "sa1-br-sys-cal-0" and names[-1] == "sa1-br-sys-cal-7"


@pytest.mark.parametrize("instrument", ["SPB", "MID", "FXE", "SCS"])
def test_section_3_calibration_devices(xfel, instrument):
    devices = xfel.instrument(instrument).devices
    detector_id = {"SPB": "SPB_DET_AGIPD1M-1", "MID": "MID_DET_AGIPD1M-1",
                   "FXE": "FXE_DET_LPD1M-1", "SCS": "SCS_DET_DSSC1M-1"}[instrument]
    assert devices.restart == f"{detector_id}/CAL/RESTART"
    assert devices.init == f"{detector_id}/CAL/INIT"
    assert devices.cal_manager == f"{detector_id}/CAL/CAL_MANAGER"


@pytest.mark.parametrize("instrument", ["SQS", "HED"])
def test_sqs_and_hed_have_no_mhz_calibration_devices(xfel, instrument):
    inst = xfel.instrument(instrument)
    assert inst.devices.restart is None and inst.devices.cal_manager is None
    assert "Karabo project" in inst.note
    assert not any(d.mhz for d in inst.detectors.values())


@pytest.mark.parametrize(
    ("instrument", "detector", "dtype", "karabo_id", "n_da", "first_da"),
    [
        pytest.param("SPB", "agipd", "AGIPD", "SPB_DET_AGIPD1M-1", 16, "AGIPD00", id="spb-agipd"),
        pytest.param("MID", "agipd", "AGIPD", "MID_DET_AGIPD1M-1", 16, "AGIPD00", id="mid-agipd"),
        pytest.param("FXE", "lpd", "LPD", "FXE_DET_LPD1M-1", 16, "LPD00", id="fxe-lpd"),
        pytest.param("FXE", "jungfrau", "JUNGFRAU", "FXE_XAD_JF1M", 2, "JNGFR01", id="fxe-jf"),
        pytest.param("SCS", "dssc", "DSSC", "SCS_DET_DSSC1M-1", 16, "DSSC00", id="scs-dssc"),
        pytest.param("SCS", "fastccd", "FastCCD", "SCS_CDIDET_FCCD2M", 1, "DA05", id="scs-fccd"),
        pytest.param("SQS", "pnccd", "pnCCD", "SQS_NQS_PNCCD1MP", 1, "PNCCD01", id="sqs-pnccd"),
        pytest.param("HED", "epix100", "ePix100", "HED_IA1_EPX100-3", 1, "EPIX01", id="hed-epix"),
    ],
)
def test_detectors(xfel, instrument, detector, dtype, karabo_id, n_da, first_da):
    det = xfel.instrument(instrument).detectors[detector]
    assert (det.type, det.karabo_id, det.modules) == (dtype, karabo_id, n_da)
    assert len(det.karabo_da) == n_da and det.karabo_da[0] == first_da


def test_offline_service_and_paths(xfel):
    ws = xfel.site.vars["webservice"]
    assert ws["port"] == 8008 and ws["account"] == "xcal"
    assert ws["log"] == "/home/xcal/calibration_webservice_run/web.log"
    assert [h.name for h in xfel.group_hosts(None, "webservice")] == ["max-exfl016"]
    assert xfel.site.vars["caldb_remote_offline"]["server"] == "pythonserver_max_web_rcal_0"
    assert xfel.site.vars["cuda_path"] == "/usr/local/cuda-10.1"
    assert "{det_instance}" in xfel.site.vars["report_path"]
    gateways = xfel.group_hosts("SPB", "gateway")
    assert [h.name for h in gateways] == ["exflgateway"]
    assert xfel.group_hosts(None, "bastion")[0].name == "bastion.desy.de"


def test_every_placeholder_mail_is_marked_assumed(xfel):
    for name in INSTRUMENTS:
        inst = xfel.instrument(name)
        assert inst.mail and "mail" in inst.assumed
    assert xfel.site.vars["support_mail"] == "det-support@xfel.eu"


def test_local_site_loads():
    local = load_site("local")
    assert local.instrument_names() == ["LAB"]
    assert [h.name for h in local.group_hosts("lab", "cal_restart")] == ["localhost"]


# --- lookups, variables, context -----------------------------------------------------

def test_instrument_lookup_ignores_case(xfel):
    assert xfel.instrument("spb").name == "SPB"


def test_unknown_instrument_suggests_and_lists(xfel):
    with pytest.raises(UnknownName) as info:
        xfel.instrument("SBP")
    assert "did you mean 'SPB'" in str(info.value)
    assert "FXE, SQS" in str(info.value)


def test_unknown_group_suggests(xfel):
    with pytest.raises(UnknownName) as info:
        xfel.group_hosts("SPB", "cal_restrat")
    assert "did you mean 'cal_restart'" in str(info.value)
    assert isinstance(info.value, RunbookError)


def test_vars_merge_site_instrument_group_host(tmp_path, monkeypatch):
    write_site(tmp_path, "tiny", site=TINY)
    use_path(monkeypatch, tmp_path)
    inv = load_site("tiny")
    hosts = inv.group_hosts("LAB", "boxes")
    assert [h.name for h in hosts] == ["box-0", "box-1", "box-2"]
    assert [h.vars["level"] for h in hosts] == ["group", "host", "host"]
    assert hosts[0].vars == {"level": "group", "only_site": 1, "only_instrument": 2,
                             "only_group": 3}
    site_group = inv.group_hosts(None, "everyone")
    assert site_group == [HostView("gw", "everyone", {"level": "site-group", "only_site": 1})]
    with_instrument = inv.group_hosts("LAB", "everyone")
    assert with_instrument[0].vars["only_instrument"] == 2


def test_context_is_plain_and_renders(xfel):
    ctx = xfel.context("SPB")
    assert set(ctx) == {"site", "instrument", "vars"}
    inst = ctx["instrument"]
    assert inst["groups"]["cal_restart"][0] == "spb-br-sys-cal-0"
    assert inst["detectors"]["agipd"]["karabo_id"] == "SPB_DET_AGIPD1M-1"
    assert ctx["vars"]["support_mail"] == "det-support@xfel.eu"
    env = jinja2.Environment(undefined=jinja2.StrictUndefined)
    text = env.from_string("{{ instrument.devices.restart }} on {{ instrument.karabo.topic }}")
    assert text.render(ctx) == "SPB_DET_AGIPD1M-1/CAL/RESTART on SPB"
    with pytest.raises(jinja2.UndefinedError):
        env.from_string("{{ instrument.devices.restart }}").render(xfel.context("SQS"))
    assert "instrument" not in xfel.context(None)


@pytest.mark.parametrize(
    ("instrument", "modules"),
    [pytest.param("SPB", 16, id="SPB"), pytest.param("SCS", 16, id="SCS"),
     pytest.param("SQS", None, id="SQS-no-mhz")],
)
def test_context_names_the_mhz_detector(xfel, instrument, modules):
    inst = xfel.context(instrument)["instrument"]
    assert inst.get("mhz_detector", {}).get("modules") == modules


def test_assumed_device_ids_are_marked(xfel):
    for name in ["SPB", "FXE", "SCS", "MID"]:
        inst = xfel.instrument(name)
        assert inst.devices.daq_run_controller == f"{name}_DAQ_DATA/DM/RUN_CONTROL"
        assert {"devices.raw_appender", "devices.bridge", "devices.detector"} <= set(
            inst.assumed)
        assert "devices.restart" not in inst.assumed


def test_context_is_a_copy(xfel):
    ctx = xfel.context("SPB")
    ctx["instrument"]["groups"]["cal_restart"].clear()
    ctx["vars"]["cuda_path"] = "changed"
    assert len(xfel.context("SPB")["instrument"]["groups"]["cal_restart"]) == 8
    assert xfel.site.vars["cuda_path"] == "/usr/local/cuda-10.1"


# --- the search path and site choice -------------------------------------------------

def test_site_name_precedence(monkeypatch):
    assert site_name(None) == "xfel"
    monkeypatch.setenv("RUNBOOK_SITE", "local")
    assert site_name(None) == "local"
    assert site_name("sim") == "sim"


def test_search_path_order(monkeypatch, tmp_path):
    use_path(monkeypatch, tmp_path / "a", tmp_path / "b")
    dirs = search_path()
    assert dirs[:2] == [tmp_path / "a", tmp_path / "b"]
    assert dirs[2].name == "inventory" and dirs[3] == tmp_path / "no-twin" / "inventory"


def test_sim_dir_site_is_found(monkeypatch, tmp_path):
    write_site(tmp_path / "twin" / "inventory", "tiny", site=TINY)
    monkeypatch.setenv("RUNBOOK_SIM_DIR", str(tmp_path / "twin"))
    assert load_site("tiny").instrument("LAB").sase == 1


def test_inventory_path_shadows_repo_sites(monkeypatch, tmp_path):
    write_site(tmp_path, "local", site=TINY.replace("site: tiny", "site: local"))
    use_path(monkeypatch, tmp_path)
    assert known_sites()["local"] == tmp_path / "local"
    assert load_site("local").group_hosts("LAB", "boxes")[0].name == "box-0"


def test_unknown_site_lists_known_ones():
    with pytest.raises(UnknownName) as info:
        load_site("xfle")
    message = str(info.value)
    assert "did you mean 'xfel'" in message
    assert "local" in message and "xfel" in message


# --- overlays --------------------------------------------------------------------------

OVERLAY = """
    site: mine
    extends: tiny
    vars: {level: overlay}
    instruments:
      LAB:
        groups:
          boxes: {hosts: ["box-[5-6]"]}
"""


def test_extends_merges_over_the_base(tmp_path, monkeypatch):
    write_site(tmp_path, "tiny", site=TINY)
    write_site(tmp_path, "mine", site=OVERLAY)
    use_path(monkeypatch, tmp_path)
    inv = load_site("mine")
    assert inv.name == "mine"
    assert inv.site.vars == {"level": "overlay", "only_site": 1}
    boxes = inv.group_hosts("LAB", "boxes")
    assert [h.name for h in boxes] == ["box-5", "box-6"]
    assert boxes[0].vars["only_group"] == 3
    assert inv.instrument("LAB").karabo.topic == "LAB"
    assert [p.parent.name for p in inv.files] == ["tiny", "mine"]


def test_overlay_problem_points_into_overlay_and_base_problem_into_base(tmp_path,
                                                                         monkeypatch):
    write_site(tmp_path, "tiny", site=TINY.replace("sase: 1", "sase: 9"))
    write_site(tmp_path, "mine", site=OVERLAY.replace('"box-[5-6]"', '"box-[6-5]"'))
    use_path(monkeypatch, tmp_path)
    problems = problems_of("mine")
    base, over = (tmp_path / "tiny" / "site.yaml"), (tmp_path / "mine" / "site.yaml")
    assert any(p.startswith(f"{over}:7:23:") and "reversed" in p for p in problems), problems
    assert any(p.startswith(f"{base}:9:5:") and "sase" in p for p in problems), problems


def test_extends_cycle_is_an_error(tmp_path, monkeypatch):
    write_site(tmp_path, "a", site="site: a\nextends: b\n")
    write_site(tmp_path, "b", site="site: b\nextends: a\n")
    use_path(monkeypatch, tmp_path)
    [msg] = problems_of("a")
    assert msg.startswith(f"{tmp_path / 'b' / 'site.yaml'}:2:1:")
    assert "extends cycle: a -> b -> a" in msg


def test_extends_unknown_site(tmp_path, monkeypatch):
    write_site(tmp_path, "a", site="site: a\nextends: xfle\n")
    use_path(monkeypatch, tmp_path)
    [msg] = problems_of("a")
    assert ":2:1: unknown site 'xfle' (did you mean 'xfel'?)" in msg


def test_fingerprint_changes_with_a_value(tmp_path, monkeypatch):
    write_site(tmp_path, "tiny", site=TINY)
    use_path(monkeypatch, tmp_path)
    before = load_site("tiny").fingerprint()
    assert load_site("tiny").fingerprint() == before
    write_site(tmp_path, "tiny", site=TINY.replace("only_group: 3", "only_group: 4"))
    after = load_site("tiny").fingerprint()
    assert after != before and len(after) == 64


# --- positioned errors -----------------------------------------------------------------

@pytest.mark.parametrize(
    ("change", "where", "message"),
    [
        pytest.param(("vars:", "varz:"), "2:1", "unknown key 'varz' (did you mean 'vars'?)",
                     id="unknown-top-key"),
        pytest.param(("groups:\n      boxes: {hosts", "groups:\n      boxes: {hots"),
                     "13:15", "unknown key 'hots' (did you mean 'hosts'?)",
                     id="unknown-group-key"),
        pytest.param(('"box-[0-2]"', '"box-[0-]"'), "13:23",
                     "bad host pattern 'box-[0-]'", id="bad-host-pattern"),
        pytest.param(("sase: 1", "sase: one"), "9:5", "sase", id="bad-type"),
        pytest.param(("topic: LAB}", "}"), "10:5", "missing required key 'topic'",
                     id="missing-key"),
        pytest.param(("site: tiny", "site: other"), "1:1",
                     "site 'other' is in folder 'tiny'", id="site-name-mismatch"),
    ],
)
def test_positioned_problems(tmp_path, monkeypatch, change, where, message):
    text = textwrap.dedent(TINY).lstrip("\n").replace(*change, 1)
    assert text != textwrap.dedent(TINY).lstrip("\n")
    write_site(tmp_path, "tiny", site=text)
    use_path(monkeypatch, tmp_path)
    problems = problems_of("tiny")
    expected = f"{tmp_path / 'tiny' / 'site.yaml'}:{where}:"
    assert any(p.startswith(expected) and message in p for p in problems), problems


def test_every_problem_is_collected(tmp_path, monkeypatch):
    text = TINY.replace("sase: 1", "sase: 0").replace("vars: {level: site", "varz: {level: s", 1)
    write_site(tmp_path, "tiny", site=text)
    use_path(monkeypatch, tmp_path)
    problems = problems_of("tiny")
    assert len(problems) == 2
    assert any("varz" in p for p in problems) and any("sase" in p for p in problems)


def test_duplicate_key_across_files_names_both(tmp_path, monkeypatch):
    write_site(tmp_path, "tiny", site=TINY, zz_more="vars:\n  only_site: 2\n  new: 1\n")
    use_path(monkeypatch, tmp_path)
    [msg] = problems_of("tiny")
    site_file = tmp_path / "tiny" / "site.yaml"
    more_file = tmp_path / "tiny" / "zz_more.yaml"
    assert msg.startswith(f"{more_file}:2:3: 'vars.only_site' is already defined at ")
    assert msg.endswith(f"{site_file}:2:21")


def test_mappings_from_several_files_merge(tmp_path, monkeypatch):
    write_site(tmp_path, "tiny", site=TINY, zz_more="vars:\n  new: 1\n")
    use_path(monkeypatch, tmp_path)
    assert load_site("tiny").site.vars["new"] == 1


def test_assumed_must_name_a_key(tmp_path, monkeypatch):
    text = TINY.replace("vars: {level: instrument",
                        "assumed: [varz.level]\n        vars: {level: instrument")
    write_site(tmp_path, "tiny", site=text)
    use_path(monkeypatch, tmp_path)
    [msg] = problems_of("tiny")
    assert msg.startswith(f"{tmp_path / 'tiny' / 'site.yaml'}:11:15:")
    assert "assumed: 'varz.level' names no key here (did you mean 'vars'?)" in msg


def test_host_in_two_host_keys_is_an_error(tmp_path, monkeypatch):
    text = TINY.replace('"box-[1-2]": {vars: {level: host}}',
                        '"box-[1-2]": {vars: {level: host}}\n      box-2: {note: twice}')
    write_site(tmp_path, "tiny", site=text)
    use_path(monkeypatch, tmp_path)
    [msg] = problems_of("tiny")
    assert "host 'box-2' is covered by both 'box-[1-2]' and 'box-2'" in msg


def test_relative_ssh_config_is_resolved_against_its_file(tmp_path, monkeypatch):
    write_site(tmp_path, "tiny", site=TINY)
    write_site(tmp_path, "mine", site="site: mine\nextends: tiny\n"
                                       "transport: {ssh: {config: ssh_config}}\n")
    use_path(monkeypatch, tmp_path)
    inv = load_site("mine")
    assert inv.site.transport.ssh.config == str(tmp_path / "mine" / "ssh_config")


def test_empty_site_file_is_an_error(tmp_path, monkeypatch):
    write_site(tmp_path, "tiny", site=TINY, zz_empty="")
    use_path(monkeypatch, tmp_path)
    [msg] = problems_of("tiny")
    assert msg == f"{tmp_path / 'tiny' / 'zz_empty.yaml'}:1:1: file is empty; " \
        "a site file holds a mapping"


def test_site_wide_karabo_broker_replaces_the_instruments(tmp_path, monkeypatch):
    write_site(tmp_path, "tiny", site=TINY)
    write_site(tmp_path, "mine", site="site: mine\nextends: tiny\n"
                                       "transport: {karabo: {broker: 'amqp://127.0.0.1:5672'}}\n")
    use_path(monkeypatch, tmp_path)
    assert load_site("tiny").karabo_endpoint("LAB").broker == "tcp://b:7777"
    inv = load_site("mine")
    assert inv.karabo_endpoint("lab").broker == "amqp://127.0.0.1:5672"
    assert inv.context("LAB")["instrument"]["karabo"]["broker"] == "amqp://127.0.0.1:5672"
    assert inv.instrument("LAB").karabo.broker == "tcp://b:7777"


def test_a_transport_path_with_a_nul_byte_is_refused_at_its_position(tmp_path, monkeypatch):
    """Found by the inventory fuzzer on a fresh clone: it was an uncaught ValueError."""
    write_site(tmp_path, "nul", site='site: nul\ntransport:\n  ssh:\n    config: "a\\0b"\n')
    use_path(monkeypatch, tmp_path)
    [msg] = problems_of("nul")
    assert msg.startswith(f"{tmp_path / 'nul' / 'site.yaml'}:4:5:"), msg
    assert "NUL byte" in msg
