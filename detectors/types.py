"""The seven detector types that the guidelines support, one constant each.

Sources for the numbers (see docs/detectors.md for the full list):
- source names, keys and shapes: EXtra-data `components.py` and `tests/mockdata`;
- condition names, casing, defaults and drop rules: EXtra `calibration/conditions.py`
  (`AGIPDConditions`, `LPDConditions`, `DSSCConditions`, `JUNGFRAUConditions`) and the
  older `PNCCD_CalibrationData`; ePix100 and FastCCD from pycalibration's notebooks;
- gain encodings: AGIPD digital plane, LPD bits 12-13, JUNGFRAU bits 14-15 (codes
  0, 1, 3) as the facility's readers decode them.
"""

from __future__ import annotations

from detectors.model import ConditionParameter as P
from detectors.model import DetectorType, GainEncoding, RawLayout

__all__ = ["AGIPD", "LPD", "DSSC", "JUNGFRAU", "EPIX100", "PNCCD", "FASTCCD", "ALL"]

_XTDF_KEYS = (
    "image.data",
    "image.cellId",
    "image.pulseId",
    "image.trainId",
    "image.length",
    "image.status",
)


def _xtdf(prefix: str, frame_shape: tuple[int, ...]) -> RawLayout:
    return RawLayout(
        layout="xtdf",
        source_template="{karabo_id}/DET/{module}CH0:xtdf",
        data_key="image.data",
        frame_shape=frame_shape,
        da_template=prefix + "{module:02d}",
        cell_key="image.cellId",
        keys=_XTDF_KEYS,
    )


def _ccd_parameters(pixels_x: int, pixels_y: int) -> tuple[P, ...]:
    return (
        P("Sensor Bias Voltage", "sensor_bias_voltage", required=True),
        P("Memory cells", "memory_cells", default=1),
        P("Pixels X", "pixels_x", default=pixels_x),
        P("Pixels Y", "pixels_y", default=pixels_y),
        P("Integration Time", "integration_time", required=True),
        P("Sensor Temperature", "sensor_temperature", required=True),
        P("Gain Setting", "gain_setting", required=True),
    )


AGIPD = DetectorType(
    name="AGIPD",
    display_name="AGIPD",
    calcat_type="AGIPD-Type",
    module_shape=(512, 128),
    memory_cells=352,
    gain=GainEncoding(
        kind="digital_plane",
        adc_bits=14,
        stage_codes=(0, 1, 2),
        reference="image.data[:, 1] is the digital plane; ThresholdsDark splits it",
    ),
    raw=_xtdf("AGIPD", (2, 512, 128)),
    instances={"AGIPD-1M": 16, "AGIPD-500K": 8},
    dark_constants=("Offset", "Noise", "ThresholdsDark", "BadPixelsDark"),
    dark_parameters=(
        P("Sensor Bias Voltage", "sensor_bias_voltage", required=True),
        P("Pixels X", "pixels_x", default=512),
        P("Pixels Y", "pixels_y", default=128),
        P("Memory cells", "memory_cells", required=True),
        P("Acquisition rate", "acquisition_rate", required=True),
        P("Gain setting", "gain_setting"),
        P("Gain mode", "gain_mode", drop_at=0),
        P("Integration time", "integration_time", default=12, drop_at=12),
    ),
    component="AGIPD1M",
    example_karabo_id="SPB_DET_AGIPD1M-1",
)

LPD = DetectorType(
    name="LPD",
    display_name="LPD",
    calcat_type="LPD-Type",
    module_shape=(256, 256),
    memory_cells=512,
    gain=GainEncoding(
        kind="bits",
        adc_bits=12,
        gain_shift=12,
        stage_codes=(0, 1, 2),
        reference="bits 0-11 ADC, bits 12-13 gain (0 high, 1 medium, 2 low)",
    ),
    raw=_xtdf("LPD", (1, 256, 256)),
    instances={"LPD-1M": 16},
    dark_constants=("Offset", "Noise", "BadPixelsDark"),
    dark_parameters=(
        P("Sensor Bias Voltage", "sensor_bias_voltage", default=250.0),
        P("Memory cells", "memory_cells", default=512),
        P("Pixels X", "pixels_x", default=256),
        P("Pixels Y", "pixels_y", default=256),
        P("Feedback capacitor", "feedback_capacitor", default=5.0),
        P("Memory cell order", "memory_cell_order", text=True),
        P("Parallel gain", "parallel_gain", default=0, drop_at=0),
    ),
    component="LPD1M",
    example_karabo_id="FXE_DET_LPD1M-1",
)

DSSC = DetectorType(
    name="DSSC",
    display_name="DSSC",
    calcat_type="DSSC-Type",
    module_shape=(128, 512),
    memory_cells=800,
    gain=GainEncoding(kind="single", adc_bits=9, reference="one gain; 9-bit ADC words"),
    raw=_xtdf("DSSC", (1, 128, 512)),
    instances={"DSSC-1M": 16},
    dark_constants=("Offset", "Noise"),
    dark_parameters=(
        P("Sensor Bias Voltage", "sensor_bias_voltage", required=True),
        P("Memory cells", "memory_cells", required=True),
        P("Pixels X", "pixels_x", default=512),
        P("Pixels Y", "pixels_y", default=128),
        P("Pulse id checksum", "pulse_id_checksum"),
        P("Acquisition rate", "acquisition_rate"),
        P("Target gain", "target_gain"),
        P("Encoded gain", "encoded_gain"),
    ),
    component="DSSC1M",
    example_karabo_id="SCS_DET_DSSC1M-1",
)

