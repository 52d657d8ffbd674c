"""The shape of a detector definition: geometry, raw layout, gain encoding, conditions.

Definitions are frozen dataclasses so that one module-level constant per detector type
can be shared by the engine, the dark characterization and the twin without anyone
mutating it.  Get one from `detectors.get_detector_type("AGIPD")`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from detectors.errors import ConditionsError

__all__ = [
    "ConditionParameter",
    "GainEncoding",
    "RawLayout",
    "DetectorType",
    "ConditionValue",
]

ConditionValue = float | str


@dataclass(frozen=True)
class ConditionParameter:
    """One operating-condition parameter as CalCat names it.

    `drop_at` encodes the database quirk that older constants were injected without
    the parameter: when the value equals `drop_at`, the parameter is left out so that
    those constants still match.  A parameter whose value is None is left out too.
    """

    name: str
    field: str
    default: ConditionValue | None = None
    required: bool = False
    drop_at: float | None = None
    text: bool = False


@dataclass(frozen=True)
class GainEncoding:
    """How a raw word or frame carries the gain stage.

    kind "single": one gain stage, the word is the ADC value.
    kind "digital_plane": a second plane per frame holds a level that thresholds
    (ThresholdsDark) split into stages (AGIPD).
    kind "bits": the stage code sits in the bits above the ADC value
    (`code << gain_shift | adc`); `stage_codes[i]` is the code for stage i.
    """

    kind: Literal["single", "digital_plane", "bits"]
    adc_bits: int
    gain_shift: int = 0
    stage_codes: tuple[int, ...] = (0,)
    reference: str = ""

    @property
    def stages(self) -> int:
        return len(self.stage_codes)

    @property
    def adc_max(self) -> int:
        return (1 << self.adc_bits) - 1

    def adc(self, raw: np.ndarray) -> np.ndarray:
        """The ADC value of raw words (gain bits cleared)."""
        raw = np.asarray(raw)
        if self.kind != "bits":
            return raw
        return raw & np.asarray(self.adc_max, dtype=raw.dtype)

    def stage(self, raw: np.ndarray) -> np.ndarray:
        """Gain stage (0 high, 1 medium, 2 low) of raw words; 255 for an unused code."""
        raw = np.asarray(raw)
        if self.kind == "single":
            return np.zeros(raw.shape, dtype=np.uint8)
        if self.kind == "digital_plane":
            raise ValueError(
                "the gain stage of a digital-plane detector needs thresholds: "
                "use detectors.gain.stage_from_digital(digital, thresholds)"
            )
        codes = (raw >> self.gain_shift).astype(np.intp)
        lookup = np.full(codes.max(initial=0) + 1, 255, dtype=np.uint8)
        for stage, code in enumerate(self.stage_codes):
            if code < lookup.size:
                lookup[code] = stage
        return lookup[codes]

    def encode(self, adc: np.ndarray, stage: int) -> np.ndarray:
        """The raw uint16 word for ADC values at one gain stage (inverse of adc/stage)."""
        if not 0 <= stage < self.stages:
            raise ValueError(f"gain stage {stage} out of range 0..{self.stages - 1}")
        word = np.clip(np.asarray(adc), 0, self.adc_max).astype(np.uint16)
        if self.kind == "bits":
            word |= np.uint16(self.stage_codes[stage] << self.gain_shift)
        return word


@dataclass(frozen=True)
class RawLayout:
    """Where and how a module's raw data are stored in EuXFEL files.

    layout "xtdf": frames along the first axis of `image.*` datasets, a frame shape of
    (planes, rows, columns), and cell ids in `image.cellId` (AGIPD, LPD, DSSC).
    layout "train": one entry per train; the data have a cells axis when
    `cells_axis` is true (JUNGFRAU) and are one image per train otherwise (cameras).
    """

    layout: Literal["xtdf", "train"]
    source_template: str
    data_key: str
    frame_shape: tuple[int, ...]
    da_template: str
    first_module: int = 0
    cells_axis: bool = False
    cell_key: str | None = None
    gain_key: str | None = None
    keys: tuple[str, ...] = ()

    def source(self, karabo_id: str, module: int) -> str:
        return self.source_template.format(karabo_id=karabo_id, module=module)

    def karabo_da(self, module: int) -> str:
        return self.da_template.format(module=module)


@dataclass(frozen=True)
class DetectorType:
    """A detector type: geometry, raw layout, gain encoding, dark constants, conditions.

    Get one with `detectors.get_detector_type(name)`; all of them are in
    `detectors.DETECTOR_TYPES`.
    """

    name: str
    display_name: str
    calcat_type: str
    module_shape: tuple[int, int]
    memory_cells: int
    gain: GainEncoding
    raw: RawLayout
    instances: Mapping[str, int]
    dark_constants: tuple[str, ...]
    dark_parameters: tuple[ConditionParameter, ...]
    component: str | None = None
    example_karabo_id: str = ""
    corrected_shape: tuple[int, int] | None = None
    notes: tuple[str, ...] = field(default=())

    @property
    def gain_stages(self) -> int:
        return self.gain.stages

    @property
    def max_modules(self) -> int:
        return max(self.instances.values())

    def module_numbers(self, n_modules: int | None = None) -> range:
        """Module numbers as used in source names, for the first `n_modules` modules."""
        count = self.max_modules if n_modules is None else n_modules
        if not 1 <= count <= self.max_modules:
            raise ValueError(f"{self.display_name} has 1..{self.max_modules} modules, not {count}")
        first = self.raw.first_module
        return range(first, first + count)

    def check_module(self, module: int) -> int:
        first = self.raw.first_module
        if not first <= module < first + self.max_modules:
            raise ValueError(
                f"{self.display_name} module numbers run from {first} to "
                f"{first + self.max_modules - 1}, not {module}"
            )
        return module

    def source(self, karabo_id: str, module: int) -> str:
        """The raw instrument source of one module, e.g. SPB_DET_AGIPD1M-1/DET/3CH0:xtdf."""
        return self.raw.source(karabo_id, self.check_module(module))

    def karabo_da(self, module: int) -> str:
        """The data aggregator name of one module, e.g. AGIPD03 or JNGFR01."""
        return self.raw.karabo_da(self.check_module(module))

    def module_label(self, module: int) -> str:
        """The name operators use for a module: Q1M1..Q4M4 on 1M XTDF detectors.

        The guidelines (section on train strides) map channel 0 to Q1M1 and channel 15
        to Q4M4; other types go by their aggregator name.
        """
        self.check_module(module)
        if self.raw.layout == "xtdf" and self.max_modules == 16:
            return f"Q{module // 4 + 1}M{module % 4 + 1}"
        return self.karabo_da(module)

    def conditions(self, **values: object) -> dict[str, ConditionValue]:
        """Dark-constant operating conditions under CalCat's names, with the drop rules.

        Keyword names are the snake_case fields (`sensor_bias_voltage=300`).  Every
        problem is collected before failing: unknown names, missing required values and
        values that are not numbers.
        """
        by_field = {p.field: p for p in self.dark_parameters}
        problems = [
            f"unknown parameter {key!r} for {self.display_name} "
            f"(known: {', '.join(sorted(by_field))})"
            for key in values
            if key not in by_field
        ]
        result: dict[str, ConditionValue] = {}
        for param in self.dark_parameters:
            value = values.get(param.field, param.default)
            if value is None:
                if param.required:
                    problems.append(f"{param.field} ({param.name!r}) is required")
                continue
            converted = _convert(param, value, problems)
            if converted is None:
                continue
            if param.drop_at is not None and converted == param.drop_at:
                continue
            result[param.name] = converted
        if problems:
            raise ConditionsError(
                f"bad operating conditions for {self.display_name}: " + "; ".join(problems)
            )
        return result


def _convert(
    param: ConditionParameter, value: object, problems: list[str]
) -> ConditionValue | None:
    if param.text:
        if isinstance(value, str):
            return value
        problems.append(f"{param.field} must be text, not {value!r}")
        return None
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, int | float | np.integer | np.floating):
        number = float(value)
        if np.isfinite(number):
            return number
    problems.append(f"{param.field} must be a finite number, not {value!r}")
    return None
