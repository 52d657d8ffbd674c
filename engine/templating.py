"""Every string in a runbook is a sandboxed Jinja template, resolved before it is used.

Undefined names are errors that name the runbook, the step and the variable. Quoting for
the shell is the transport's job (shlex.quote per argument), never the author's.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any

from jinja2 import StrictUndefined, Template, TemplateError, UndefinedError
from jinja2.sandbox import SandboxedEnvironment

from .errors import RunbookError

__all__ = ["TemplateProblem", "render", "render_value", "has_template"]

_env = SandboxedEnvironment(undefined=StrictUndefined, autoescape=False,
                            keep_trailing_newline=True)


class TemplateProblem(RunbookError):
    pass


@functools.lru_cache(maxsize=4096)
def _template(text: str) -> Template:
    """Compiling costs far more than rendering; a fan-out renders the same text per host."""
    return _env.from_string(text)


@functools.lru_cache(maxsize=4096)
def _expression(text: str) -> Any:
    return _env.compile_expression(text, undefined_to_none=False)


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
    except (TemplateError, ArithmeticError, LookupError, TypeError, ValueError) as exc:
        raise TemplateProblem(f"{where}: template error in {text!r}: {exc}") from exc


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
            except (TemplateError, ArithmeticError, LookupError, TypeError, ValueError) as exc:
                raise TemplateProblem(f"{where}: template error in {value!r}: {exc}") from exc
            return result
        return render(value, context, where)
    if isinstance(value, Mapping):
        return {k: render_value(v, context, f"{where}.{k}" if where else str(k))
                for k, v in value.items()}
    if isinstance(value, list):
        return [render_value(v, context, where) for v in value]
    return value