JUNGFRAU = DetectorType(
    name="JUNGFRAU",
    display_name="JUNGFRAU",
    calcat_type="jungfrau-Type",
    module_shape=(512, 1024),
    memory_cells=16,
    gain=GainEncoding(
        kind="bits",
        adc_bits=14,
        gain_shift=14,
        stage_codes=(0, 1, 3),
        reference="top 2 bits: 0b00 high (G0), 0b01 medium (G1), 0b11 low (G2); "
        "raw files store them apart, as data.gain",
    ),
    raw=RawLayout(
        layout="train",
        source_template="{karabo_id}/DET/JNGFR{module:02d}:daqOutput",
        data_key="data.adc",
        frame_shape=(512, 1024),
        da_template="JNGFR{module:02d}",
        first_module=1,
        cells_axis=True,
        cell_key="data.memoryCell",
        gain_key="data.gain",
        keys=(
            "data.adc",
            "data.gain",
            "data.memoryCell",
            "data.frameNumber",
            "data.timestamp",
            "data.trainId",
        ),
    ),
    instances={"JF500K": 1, "JF1M": 2, "JF4M": 8},
    dark_constants=("Offset10Hz", "Noise10Hz", "BadPixelsDark10Hz"),
    dark_parameters=(
        P("Sensor Bias Voltage", "sensor_bias_voltage", required=True),
        P("Memory Cells", "memory_cells", required=True),
        P("Pixels X", "pixels_x", default=1024),
        P("Pixels Y", "pixels_y", default=512),
        P("Integration Time", "integration_time", required=True),
        P("Sensor temperature", "sensor_temperature", default=291),
        P("Gain Setting", "gain_setting", required=True),
        P("Gain mode", "gain_mode", drop_at=0),
        P("Exposure timeout", "exposure_timeout", default=25, drop_at=25),
    ),
    component="JUNGFRAU",
    example_karabo_id="FXE_XAD_JF1M",
)

EPIX100 = DetectorType(
    name="EPIX100",
    display_name="ePix100",
    calcat_type="ePix100-Type",
    module_shape=(708, 768),
    corrected_shape=(704, 768),
    memory_cells=1,
    gain=GainEncoding(kind="single", adc_bits=14, reference="one gain; 14-bit ADC words"),
    raw=RawLayout(
        layout="train",
        source_template="{karabo_id}/DET/RECEIVER:daqOutput",
        data_key="data.image.pixels",
        frame_shape=(708, 768),
        da_template="EPIX{module:02d}",
        first_module=1,
        keys=("data.image.pixels", "data.image.dims", "data.trainId", "data.backTemp"),
    ),
    instances={"ePix100": 1},
    dark_constants=("OffsetEPix100", "NoiseEPix100", "BadPixelsDarkEPix100"),
    dark_parameters=(
        P("Sensor Bias Voltage", "sensor_bias_voltage", required=True),
        P("Memory cells", "memory_cells", default=1),
        P("Pixels X", "pixels_x", default=708),
        P("Pixels Y", "pixels_y", default=768),
        P("Integration time", "integration_time", required=True),
        P("Sensor temperature", "sensor_temperature", default=288),
        P("In vacuum", "in_vacuum", default=0),
    ),
    example_karabo_id="MID_EXP_EPIX-1",
    notes=("rows 0, 1, 706 and 707 are calibration rows, cut after correction",),
)

PNCCD = DetectorType(
    name="PNCCD",
    display_name="pnCCD",
    calcat_type="pnCCD-Type",
    module_shape=(1024, 1024),
    memory_cells=1,
    gain=GainEncoding(kind="single", adc_bits=14, reference="one gain per run (Gain Setting)"),
    raw=RawLayout(
        layout="train",
        source_template="{karabo_id}/CAL/PNCCD_FMT-0:output",
        data_key="data.image",
        frame_shape=(1024, 1024),
        da_template="PNCCD{module:02d}",
        first_module=1,
        keys=("data.image", "data.trainId"),
    ),
    instances={"pnCCD1MP": 1},
    dark_constants=("OffsetCCD", "NoiseCCD", "BadPixelsDarkCCD"),
    dark_parameters=_ccd_parameters(1024, 1024),
    example_karabo_id="SQS_NQS_PNCCD1MP",
    notes=("the control aggregator is PNCCD02 (slow data), the images come from PNCCD01",),
)

FASTCCD = DetectorType(
    name="FASTCCD",
    display_name="FastCCD",
    calcat_type="FastCCD-Type",
    module_shape=(1934, 960),
    memory_cells=1,
    gain=GainEncoding(kind="single", adc_bits=14, reference="one gain per run (Gain Setting)"),
    raw=RawLayout(
        layout="train",
        source_template="{karabo_id}/DAQ/FCCD:daqOutput",
        data_key="data.image.pixels",
        frame_shape=(1934, 960),
        da_template="DA{module:02d}",
        first_module=5,
        keys=("data.image.pixels", "data.trainId"),
    ),
    instances={"FastCCD": 1},
    dark_constants=("OffsetCCD", "NoiseCCD", "BadPixelsDarkCCD"),
    dark_parameters=_ccd_parameters(1934, 960),
    example_karabo_id="SCS_CDIDET_FCCD2M",
    notes=("its single aggregator is DA05 in the pycalibration notebooks",),
)

ALL: tuple[DetectorType, ...] = (AGIPD, LPD, DSSC, JUNGFRAU, EPIX100, PNCCD, FASTCCD)
