"""11.4: the detector operation changed under the CAL_MANAGER."""

from __future__ import annotations

import pytest

from tests.twin._kit import dev, diagnose, flowing, inject, wait

pytestmark = pytest.mark.twin

TREE = "wrong-constants"


def test_running_pipeline_matches_its_detector_11_4(running):
    found = diagnose(TREE)
    assert found.code == 0, (found.findings, found.unknowns)
    assert found.step("conditions-vs-detector")["outcome"] == "ok"


@pytest.mark.parametrize(("rate", "cells", "subject"), [
    pytest.param(4.5, None, "acquisition_rate", id="4.5MHz"),
])
def test_detector_operation_changed_fails_verification_11_4(running, rate, cells, subject):
    inject(running, kind="detector_operation_changed", acquisition_rate=rate,
           memory_cells=cells)
    try:
        manager = dev("cal_manager")
        manager.verifyConfig()
        wait(lambda: "Verification failed" in str(manager.verificationResult), 10)
        assert f"{subject} is {rate:g}" in str(manager.verificationResult)

        found = diagnose(TREE)
        assert found.finding("operation-changed")["subject"] == subject
        assert {f["id"] for f in found.findings} == {"operation-changed"}
    finally:
        flowing(running)
    dev("cal_manager").verifyConfig()
    wait(lambda: dev("cal_manager").verificationResult == "Verification OK", 10)
