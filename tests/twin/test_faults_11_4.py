"""11.4: the detector operation changed under the CAL_MANAGER."""

from __future__ import annotations

import pytest

from tests.twin._kit import dev, flowing, inject, wait

pytestmark = pytest.mark.twin


def test_detector_operation_changed_fails_verification_11_4(running):
    inject(running, kind="detector_operation_changed", acquisition_rate=4.5)
    try:
        manager = dev("cal_manager")
        manager.verifyConfig()
        wait(lambda: "Verification failed" in str(manager.verificationResult), 10)
        assert "acquisition_rate is 4.5" in str(manager.verificationResult)
    finally:
        flowing(running)
    dev("cal_manager").verifyConfig()
    wait(lambda: dev("cal_manager").verificationResult == "Verification OK", 10)
