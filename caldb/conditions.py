"""Operating conditions: how they are stored, and the rule by which a request matches one.

The rule (docs/caldb.md repeats it): a stored condition C matches requested conditions R
when C and R name exactly the same parameters, and for every parameter p,
``C[p].value - C[p].lower_deviation_value <= R[p] <= C[p].value + C[p].upper_deviation_value``.

Both directions of "absent" fail on purpose. A parameter in R that C lacks (section 11.3:
a stray ``beam_energy`` on CAL_MANAGER) must not match, since C was never characterized for
it. A parameter in C that R lacks must not match either: otherwise a request that forgot
"Memory cells" would pick constants of any memory-cell setting, which is the "wrong
constants loaded" of section 11.4. CalCat behaves the same way, which is why its clients
drop parameters that old constants were injected without.

The rule is evaluated in SQL (a grouped count over ``parameters_conditions``), so SQLite
and PostgreSQL decide it, both with IEEE doubles, and the tests run it on both.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping
from typing import Any

from sqlalchemy import Float, Select, and_, case, func, literal, or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from caldb.catalogue import parameters_by_name
from caldb.errors import BadRequest
from caldb.models import Condition, Parameter, ParameterCondition

__all__ = [
    "Conditions",
    "Deviations",
    "check_conditions",
    "ensure_condition",
    "matching_condition_ids",
    "condition_table",
]

Conditions = Mapping[str, float]
Deviations = Mapping[str, tuple[float, float]]


def check_conditions(values: Mapping[str, Any]) -> dict[str, float]:
    """Refuse what the matching rule cannot handle: no parameters, non-numbers, NaN."""
    if not values:
        raise BadRequest("conditions must name at least one parameter")
    out: dict[str, float] = {}
    for name, value in values.items():
        if not isinstance(name, str) or not name.strip():
            raise BadRequest(f"parameter name {name!r} must be a non-empty string")
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise BadRequest(f"condition {name!r} = {value!r} is not a number")
        if not math.isfinite(value):
            raise BadRequest(f"condition {name!r} = {value!r} is not finite")
        out[name] = float(value)
    return out


def _digest(full: Mapping[str, tuple[float, float, float]]) -> str:
    text = ";".join(f"{k}={v!r}-{lo!r}+{up!r}" for k, (v, lo, up) in sorted(full.items()))
    return "Def" + hashlib.sha1(text.encode()).hexdigest()[:12]


def ensure_condition(
    s: Session, values: Conditions, deviations: Deviations | None = None
) -> Condition:
    """The condition row for these values and deviations, created once and then shared.

    Deviations default to each parameter's ``def_lower/upper_deviation_value``.
    """
    vals = check_conditions(values)
    deviations = dict(deviations or {})
    params = parameters_by_name(s, list(vals))
    stray = sorted(set(deviations) - set(vals))
    if stray:
        raise BadRequest(f"deviations given for parameters without a value: {', '.join(stray)}")
    full: dict[str, tuple[float, float, float]] = {}
    for name, value in vals.items():
        p = params[name]
        lo, up = deviations.get(name, (p.def_lower_deviation_value, p.def_upper_deviation_value))
        if lo < 0 or up < 0:
            raise BadRequest(f"deviations of {name!r} must not be negative")
        full[name] = (value, float(lo), float(up))
    name = _digest(full)
    existing = s.scalars(select(Condition).where(Condition.name == name)).first()
    if existing is not None:
        return existing
    cond = Condition(name=name)
    for pname, (value, lo, up) in full.items():
        cond.parameters_conditions.append(
            ParameterCondition(
                parameter_id=params[pname].id,
                value=value,
                lower_deviation_value=lo,
                upper_deviation_value=up,
            )
        )
    try:
        with s.begin_nested():
            s.add(cond)
    except IntegrityError:
        # Another writer created the same condition between our select and insert.
        return s.scalars(select(Condition).where(Condition.name == name)).one()
    return cond


def matching_condition_ids(values: Conditions) -> Select[tuple[int]]:
    """A subquery of the ids of conditions that match ``values`` by the module's rule."""
    vals = check_conditions(values)
    pc = ParameterCondition
    hits = [
        and_(
            Parameter.name == name,
            pc.value - pc.lower_deviation_value <= literal(value, Float),
            pc.value + pc.upper_deviation_value >= literal(value, Float),
        )
        for name, value in vals.items()
    ]
    return (
        select(pc.condition_id)
        .join(Parameter, pc.parameter_id == Parameter.id)
        .group_by(pc.condition_id)
        .having(
            func.count(pc.id) == len(vals),
            func.sum(case((or_(*hits), 1), else_=0)) == len(vals),
        )
    )


def condition_table(cond: Condition) -> dict[str, tuple[float, float, float]]:
    """``{parameter: (value, lower, upper)}`` of a stored condition."""
    return {
        pc.parameter.name: (pc.value, pc.lower_deviation_value, pc.upper_deviation_value)
        for pc in cond.parameters_conditions
    }
