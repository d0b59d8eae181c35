"""A corpus of broken policies: each must fail ``load_config`` with exactly the error a user needs.

Every case is a settings file with upstreams ``main`` and ``other``, plus the files listed; the
expected lines are the whole ``file:line:column: field: message`` text ``prefit check`` prints.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.config.load import load_config
from gateway.errors import ConfigError
from tests.conftest import write_files

SETTINGS = """
upstreams:
  main: {base_url: "http://127.0.0.1:9/v1"}
  other: {base_url: "http://127.0.0.1:9/v1", supports_json_schema: false}
default_upstream: main
"""

CASES: dict[str, tuple[dict[str, str | bytes], list[str]]] = {
    "unknown top-level key": (
        {"policies/p.yaml": "upstream_model: m\ntemprature: 0\n"},
        ["policies/p.yaml:2:1: temprature: unknown key"],
    ),
    "unknown nested key": (
        {"policies/p.yaml": "prompt:\n  system: hi\n  verison: v1\n"},
        ["policies/p.yaml:3:3: prompt.verison: unknown key (did you mean version?)"],
    ),
    "wrong type": (
        {"policies/p.yaml": "few_shot:\n  max_examples: many\n"},
        [
            "policies/p.yaml:2:17: few_shot.max_examples: Input should be a valid integer, "
            "unable to parse string as an "
            "integer"
        ],
    ),
    "bad enum value": (
        {"policies/p.yaml": "prompt: {system: hi, client_system: ignore}\n"},
        ["policies/p.yaml:1:37: prompt.client_system: Input should be 'append', 'replace' or 'reject'"],
    ),
    "missing file target": (
        {"policies/p.yaml": "prompt:\n  system: file:prompts/v9.md\n"},
        ["policies/p.yaml:2:11: prompt.system: file not found: prompts/v9.md"],
    ),
    "file reference escaping the folder": (
        {"policies/p.yaml": "prompt:\n  system: file:../../etc/passwd\n", "secret.md": "x"},
        ["policies/p.yaml:2:11: prompt.system: ../../etc/passwd is outside the policy's folder"],
    ),
    "jinja syntax error inline": (
        {"policies/p.yaml": "prompt:\n  system: 'Hello {{ company'\n  vars: {company: Acme}\n"},
        [
            "policies/p.yaml:2:11: prompt.system: template syntax error: unexpected end of template, expected 'end of "
            "print statement'."
        ],
    ),
    "jinja syntax error in a file": (
        {
            "policies/p.yaml": "prompt: {system: 'file:prompts/p.md'}\n",
            "policies/prompts/p.md": "Line one\n{% if x %}\nno end\n",
        },
        [
            "policies/prompts/p.md:2: prompt.system: template syntax error: Unexpected end of template. "
            "Jinja was looking "
            "for the following tags: 'elif' or 'else' or 'endif'. The innermost block that needs to be closed is 'if'."
        ],
    ),
    "template variable not declared": (
        {"policies/p.yaml": "prompt:\n  system: 'You work for {{ company }} in {{ city }}'\n  vars: {company: A}\n"},
        ["policies/p.yaml:2:11: prompt.system: template uses undefined variable(s): city"],
    ),
    "invalid json schema": (
        {"policies/p.yaml": "output:\n  json_schema: {type: object, properties: {a: {type: strnig}}}\n"},
        [
            "policies/p.yaml:2:16: output.json_schema: invalid JSON Schema at properties/a/type: 'strnig' is not valid "
            "under any of the given schemas"
        ],
    ),
    "schema file that is not json": (
        {"policies/p.yaml": "output: {json_schema: 'file:s.json'}\n", "policies/s.json": '{\n  "type": object\n}\n'},
        ["policies/s.json:2: output.json_schema: not JSON: unexpected character, expected a JSON value"],
    ),
    "examples file with a bad line": (
        {
            "policies/p.yaml": "few_shot: {examples: 'file:ex.jsonl'}\n",
            "policies/ex.jsonl": '{"input": "a", "output": "b"}\n{"input": "c"}\n',
        },
        ["policies/ex.jsonl:2: few_shot.examples: output: Field required"],
    ),
    "variant weights summing to zero": (
        {"policies/p.yaml": "variants:\n  - {name: a, weight: 0}\n  - {name: b, weight: 0}\n"},
        ["policies/p.yaml:2:3: variants: variant weights must not all be 0"],
    ),
    "duplicate variant names": (
        {"policies/p.yaml": "variants:\n  - {name: a, weight: 1}\n  - {name: a, weight: 2}\n"},
        ["policies/p.yaml:2:3: variants: variant names must be unique: a"],
    ),
    "variant overriding what it may not": (
        {"policies/p.yaml": "variants:\n  - {name: a, weight: 1, model: other-name}\n"},
        ["policies/p.yaml:2:5: variants[0]: 'model' cannot be overridden by a variant"],
    ),
    "variant override with a wrong type": (
        {
            "policies/p.yaml": "variants:\n  - {name: a, weight: 1}\n"
            "  - {name: b, weight: 1, few_shot: {max_examples: 0}}\n"
        },
        ["policies/p.yaml:3:51: variants[1].few_shot.max_examples: Input should be greater than or equal to 1"],
    ),
    "variant naming an unknown upstream": (
        {"policies/p.yaml": "variants:\n  - {name: a, weight: 1}\n  - {name: b, weight: 1, upstream: nowhere}\n"},
        ["policies/p.yaml:3:36: variants[1].upstream: unknown upstream 'nowhere' (known: main, other)"],
    ),
    "two policies claiming one model name": (
        {"policies/a.yaml": "model: bot\n", "policies/b.yaml": "model: bot\n"},
        ["policies/b.yaml:1:8: model: model 'bot' is already served by policies/a.yaml"],
    ),
    "bad answer pattern": (
        {"policies/p.yaml": "prompt:\n  reasoning: {answer_pattern: 'Answer: (.*'}\n"},
        [
            "policies/p.yaml:2:31: prompt.reasoning.answer_pattern: not a valid regular expression: missing ), "
            "unterminated subpattern at position 8"
        ],
    ),
    "reserved template variable": (
        {"policies/p.yaml": "prompt:\n  system: hi\n  vars: {metadata: x}\n"},
        ["policies/p.yaml:3:9: prompt.vars: 'metadata' is reserved for request data"],
    ),
    "params naming a structural field": (
        {"policies/p.yaml": "force: {stream: true}\n"},
        ["policies/p.yaml:1:8: force: stream cannot be set as a parameter"],
    ),
    "yaml syntax error": (
        {"policies/p.yaml": "prompt:\n  system: 'unclosed\n"},
        ["policies/p.yaml:2:11: invalid YAML: while scanning a quoted scalar found unexpected end of stream"],
    ),
    "chain step naming a missing policy": (
        {"policies/p.yaml": "steps:\n  - {name: one, model: ghost}\n"},
        ["policies/p.yaml:2:24: steps[0].model: step model 'ghost' is not a policy"],
    ),
    "chain cycle": (
        {
            "policies/a.yaml": "steps: [{name: s, model: b}]\n",
            "policies/b.yaml": "steps:\n  - {name: s, model: o}\n  - {name: t, model: a}\n",
            "policies/o.yaml": "upstream_model: m\n",
        },
        [
            "policies/a.yaml:1:9: steps[0]: chain cycle: a -> b -> a",
            "policies/b.yaml:3:5: steps[1]: chain cycle: b -> a -> b",
        ],
    ),
    "step with both model and system": (
        {"policies/p.yaml": "steps:\n  - {name: one, model: x, system: hi}\n"},
        ["policies/p.yaml:2:5: steps[0]: a step needs exactly one of `model`, `system` or `route`"],
    ),
    "step reads a step that does not exist": (
        {
            "policies/o.yaml": "upstream_model: m\n",
            "policies/p.yaml": "steps:\n  - {name: one, model: o, input: '{{ steps.ghost.output }}'}\n"
            "  - {name: two, model: o}\n",
        },
        [
            "policies/p.yaml:2:5: steps[0]: step 'one' reads steps that do not exist: ghost",
        ],
    ),
    "steps read each other in a cycle": (
        {
            "policies/o.yaml": "upstream_model: m\n",
            "policies/p.yaml": "steps:\n  - {name: a, model: o, input: '{{ steps.b.output }}'}\n"
            "  - {name: b, model: o, input: \"{{ steps['a'].json }}\"}\n  - {name: c, model: o}\n",
        },
        [
            "policies/p.yaml:2:5: steps[0]: steps read each other in a cycle: a -> b -> a",
        ],
    ),
    "step reads the last step": (
        {
            "policies/o.yaml": "upstream_model: m\n",
            "policies/p.yaml": "steps:\n  - {name: a, model: o, input: '{{ steps.z.output }}'}\n"
            "  - {name: z, model: o}\n",
        },
        [
            "policies/p.yaml:2:5: steps[0]: step 'a' reads the last step 'z', whose answer is the chain's",
        ],
    ),
    "route to a missing policy": (
        {
            "policies/o.yaml": "upstream_model: m\n",
            "policies/p.yaml": "steps:\n  - {name: k, model: o}\n"
            "  - name: r\n    route: {on: '{{ steps.k.output }}', cases: {a: o, b: ghost}, default: phantom}\n",
        },
        [
            "policies/p.yaml:4:58: steps[1].route.cases.b: step model 'ghost' is not a policy",
            "policies/p.yaml:4:75: steps[1].route.default: step model 'phantom' is not a policy",
        ],
    ),
    "route cycle through a case": (
        {
            "policies/o.yaml": "upstream_model: m\n",
            "policies/p.yaml": "steps:\n  - {name: k, model: o}\n"
            "  - name: r\n    route: {on: '{{ steps.k.output }}', cases: {again: p}}\n",
        },
        [
            "policies/p.yaml:3:5: steps[1]: chain cycle: p -> p",
        ],
    ),
    "variant steps to a missing policy": (
        {
            "policies/o.yaml": "upstream_model: m\n",
            "policies/p.yaml": "upstream_model: m\nvariants:\n  - {name: a, weight: 1}\n"
            "  - {name: b, weight: 1, steps: [{name: s, model: ghost}]}\n",
        },
        [
            "policies/p.yaml:4:51: variants[1].steps[0].model: step model 'ghost' is not a policy",
        ],
    ),
    "item outside for_each": (
        {
            "policies/o.yaml": "upstream_model: m\n",
            "policies/p.yaml": "steps:\n  - {name: one, model: o, input: '{{ item }}'}\n",
        },
        [
            "policies/p.yaml:2:34: steps[0].input: template uses undefined variable(s): item",
        ],
    ),
    "for_each on the last step": (
        {
            "policies/o.yaml": "upstream_model: m\n",
            "policies/p.yaml": "steps:\n  - {name: k, model: o}\n"
            "  - {name: e, model: o, for_each: '{{ steps.k.json }}', input: '{{ item }}'}\n",
        },
        [
            "policies/p.yaml:3:35: steps[1].for_each: this step cannot run for_each: "
            "the last step's answer is the chain's",
        ],
    ),
    "for_each that is not one expression": (
        {
            "policies/o.yaml": "upstream_model: m\n",
            "policies/p.yaml": "steps:\n  - {name: k, model: o}\n"
            "  - {name: e, model: o, for_each: 'x {{ steps.k.json }}', input: '{{ item }}'}\n  - {name: z, model: o}\n",
        },
        [
            "policies/p.yaml:3:35: steps[1].for_each: for_each must be one expression, "
            "like {{ steps.extract.json.entities }}",
        ],
    ),
    "step input template error": (
        {
            "policies/o.yaml": "upstream_model: m\n",
            "policies/p.yaml": "steps:\n  - {name: one, model: o, input: '{{ nope }}'}\n",
        },
        ["policies/p.yaml:2:34: steps[0].input: template uses undefined variable(s): nope"],
    ),
    "unknown key with a close match": (
        {"policies/p.yaml": "upstream_model: m\nfewshot:\n  examples: []\n"},
        ["policies/p.yaml:2:1: fewshot: unknown key (did you mean few_shot?)"],
    ),
    "unknown key inside a list item": (
        {"policies/p.yaml": "steps:\n  - {name: one, modle: o}\n"},
        ["policies/p.yaml:2:17: steps[0].modle: unknown key (did you mean model?)"],
    ),
    "unknown key in a variant override": (
        {"policies/p.yaml": "variants:\n  - {name: a, weight: 1, fewshot: {max_examples: 2}}\n"},
        ["policies/p.yaml:2:5: variants[0]: 'fewshot': unknown key (did you mean few_shot?)"],
    ),
    "yaml key without its colon": (
        {"policies/p.yaml": "prompt:\n  system: hi\n  vars\nupstream_model: m\n"},
        ["policies/p.yaml:3:3: invalid YAML: while scanning a simple key could not find expected ':'"],
    ),
    "policy file that is not utf-8": (
        {"policies/p.yaml": b"upstream_model: m\nprompt:\n  system: caf\xe9 au lait\n"},
        ["policies/p.yaml:3:14: not UTF-8: byte 0xe9 (invalid continuation byte)"],
    ),
    "prompt file that is not utf-8": (
        {"policies/p.yaml": "prompt: {system: 'file:p.md'}\n", "policies/p.md": b"Line one\nna\xefve \xff\n"},
        ["policies/p.md:2:3: prompt.system: not UTF-8: byte 0xef (invalid continuation byte)"],
    ),
    "jinja globals in a prompt file": (
        {
            "policies/p.yaml": "prompt: {system: 'file:prompts/p.md'}\n",
            "policies/prompts/p.md": "Line one\n{{ '%s'|format(lipsum) }}{{ cycler }}\n{{ joiner }}\n",
        },
        ["policies/prompts/p.md:2: prompt.system: template uses undefined variable(s): cycler, joiner, lipsum"],
    ),
    "jinja global in a step input": (
        {
            "policies/o.yaml": "upstream_model: m\n",
            "policies/p.yaml": "steps:\n  - {name: one, model: o, input: '{{ range(3) }}'}\n",
        },
        ["policies/p.yaml:2:34: steps[0].input: template uses undefined variable(s): range"],
    ),
    "filter that prints object internals": (
        {"policies/p.yaml": "prompt:\n  system: '{{ company|pprint }}'\n  vars: {company: Acme}\n"},
        ["policies/p.yaml:2:11: prompt.system: template error: No filter named 'pprint'."],
    ),
    "chains nested too deep": (
        {
            "policies/a.yaml": "steps: [{name: s, model: b}]\n",
            "policies/b.yaml": "steps: [{name: s, model: c}]\n",
            "policies/c.yaml": "steps: [{name: s, model: d}]\n",
            "policies/d.yaml": "steps: [{name: s, model: e}]\n",
            "policies/e.yaml": "upstream_model: m\n",
        },
        ["policies/a.yaml:1:1: steps: chains nest 5 deep; at most 4"],
    ),
    "bad sticky key": (
        {"policies/p.yaml": "sticky_key: cookie\n"},
        [
            "policies/p.yaml:1:13: sticky_key: String should match pattern "
            "'^(user|header:[A-Za-z0-9-]{1,64}|metadata:[A-Za-z_][A-Za-z0-9_]{0,63})$'"
        ],
    ),
    "experiment on a policy without variants": (
        {"policies/p.yaml": "upstream_model: m\nexperiment: {metric: resolved}\n"},
        ["policies/p.yaml:1:1: experiment needs at least two variants"],
    ),
    "experiment floor leaving nothing to adapt": (
        {
            "policies/p.yaml": "upstream_model: m\nvariants: [{name: a, weight: 1}, {name: b, weight: 1}, "
            "{name: c, weight: 1}]\nexperiment: {metric: resolved, floor: 0.4}\n"
        },
        ["policies/p.yaml:1:1: experiment floor times the number of variants must stay below 1"],
    ),
    "shadow naming no variant": (
        {"policies/p.yaml": "upstream_model: m\nvariants: [{name: a, weight: 1}]\nshadow: {variant: c}\n"},
        ["policies/p.yaml:1:1: shadow variant 'c' is not one of the variants"],
    ),
    "experiment metric the policy does not take": (
        {
            "policies/p.yaml": "upstream_model: m\nvariants: [{name: a, weight: 1}, {name: b, weight: 1}]\n"
            "feedback_metrics: [stars]\nexperiment: {metric: resolved}\n"
        },
        ["policies/p.yaml:1:1: experiment metric 'resolved' is not in feedback_metrics"],
    ),
    "feedback metric that is not an identifier": (
        {"policies/p.yaml": "upstream_model: m\nfeedback_metrics: [Stars]\n"},
        [
            "policies/p.yaml:2:19: feedback_metrics: 'Stars' is not a metric name "
            "(lowercase letters, digits, _; at most 40)"
        ],
    ),
    "variant overriding the experiment": (
        {
            "policies/p.yaml": "upstream_model: m\nvariants:\n  - {name: a, weight: 1, experiment: {metric: x}}\n"
            "  - {name: b, weight: 1}\n"
        },
        ["policies/p.yaml:3:5: variants[0]: 'experiment' cannot be overridden by a variant"],
    ),
}


@pytest.mark.parametrize("case", list(CASES), ids=list(CASES))
def test_broken_policy_reports_precise_error(case: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    files, expected = CASES[case]
    write_files(tmp_path, {"prefit.yaml": SETTINGS, **{k: v for k, v in files.items() if isinstance(v, str)}})
    for name, data in files.items():
        if isinstance(data, bytes):
            (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
            (tmp_path / name).write_bytes(data)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError) as caught:
        load_config(tmp_path / "prefit.yaml")
    assert [str(issue) for issue in caught.value.issues] == expected


def test_corpus_is_large_enough() -> None:
    assert len(CASES) >= 15
