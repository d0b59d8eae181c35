"""``output:``: ask for a JSON answer that matches a schema, check it, and re-ask when it does not.

The schema is checked (Draft 2020-12) and compiled into a validator once at load. The answer is
validated before the client sees it, so a streaming request to a validating policy is answered
from the whole, validated reply (replayed as chunks): validation costs the stream its early tokens.
"""

from __future__ import annotations

from typing import Any, Self

import jsonschema
import orjson

from gateway.errors import OutputInvalid
from gateway.policy import OutputSpec, PolicySpec
from gateway.wire import ChatCompletion, ChatMessage
from middleware.base import BuildContext, Call, LayerError, PassThrough, system_message

__all__ = ["OutputLayer", "load_schema"]

VALID, REPAIRED, INVALID = "valid", "repaired", "invalid"
_HEADER = "x-prefit-output-valid"


def load_schema(value: str | dict[str, Any], context: BuildContext) -> dict[str, Any]:
    """The schema, inline or from a ``file:`` JSON file, checked against its metaschema. Raises ``LayerError``."""
    field = ("output", "json_schema")
    origin = None
    if isinstance(value, str):
        source = context.files.read(field, value)
        origin = source.origin
        try:
            schema = orjson.loads(source.text)
        except orjson.JSONDecodeError as exc:
            raise LayerError(field, f"not JSON: {exc.msg}", file=origin, line=exc.lineno) from None
    else:
        schema = value
    if not isinstance(schema, dict):
        raise LayerError(field, "a JSON Schema must be an object", file=origin)
    try:
        jsonschema.Draft202012Validator.check_schema(schema)
    except jsonschema.SchemaError as exc:
        where = "/".join(str(part) for part in exc.absolute_path) or "(root)"
        raise LayerError(field, f"invalid JSON Schema at {where}: {exc.message}", file=origin) from None
    return schema


def _strip_fences(text: str) -> str:
    stripped = text.strip()
    if stripped.startswith("```") and stripped.endswith("```"):
        stripped = stripped[3:-3]
        if stripped.startswith("json"):
            stripped = stripped[4:]
    return stripped.strip()


def _content(reply: ChatCompletion) -> str | None:
    try:
        content = reply["choices"][0]["message"]["content"]
    except (KeyError, IndexError, TypeError):
        return None
    return content if isinstance(content, str) else None


class OutputLayer(PassThrough):
    stage = "validate"
    needs_full_output = True

    def __init__(self, spec: OutputSpec, schema: dict[str, Any], use_response_format: bool) -> None:
        self.spec = spec
        self.validator = jsonschema.Draft202012Validator(schema, format_checker=jsonschema.FormatChecker())
        self.use_response_format = use_response_format
        self.response_format = {
            "type": "json_schema",
            "json_schema": {"name": spec.name, "schema": schema, "strict": spec.strict},
        }
        self.instructions = (
            "Reply with only a JSON value that conforms to this JSON Schema, with no other text:\n"
            + orjson.dumps(schema).decode()
        )

    @classmethod
    def build(cls, spec: PolicySpec, context: BuildContext) -> Self | None:
        if spec.output is None:
            return None
        schema = load_schema(spec.output.json_schema, context)
        mode = spec.output.mode
        use_response_format = mode == "response_format" or (mode == "auto" and context.supports_json_schema)
        return cls(spec.output, schema, use_response_format)

    async def prepare(self, call: Call) -> None:
        if self.use_response_format:
            call.body.response_format = self.response_format  # type: ignore[attr-defined]
            return
        system = system_message(call)
        system.content = f"{system.content}\n\n{self.instructions}" if system.content else self.instructions
        call.observer.injected(len(self.instructions))

    def problem(self, text: str | None) -> str | None:
        """Why ``text`` is not a valid answer, or None when it is."""
        if text is None:
            return "the answer has no text content"
        try:
            value = orjson.loads(_strip_fences(text))
        except orjson.JSONDecodeError as exc:
            return f"the answer is not valid JSON ({exc.msg})"
        error = jsonschema.exceptions.best_match(self.validator.iter_errors(value))
        if error is None:
            return None
        where = "/".join(str(part) for part in error.absolute_path) or "(root)"
        return f"at {where}: {error.message}"

    async def complete(self, call: Call, reply: ChatCompletion) -> ChatCompletion:
        with call.timer("validate"):
            problem = self.problem(_content(reply))
        attempts = 0
        while problem is not None and attempts < self.spec.max_retries:
            attempts += 1
            reply = await call.send_upstream(self._reask(call, _content(reply) or "", problem))
            with call.timer("validate"):
                problem = self.problem(_content(reply))
        if problem is None:
            call.observer.validated(VALID if attempts == 0 else REPAIRED)
            call.response_headers[_HEADER] = "true"
            return reply
        call.observer.validated(INVALID)
        if self.spec.on_invalid == "error":
            raise OutputInvalid(
                f"The answer did not match the policy's output schema after {attempts} retries: {problem}"
            )
        call.response_headers[_HEADER] = "false"
        return reply

    def _reask(self, call: Call, answer: str, problem: str) -> Any:
        follow_up = [
            ChatMessage(role="assistant", content=answer),
            ChatMessage(
                role="user",
                content=f"Your answer does not match the required JSON Schema: {problem}. "
                "Reply again with only the corrected JSON.",
            ),
        ]
        return call.body.model_copy(update={"messages": [*call.body.messages, *follow_up]})
