"""The keys the request/response layers implement: prompt, reasoning, few-shot, retrieval, output."""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import Field, field_validator

from gateway.policy.base import (
    _METADATA_KEY,
    _NAME_PATTERN,
    _Spec,
)


class ReasoningSpec(_Spec):
    """Chain-of-thought: ask for reasoning first, then give the client only the extracted answer."""

    instruction: str = Field(
        default=(
            "Think through the problem step by step first. Then write the final answer on its own line, "
            "starting with 'Answer:'."
        ),
        description="Appended to the system prompt.",
    )
    answer_pattern: str = Field(
        default=r"(?is)answer:\s*((?:(?!answer:).)+?)\s*$",
        description="Regular expression whose first group (or whole match) is the answer the client receives.",
    )
    on_no_answer: Literal["full", "error"] = Field(
        default="full", description="When the pattern finds nothing: return the whole text, or a 502."
    )

    @field_validator("answer_pattern")
    @classmethod
    def _compiles(cls, value: str) -> str:
        try:
            re.compile(value)
        except re.error as exc:
            raise ValueError(f"not a valid regular expression: {exc}") from None
        return value


class PromptSpec(_Spec):
    """The versioned system prompt."""

    version: str | None = Field(
        default=None, pattern=_NAME_PATTERN, description="Reported in headers and metrics.", examples=["v3"]
    )
    system: str | None = Field(
        default=None,
        description="Jinja2 template (sandboxed), inline or `file:path` relative to the policy file.",
        examples=["file:prompts/support-bot/v3.md"],
    )
    vars: dict[str, Any] = Field(default_factory=dict, description="Template variables, each a top-level name.")
    metadata: list[str] = Field(
        default_factory=list,
        description="Request `metadata` keys templates may read as `metadata.<key>` (whitelist; others are dropped).",
    )
    client_system: Literal["append", "replace", "reject"] = Field(
        default="append",
        description="A client's own system messages: kept after the policy's, dropped, or refused with 400.",
    )
    reasoning: ReasoningSpec | None = Field(default=None, description="Ask for reasoning, return only the answer.")

    @field_validator("metadata")
    @classmethod
    def _metadata_keys(cls, value: list[str]) -> list[str]:
        for key in value:
            if not re.fullmatch(_METADATA_KEY, key):
                raise ValueError(f"{key!r} is not a usable metadata key")
        return value

    @field_validator("vars")
    @classmethod
    def _var_names(cls, value: dict[str, Any]) -> dict[str, Any]:
        for name in value:
            if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
                raise ValueError(f"{name!r} is not a usable template variable name")
            if name in ("metadata", "steps"):
                raise ValueError(f"{name!r} is reserved for request data")
        return value


class ExampleSpec(_Spec):
    """One labelled example: a user input and the answer the model should give."""

    input: str | list[dict[str, Any]] = Field(description="The user's text, or a list of chat messages.")
    output: str | dict[str, Any] | list[Any] = Field(description="The answer; JSON values are sent as compact JSON.")


class DynamicFewShotSpec(_Spec):
    """Pick the labelled examples most similar to the request from a collection (`prefit ingest` JSONL)."""

    collection: str = Field(description="Collection of `{input, output}` examples.")
    k: int = Field(default=3, ge=1, le=20, description="How many examples to inject.")
    min_score: float | None = Field(default=None, ge=-1, le=1, description="Ignore examples less similar than this.")


class FewShotSpec(_Spec):
    """Examples injected as user/assistant turns after the system prompt."""

    examples: str | list[ExampleSpec] = Field(
        default_factory=list,
        description="Inline examples, or `file:path` to a JSONL file of {input, output} records.",
        examples=["file:examples/support.jsonl"],
    )
    max_examples: int | None = Field(default=None, ge=1, le=100, description="Inject at most this many.")
    dynamic: DynamicFewShotSpec | None = Field(
        default=None,
        description="Retrieved examples, most similar first; the static ones fill in when none match, or when "
        "the store fails (`x-prefit-context: error`, counted in `prefit_retrieval_errors_total`).",
    )


class RetrievalSpec(_Spec):
    """Context from a vector store, inserted as quoted, numbered sources before the user's question."""

    collection: str = Field(description="The collection `prefit ingest` filled.", examples=["returns-policy"])
    top_k: int = Field(default=4, ge=1, le=50, description="Passages to retrieve.")
    min_score: float | None = Field(default=None, ge=-1, le=1, description="Drop passages less similar than this.")
    max_context_chars: int = Field(default=6000, ge=100, description="Budget for inserted passage text.")
    on_error: Literal["skip", "fail"] = Field(
        default="skip",
        description="When the store or model fails: answer without context (`x-prefit-context: error`, counted "
        "in `prefit_retrieval_errors_total`), or fail (502). Render always fails.",
    )
    query: Literal["last_user", "all_user"] = Field(
        default="last_user", description="What is embedded: the last user message, or every user message."
    )
    mode: Literal["dense", "hybrid"] = Field(
        default="hybrid",
        description="`hybrid`: dense and BM25 keyword candidates fused by reciprocal rank (finds exact codes and "
        "part numbers too); `dense`: embedding similarity only. A collection ingested before hybrid search "
        "is searched dense either way.",
    )
    filter: dict[str, str] = Field(
        default_factory=dict,
        description="Payload field -> request `metadata` key: only passages whose field equals that value.",
        examples=[{"product_line": "line"}],
    )
    template: str | None = Field(
        default=None,
        description="Jinja2 template for the sources message over `passages` (number, id, score, text, source, "
        "heading); default: numbered, delimited, marked as quoted material.",
    )


class OutputSpec(_Spec):
    """An output format the answer must satisfy, checked before the client sees it."""

    json_schema: str | dict[str, Any] = Field(
        description="A JSON Schema, inline or `file:path`.", examples=["file:schemas/ticket.json"]
    )
    mode: Literal["auto", "response_format", "instructions"] = Field(
        default="auto",
        description="How the format is asked for: `response_format` (strict JSON schema), instructions in the "
        "system prompt, or `auto` (response_format where the upstream supports it).",
    )
    name: str = Field(default="output", pattern=r"^[A-Za-z0-9_-]{1,64}$", description="The schema's name upstream.")
    max_retries: int = Field(default=2, ge=0, le=5, description="Re-asks with the validation error when invalid.")
    strict: bool = Field(default=True, description="Ask the upstream for strict schema adherence (response_format).")
    on_invalid: Literal["return", "error"] = Field(
        default="return",
        description="Still invalid after retries: return it with `x-prefit-output-valid: false`, or a 502.",
    )
