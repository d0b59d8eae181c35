"""``prompt:``: the versioned system prompt, rendered from a sandboxed Jinja2 template.

The template is compiled once at load. If it reads no request metadata it is rendered once at load
too, so a request pays only for inserting a message. Templates see the policy's ``vars`` as
top-level names and ``metadata`` (only the whitelisted keys of the request's ``metadata``); they
cannot reach the environment, the filesystem or Python internals (``ImmutableSandboxedEnvironment``).
The environment has no globals (Jinja's ``range``, ``lipsum``, ``cycler``... would print function
reprs and memory addresses) and only plain text, number and list filters, so a template sees
exactly the names its caller passes, and any other name is a load error with its line.
"""

from __future__ import annotations

import hashlib
from typing import Any, Self

import jinja2
from jinja2 import meta, nodes
from jinja2.sandbox import ImmutableSandboxedEnvironment

from gateway.errors import InvalidRequest
from gateway.policy import PolicySpec, PromptSpec
from middleware.base import BuildContext, Call, FieldPath, LayerError, PassThrough, system_message

__all__ = ["PromptLayer", "compile_template", "prompt_hash"]

_CLIENT_SYSTEM_ROLES = frozenset({"system", "developer"})
_RUNTIME_NAMES = frozenset({"metadata"})
_MAX_METADATA_VALUE = 512


#: Filters that only transform text, numbers and lists. Left out: ``pprint`` (prints any object's
#: repr, memory addresses included) and ``attr`` (attribute lookup by a computed name).
_SAFE_FILTERS = frozenset(
    {
        "abs", "batch", "capitalize", "center", "count", "d", "default", "dictsort", "e", "escape",
        "filesizeformat", "first", "float", "forceescape", "format", "groupby", "indent", "int", "items",
        "join", "last", "length", "list", "lower", "map", "max", "min", "random", "reject", "rejectattr",
        "replace", "reverse", "round", "safe", "select", "selectattr", "slice", "sort", "string",
        "striptags", "sum", "title", "tojson", "trim", "truncate", "unique", "upper", "urlencode", "urlize",
        "wordcount", "wordwrap", "xmlattr",
    }
)  # fmt: skip


def _environment() -> ImmutableSandboxedEnvironment:
    env = ImmutableSandboxedEnvironment(undefined=jinja2.StrictUndefined, autoescape=False, keep_trailing_newline=False)
    env.globals.clear()
    env.filters = {name: env.filters[name] for name in _SAFE_FILTERS & set(env.filters)}
    return env


_ENV = _environment()


def prompt_hash(text: str) -> str:
    """A short content hash of a template, reported beside its version."""
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def compile_template(
    source: str, field: FieldPath, allowed: set[str], origin: str | None = None
) -> tuple[jinja2.Template, set[str]]:
    """Compile ``source`` and check every name it reads is allowed. Raises ``LayerError``."""
    try:
        parsed = _ENV.parse(source)
        names = meta.find_undeclared_variables(parsed)
    except jinja2.TemplateAssertionError as exc:
        raise LayerError(field, f"template error: {exc.message}", file=origin, line=exc.lineno) from None
    except jinja2.TemplateSyntaxError as exc:
        raise LayerError(field, f"template syntax error: {exc.message}", file=origin, line=exc.lineno) from None
    unknown = sorted(names - allowed)
    if unknown:
        line = _first_line(parsed, set(unknown))
        message = f"template uses undefined variable(s): {', '.join(unknown)}"
        raise LayerError(field, message, file=origin, line=line)
    return _ENV.from_string(source), names


def _first_line(parsed: nodes.Template, names: set[str]) -> int | None:
    """The first line that reads one of ``names``."""
    lines = [node.lineno for node in parsed.find_all(nodes.Name) if node.ctx == "load" and node.name in names]
    return min(lines, default=None)


class PromptLayer(PassThrough):
    stage = "render"

    def __init__(self, spec: PromptSpec, template: jinja2.Template | None, reads_request: bool, source: str) -> None:
        self.client_system = spec.client_system
        self.metadata_keys = tuple(spec.metadata)
        self.vars: dict[str, Any] = dict(spec.vars)
        self.template = template
        self.source_hash = prompt_hash(source) if source else ""
        self.static_text: str | None = None
        if template is not None and not reads_request:
            try:
                self.static_text = template.render(**self.vars, metadata={}).strip()
            except jinja2.TemplateError as exc:
                raise LayerError(("prompt", "system"), f"template cannot be rendered: {exc}") from None

    @classmethod
    def build(cls, spec: PolicySpec, context: BuildContext) -> Self | None:
        prompt = spec.prompt
        if prompt is None:
            return None
        if prompt.system is None:
            return cls(prompt, None, False, "")
        source = context.files.read(("prompt", "system"), prompt.system)
        allowed = set(prompt.vars) | _RUNTIME_NAMES
        template, names = compile_template(source.text, ("prompt", "system"), allowed, source.origin)
        return cls(prompt, template, bool(names & _RUNTIME_NAMES), source.text)

    def _render(self, template: jinja2.Template, metadata: dict[str, str]) -> str:
        try:
            return template.render(**self.vars, metadata=metadata).strip()
        except jinja2.TemplateError as exc:
            raise InvalidRequest(f"The policy's system prompt could not be rendered: {exc}", param="metadata") from None

    def _metadata(self, call: Call) -> dict[str, str]:
        given = call.body.metadata or {}
        out: dict[str, str] = {}
        for key in self.metadata_keys:
            value = given.get(key)
            out[key] = value[:_MAX_METADATA_VALUE] if isinstance(value, str) else ""
        return out

    async def prepare(self, call: Call) -> None:
        messages = call.body.messages
        if self.client_system != "append" and any(m.role in _CLIENT_SYSTEM_ROLES for m in messages):
            if self.client_system == "reject":
                raise InvalidRequest(
                    f"The model '{call.policy}' does not accept system messages; its policy sets the system prompt.",
                    param="messages",
                    code="system_message_not_allowed",
                )
            messages[:] = [m for m in messages if m.role not in _CLIENT_SYSTEM_ROLES]
        if self.template is None:
            return
        text = self.static_text
        if text is None:
            with call.timer("render"):
                text = self._render(self.template, self._metadata(call))
        if text:
            system = system_message(call)
            system.content = f"{system.content}\n\n{text}" if system.content else text
            call.observer.injected(len(text))
