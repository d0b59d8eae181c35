"""The prompt layer: sandboxed templates, whitelisted metadata, and the client's system messages."""

from __future__ import annotations

import pytest

from gateway.errors import InvalidRequest
from middleware.base import LayerError
from tests.middleware.helpers import call_for, pipeline, prepared, report_of

USER = {"role": "user", "content": "hi"}


async def test_system_prompt_from_template_with_vars_goes_first() -> None:
    body = await prepared({"prompt": {"system": "You work for {{ company }}.", "vars": {"company": "Acme"}}}, [USER])
    assert body["messages"] == [{"role": "system", "content": "You work for Acme."}, USER]


async def test_whitelisted_metadata_only() -> None:
    policy = {
        "prompt": {
            "system": "Tier: {{ metadata.tier }}; region: {{ metadata.region }}.",
            "metadata": ["tier", "region"],
        }
    }
    body = await prepared(policy, [USER], metadata={"tier": "gold", "secret": "x"})
    assert body["messages"][0]["content"] == "Tier: gold; region: ."
    assert body["metadata"] == {"tier": "gold", "secret": "x"}


async def test_sandbox_blocks_python_internals() -> None:
    policy = {"prompt": {"system": "{{ metadata.tier.__class__.__mro__ }}", "metadata": ["tier"]}}
    with pytest.raises(InvalidRequest):
        await prepared(policy, [USER], metadata={"tier": "gold"})


async def test_templates_cannot_read_the_environment() -> None:
    with pytest.raises(Exception, match="undefined variable"):
        pipeline({"prompt": {"system": "{{ environ }} {{ os }}"}})


def test_templates_see_no_jinja_globals() -> None:
    with pytest.raises(LayerError) as caught:
        pipeline({"prompt": {"system": "{{ '%s'|format(lipsum) }}{{ cycler }}{{ joiner }}"}})
    assert caught.value.message == "template uses undefined variable(s): cycler, joiner, lipsum"


@pytest.mark.parametrize("template", ["{{ company|pprint }}", "{{ company|attr('upper') }}"])
def test_filters_that_reach_into_objects_are_gone(template: str) -> None:
    with pytest.raises(LayerError, match="template error: No filter named"):
        pipeline({"prompt": {"system": template, "vars": {"company": "Acme"}}})


async def test_text_and_list_filters_still_work() -> None:
    policy = {
        "prompt": {
            "system": "{{ company|upper|replace('A', 'a') }}: {{ tags|sort|join(', ') }} ({{ '%.1f'|format(score) }})",
            "vars": {"company": "Acme", "tags": ["b", "a"], "score": 0.25},
        }
    }
    body = await prepared(policy, [USER])
    assert body["messages"][0]["content"] == "aCME: a, b (0.2)"


@pytest.mark.parametrize(
    ("mode", "expected"),
    [
        ("append", [{"role": "system", "content": "Policy."}, {"role": "system", "content": "Client."}, USER]),
        ("replace", [{"role": "system", "content": "Policy."}, USER]),
    ],
)
async def test_client_system_append_and_replace(mode: str, expected: list[dict[str, str]]) -> None:
    policy = {"prompt": {"system": "Policy.", "client_system": mode}}
    body = await prepared(policy, [{"role": "system", "content": "Client."}, USER])
    assert body["messages"] == expected


async def test_client_system_reject() -> None:
    call = call_for([{"role": "developer", "content": "Client."}, USER])
    with pytest.raises(InvalidRequest) as caught:
        await pipeline({"prompt": {"system": "Policy.", "client_system": "reject"}}).prepare(call)
    assert caught.value.param == "messages"


async def test_injected_text_is_counted() -> None:
    call = call_for([USER])
    await pipeline({"prompt": {"system": "Twelve chars"}}).prepare(call)
    assert report_of(call).chars == 12
