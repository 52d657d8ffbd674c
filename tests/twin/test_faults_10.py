"""Section 10 faults (no data on disk, no online data), on a running pipeline."""

from __future__ import annotations

import pytest

from tests.twin._kit import dev, flowing, inject, wait

pytestmark = pytest.mark.twin


def test_daq_not_monitoring_stops_online_data_10_2(running):
    inject(running, kind="daq_not_monitoring")
    try:
        assert str(dev("run_controller").state) == "IGNORING"
        raw = dev("raw_appender")
        wait(lambda: raw.updateRate == 0 and dev("splitters", 4).inputRate == 0, 30)
        assert dev("aggregators", 4).inputRate > 0  # the detector still sends
    finally:
        flowing(running)


def test_detector_not_powered_sends_nothing_10_1(running):
    from karabo.native import KaraboError

    inject(running, kind="detector_not_sending", cause="unpowered")
    try:
        det = dev("detector")
        wait(lambda: str(det.state) == "OFF", 20)
        wait(lambda: dev("aggregators", 0).inputRate == 0, 20)
        with pytest.raises(KaraboError):
            det.start()
    finally:
        flowing(running)


def test_aggregator_in_error_drops_its_module_10_1(running):
    inject(running, kind="aggregator_error", module=5)
    try:
        agg = dev("aggregators", 5)
        wait(lambda: str(agg.state) == "ERROR", 20)
        raw = dev("raw_appender")
        wait(lambda: raw.modulesReceived == 15 and raw.updateRate == 0, 30)
        assert dev("splitters", 5).inputRate == 0
    finally:
        flowing(running)
