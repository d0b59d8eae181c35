"""Loading settings and policies: expansion, defaults and errors that name file, line and field."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from gateway.config.load import find_settings_file, load_config
from gateway.config.yaml_source import expand_env, parse_yaml
from gateway.errors import ConfigError
from tests.conftest import write_files

REPO = Path(__file__).resolve().parents[2]


def _errors(tmp_path: Path, files: dict[str, str]) -> list[str]:
    write_files(tmp_path, files)
    with pytest.raises(ConfigError) as caught:
        load_config(tmp_path / "prefit.yaml")
    return [str(issue).replace(str(tmp_path) + "/", "") for issue in caught.value.issues]


SETTINGS = "upstreams:\n  main: {base_url: http://127.0.0.1:9/v1}\ndefault_upstream: main\n"


def test_env_expansion_forms() -> None:
    unset: set[str] = set()
    env = {"A": "1", "EMPTY": ""}
    assert expand_env("${A}-${B:-two}-${EMPTY:-three}-${C}", env, unset) == "1-two-three-"
    assert unset == {"C"}


def test_env_reference_inside_flow_mapping_is_valid(tmp_path: Path) -> None:
    located = parse_yaml("u: {key: ${K}, other: x}\n", "s.yaml", {"K": "v: [not yaml structure]"})
    assert located.data == {"u": {"key": "v: [not yaml structure]", "other": "x"}}


def test_built_in_defaults(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    config = load_config(None, cwd=tmp_path)
    upstream = config.settings.upstreams["openai"]
    assert upstream.base_url == "https://api.openai.com/v1"
    assert upstream.api_key is not None and upstream.api_key.get_secret_value() == "sk-test"
    assert config.settings.default_upstream == "openai"
    assert config.policies == {}


def test_settings_file_is_found_in_working_directory(tmp_path: Path) -> None:
    assert find_settings_file(None, tmp_path) is None
    (tmp_path / "prefit.yaml").write_text(SETTINGS)
    assert find_settings_file(None, tmp_path) == tmp_path / "prefit.yaml"


def test_policy_defaults_come_from_file_name_and_settings(tmp_path: Path) -> None:
    write_files(tmp_path, {"prefit.yaml": SETTINGS, "policies/triage.yaml": "params: {temperature: 0}\n"})
    policy = load_config(tmp_path / "prefit.yaml").policies["triage"]
    assert (policy.primary.upstream, policy.primary.upstream_model) == ("main", "triage")


def test_every_error_in_every_file_is_reported(tmp_path: Path) -> None:
    errors = _errors(
        tmp_path,
        {
            "prefit.yaml": SETTINGS,
            "policies/a.yaml": "upstream: nowhere\n",
            "policies/b.yaml": "model: shared\nparms: {temperature: 0}\n",
            "policies/c.yaml": "model: shared\n",
            "policies/d.yaml": "model: shared\n",
            "policies/e.yaml": "params: [1, 2\n",
            "policies/f.yaml": "params: {messages: []}\n",
            "policies/g.yaml": "- just\n- a list\n",
        },
    )
    assert errors == [
        "policies/a.yaml:1:11: upstream: unknown upstream 'nowhere' (known: main)",
        "policies/b.yaml:2:1: parms: unknown key (did you mean params?)",
        "policies/d.yaml:1:8: model: model 'shared' is already served by policies/c.yaml",
        "policies/e.yaml:1:9: invalid YAML: while parsing a flow sequence expected ',' or ']', but got '<stream end>'",
        "policies/f.yaml:1:9: params: messages cannot be set as a parameter",
        "policies/g.yaml:1:1: the file must hold a mapping of keys",
    ]


def test_settings_errors_name_line_and_field(tmp_path: Path) -> None:
    errors = _errors(
        tmp_path,
        {
            "prefit.yaml": """
            upstreams:
              main: {base_url: "ftp://x", timeout_s: -1}
            default_upstream: other
            keys: ["", "sha256:nothex"]
            """,
        },
    )
    assert errors == [
        "prefit.yaml:2:20: upstreams.main.base_url: must be an http:// or https:// URL",
        "prefit.yaml:2:42: upstreams.main.timeout_s: Input should be greater than 0",
        "prefit.yaml:4:8: keys[0]: a key must not be empty",
        "prefit.yaml:4:12: keys[1]: a hashed key must be 'sha256:' followed by 64 hex digits",
    ]


def test_unknown_settings_keys_suggest_the_close_match(tmp_path: Path) -> None:
    errors = _errors(
        tmp_path,
        {
            "prefit.yaml": """
            upstreams:
              main: {base_url: "http://127.0.0.1:9/v1", timeot_s: 5}
            default_upstrem: main
            colour: blue
            """,
        },
    )
    assert errors == [
        "prefit.yaml:2:45: upstreams.main.timeot_s: unknown key (did you mean timeout_s?)",
        "prefit.yaml:3:1: default_upstrem: unknown key (did you mean default_upstream?)",
        "prefit.yaml:4:1: colour: unknown key",
    ]


def test_missing_settings_file_and_missing_policies_dir(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(tmp_path / "absent.yaml")
    assert str(caught.value).endswith("absent.yaml: cannot read file: No such file or directory")
    errors = _errors(tmp_path, {"prefit.yaml": SETTINGS + "policies_dir: nope\n"})
    assert errors[0].startswith("prefit.yaml:4:15: policies_dir: directory not found:")


def test_shipped_policies_load() -> None:
    config = load_config(None, cwd=REPO)
    assert "assistant" in config.policies


def test_check_command_exit_codes(tmp_path: Path) -> None:
    write_files(tmp_path, {"prefit.yaml": SETTINGS, "policies/x.yaml": "upstream_model: 3\nextra: 1\n"})
    bad = subprocess.run(
        [sys.executable, "-m", "gateway", "check", "--config", str(tmp_path / "prefit.yaml")],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert bad.returncode == 1
    assert "policies/x.yaml:1:17: upstream_model: Input should be a valid string" in bad.stderr
    assert "policies/x.yaml:2:1: extra: unknown key" in bad.stderr
    (tmp_path / "policies/x.yaml").write_text("upstream_model: gpt-4o-mini\n")
    good = subprocess.run([sys.executable, "-m", "gateway", "check"], capture_output=True, text=True, cwd=tmp_path)
    assert good.returncode == 0, good.stderr
    assert "gpt-4o-mini" in good.stdout


def test_upstream_without_a_needed_key_is_named_with_the_reason(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("PREFIT_TEST_UNSET", raising=False)
    monkeypatch.setenv("PREFIT_TEST_EMPTY", "")
    write_files(
        tmp_path,
        {
            "prefit.yaml": """
            upstreams:
              openai: {base_url: https://api.openai.com/v1, api_key: ${PREFIT_TEST_UNSET}}
              azure: {base_url: https://x.openai.azure.com/v1, api_key: "${PREFIT_TEST_EMPTY}"}
              fallback: {base_url: https://fallback.example/v1}
              spare: {base_url: https://spare.example/v1}
              internal: {base_url: http://vllm.internal:8000/v1, requires_api_key: false}
              local: {base_url: http://127.0.0.1:8000/v1}
              local6: {base_url: "http://[::1]:8000/v1"}
              localhost: {base_url: http://localhost:8000/v1}
            default_upstream: local
            """,
            "policies/p.yaml": """
            upstream: azure
            fallbacks: [{upstream: fallback, upstream_model: m}]
            variants: [{name: a, weight: 1}, {name: b, weight: 1, upstream: openai}]
            """,
        },
    )
    config = load_config(tmp_path / "prefit.yaml")
    assert config.upstream_status == {
        "openai": "no api_key (PREFIT_TEST_UNSET is unset)",
        "azure": "no api_key (PREFIT_TEST_EMPTY is empty)",
        "fallback": "no api_key",
        "spare": "no api_key; unused",
        "internal": "ok",
        "local": "ok",
        "local6": "ok",
        "localhost": "ok",
    }
    assert set(config.unready_upstreams) == {"openai", "azure", "fallback"}


def test_a_keyless_loopback_default_upstream_is_ready(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    assert load_config(None, cwd=tmp_path).unready_upstreams == ("openai",)
    write_files(tmp_path, {"prefit.yaml": SETTINGS})
    config = load_config(tmp_path / "prefit.yaml")
    assert (config.upstream_status, config.unready_upstreams) == ({"main": "ok"}, ())


async def test_a_config_is_data_and_holds_no_client(tmp_path: Path) -> None:
    """Live clients belong to whoever runs the gateway; a configuration loaded for checking opens nothing."""
    import dataclasses

    from gateway.retrieval.resources import NO_RESOURCES
    from middleware.base import ResourceError

    (tmp_path / "policies").mkdir()
    (tmp_path / "policies" / "kb.yaml").write_text("upstream_model: m\nretrieval: {collection: docs}\n")
    (tmp_path / "prefit.yaml").write_text("upstreams:\n  u: {base_url: http://127.0.0.1:1/v1}\ndefault_upstream: u\n")
    config = load_config(tmp_path / "prefit.yaml")
    assert "resources" not in {f.name for f in dataclasses.fields(config)}
    with pytest.raises(ResourceError, match="loaded without a vector store"):
        await NO_RESOURCES.search("docs", [0.0], 1, None, None)
