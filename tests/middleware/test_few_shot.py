"""The few-shot layer: inline and file examples, as turns after the system prompt, with a limit."""

from __future__ import annotations

from pathlib import Path

from tests.middleware.helpers import call_for, pipeline, prepared

USER = {"role": "user", "content": "new case"}


async def test_inline_examples_follow_system_messages() -> None:
    policy = {
        "prompt": {"system": "Classify."},
        "few_shot": {"examples": [{"input": "a", "output": "x"}, {"input": "b", "output": {"label": "y"}}]},
    }
    body = await prepared(policy, [USER])
    assert body["messages"] == [
        {"role": "system", "content": "Classify."},
        {"role": "user", "content": "a"},
        {"role": "assistant", "content": "x"},
        {"role": "user", "content": "b"},
        {"role": "assistant", "content": '{"label":"y"}'},
        USER,
    ]


async def test_file_examples_with_message_inputs_and_a_limit(tmp_path: Path) -> None:
    (tmp_path / "ex.jsonl").write_text(
        '{"input": [{"role": "user", "content": "q1"}, {"role": "assistant", "content": "?"},'
        ' {"role": "user", "content": "q1 again"}], "output": "a1"}\n\n'
        '{"input": "q2", "output": "a2"}\n{"input": "q3", "output": "a3"}\n'
    )
    call = call_for([USER])
    await pipeline({"few_shot": {"examples": "file:ex.jsonl", "max_examples": 2}}, tmp_path).prepare(call)
    contents = [m.content for m in call.body.messages]
    assert contents == ["q1", "?", "q1 again", "a1", "q2", "a2", "new case"]
