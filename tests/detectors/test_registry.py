"""The registry finds every supported detector type and says what it does not know."""

import pytest

from detectors import DETECTOR_TYPES, UnknownDetectorType, get_detector_type
from engine.errors import RunbookError


def test_seven_types_are_registered():
    assert set(DETECTOR_TYPES) == {
        "AGIPD",
        "LPD",
        "DSSC",
        "JUNGFRAU",
        "EPIX100",
        "PNCCD",
        "FASTCCD",
    }


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("AGIPD", "AGIPD"),
        ("agipd", "AGIPD"),
        (" Jungfrau ", "JUNGFRAU"),
        ("ePix100", "EPIX100"),
        ("pnccd", "PNCCD"),
        ("FastCCD", "FASTCCD"),
    ],
)
def test_lookup_ignores_case(given, expected):
    assert get_detector_type(given).name == expected


def test_lookup_passes_a_type_through():
    assert get_detector_type(DETECTOR_TYPES["LPD"]) is DETECTOR_TYPES["LPD"]


def test_unknown_name_suggests_the_closest():
    with pytest.raises(UnknownDetectorType, match=r"did you mean 'JUNGFRAU'\?"):
        get_detector_type("jungfrou")


def test_unknown_name_without_neighbour_lists_known_types():
    with pytest.raises(RunbookError) as info:
        get_detector_type("xyz")
    assert "did you mean" not in str(info.value)
    assert "AGIPD" in str(info.value)
