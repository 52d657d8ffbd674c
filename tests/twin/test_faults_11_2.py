"""11.2: start pipeline times out on initializing devices."""

from __future__ import annotations

import pytest

from tests.twin._kit import (
    IDS,
    dev,
    heal,
    inject,
    karabo_check,
    restart_servers,
    run_actions,
    spbonc,
    start_pipeline,
    stop_detector,
    wait,
)

pytestmark = pytest.mark.twin


def test_karabo_not_started_times_out_init_11_2(spb):
    from karabo.middlelayer import State

    stop_detector()
    inject(spb, kind="karabo_not_started", host="spb-br-sys-cal-6")
    try:
        lines = karabo_check(spbonc(spb, "spb-br-sys-cal-6"))
        assert any(x.startswith("mlspb_spb_cal_6: down") for x in lines), lines
        init = start_pipeline(init_timeout=5)
        assert init.state == State.ERROR
        assert "timed out initializing devices" in str(dev("cal_manager").status)
        assert "Q4M1" in str(dev("cal_manager").status)
    finally:
        heal(spb, "SPB")
    restart_servers()


@pytest.mark.parametrize("version", [None, "11.2"], ids=["no-cuda-path", "cuda-not-installed"])
def test_gpu_server_without_cuda_times_out_init_11_2(spb, version):
    from karabo.middlelayer import State

    stop_detector()
    inject(spb, kind="cuda_missing", host="spb-br-sys-cal-1", cuda_version=version)
    try:
        run = (spbonc(spb, "spb-br-sys-cal-1") / "var/service/mlspb_spb_cal_1/run").read_text()
        assert ("cuda-10.1" not in run) and ((version is None) == ("cuda-" not in run))
        corr = dev("corrections", 2)
        wait(lambda: str(corr.state) == "INIT" and not corr.gpuAvailable, 60)
        init = start_pipeline(init_timeout=8)
        assert init.state == State.ERROR
        assert "OFFSET_CORR_Q1M3" in str(dev("cal_manager").status)
    finally:
        heal(spb, "SPB")
    restart_servers()
    wait(lambda: dev("corrections", 2).gpuAvailable, 30)


def test_old_installation_on_exflonc_takes_device_ids_11_2(spb):
    from karabo.middlelayer import State

    stop_detector()
    inject(spb, kind="old_installation", modules=[2])
    try:
        old = spb.hosts["exflonc10"].root / "scratch" / "spbonc" / "karabo"
        assert any(x.startswith("mlspb_spb_cal_old: up") for x in karabo_check(old))
        # The id now belongs to the old CPU-only installation: no GPU there.
        got = run_actions(str(spb.broker_url), spb.topics["SPB"],
                          [{"device": IDS["corrections"][2], "get": ["gpuAvailable"]}])
        assert got == [{"gpuAvailable": False}]
        init = start_pipeline(init_timeout=8)
        assert init.state == State.ERROR
        assert "OFFSET_CORR_Q1M3" in str(dev("cal_manager").status)
    finally:
        heal(spb, "SPB")
    restart_servers()
