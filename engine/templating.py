"""Every string in a runbook is a sandboxed Jinja template, resolved before it is used.

Undefined names are errors that name the runbook, the step and the variable. Quoting for
the shell is the transport's job (shlex.quote per argument), never the author's. Values
from the inventory are data put into the context, never rendered themselves.

The sandbox refuses private attributes (`''.__class__`) and limits `range()`; here it
also refuses `*` and `**` that would build a huge string or number (`'x' * 10**9`,
`7 ** 100000000`), since one step's template must not hang or exhaust a walk. A mapping's
key wins over a method of the same name: `params.values` is the parameter `values`.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any

from jinja2 import StrictUndefined, Template, TemplateError, UndefinedError
from jinja2.exceptions import SecurityError
from jinja2.runtime import Context
from jinja2.sandbox import SandboxedEnvironment

from .errors import RunbookError

__all__ = ["TemplateProblem", "render", "render_value", "has_template", "MAX_LENGTH"]

MAX_LENGTH = 1_000_000
"""Items of the longest string or list that `*` may build."""
_MAX_EXPONENT = 10_000


class _Sandbox(SandboxedEnvironment):
    intercepted_binops = frozenset({"*", "**"})

    def getattr(self, obj: Any, attribute: str) -> Any:
        """A key before an attribute for mappings: `params.values` is the parameter named
        values, not the dict's method (Jinja tries the attribute first)."""
        if isinstance(obj, Mapping) and attribute in obj:
            return obj[attribute]
        return super().getattr(obj, attribute)

    def call_binop(self, context: Context, operator: str, left: Any, right: Any) -> Any:
        if operator == "**" and isinstance(right, int) and right > _MAX_EXPONENT \
                and isinstance(left, int) and abs(left) > 1:
            raise SecurityError(f"{left} ** {right} is too large a number")
        if operator == "*":
            for seq, times in ((left, right), (right, left)):
                if isinstance(seq, str | list | tuple) and isinstance(times, int) \
                        and len(seq) * times > MAX_LENGTH:
                    raise SecurityError(f"'*' would make {len(seq) * times:,} items, more "
                                        f"than {MAX_LENGTH:,}")
        return super().call_binop(context, operator, left, right)


_env = _Sandbox(undefined=StrictUndefined, autoescape=False, keep_trailing_newline=True)
_FAILURES = (TemplateError, ArithmeticError, LookupError, TypeError, ValueError,
             RecursionError, MemoryError)


class TemplateProblem(RunbookError):
    pass


@functools.lru_cache(maxsize=4096)
def _template(text: str) -> Template:
    """Compiling costs far more than rendering; a fan-out renders the same text per host."""
    return _env.from_string(text)


@functools.lru_cache(maxsize=4096)
def _expression(text: str) -> Any:
    return _env.compile_expression(text, undefined_to_none=False)


def _short(text: str) -> str:
    return repr(text if len(text) <= 200 else text[:197] + "...")


def _why(exc: BaseException) -> str:
    if isinstance(exc, RecursionError):
        return "nested too deeply"
    if isinstance(exc, MemoryError):
        return "it needs more memory than there is"
    return str(exc)


def has_template(text: str) -> bool:
    return "{{" in text or "{%" in text


def render(text: str, context: Mapping[str, Any], where: str = "") -> str:
    """Render one string; `where` (runbook and step) goes into the error."""
    if not has_template(text):
        return text
    try:
        return _template(text).render(context)
    except UndefinedError as exc:
        raise TemplateProblem(f"{where}: unresolved variable: {exc.message}") from exc
    except _FAILURES as exc:
        raise TemplateProblem(f"{where}: template error in {_short(text)}: {_why(exc)}") from exc


def render_value(value: Any, context: Mapping[str, Any], where: str = "") -> Any:
    """Render strings inside dicts and lists; a string that is one `{{ expr }}` keeps its type."""
    if isinstance(value, str):
        stripped = value.strip()
        if (stripped.startswith("{{") and stripped.endswith("}}")
                and stripped.count("{{") == 1):
            try:
                expr = _expression(stripped[2:-2].strip())
                result = expr(**context)
                if isinstance(result, StrictUndefined):
                    str(result)  # raises UndefinedError naming the variable
            except UndefinedError as exc:
                raise TemplateProblem(f"{where}: unresolved variable: {exc.message}") from exc
            except _FAILURES as exc:
                raise TemplateProblem(f"{where}: template error in {_short(value)}: "
                                      f"{_why(exc)}") from exc
            return result
        return render(value, context, where)
    if isinstance(value, Mapping):
        return {k: render_value(v, context, f"{where}.{k}" if where else str(k))
                for k, v in value.items()}
    if isinstance(value, list):
        return [render_value(v, context, where) for v in value]
    return value
