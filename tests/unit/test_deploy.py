"""Every file in deploy/ is parsed and cross-checked against the code, since no container engine,
systemd, Kubernetes, nginx or Prometheus runs here: ports match the configuration defaults, probe
and health-check paths are routes the apps serve, ``IBEX_*`` variables are real settings (the
configuration dataclasses' fields) or documented gunicorn/entry-point variables, commands parse
with the real ``ibex`` CLI, metric names in alert rules exist, and referenced repository files
exist. The gunicorn configuration is imported as gunicorn would and its values asserted.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import re
import shlex
import tomllib
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml

import ibex.metrics  # noqa: F401 - prometheus-client is imported before any test sets its variable
from ibex.cli import build_parser
from ibex.config import BrokerConfig, ConnectorConfig
from ibex.keys import MEMBER_ID_RE
from ibex.logs import JsonFormatter
from ibex.metrics import METRIC_NAMES
from ibex.opabundle import main as opabundle_main
from ibex.openapi import build_document

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
BROKER_PORT = next(f.default for f in dataclasses.fields(BrokerConfig) if f.name == "port")
CONNECTOR_PORT = next(f.default for f in dataclasses.fields(ConnectorConfig) if f.name == "port")
# The OpenAPI document's paths equal each app's url_map (tests/integration/test_openapi.py).
BROKER_ROUTES = set(build_document("broker")["paths"])
CONNECTOR_ROUTES = set(build_document("connector")["paths"])
GUNICORN_VARS = set(re.findall(r"IBEX_GUNICORN_[A-Z_]+", (DEPLOY / "gunicorn.conf.py").read_text()))
ENTRY_VARS = {"IBEX_BROKER_CONFIG", "IBEX_CONNECTOR_CONFIG"}
OTHER_VARS = {"PROMETHEUS_MULTIPROC_DIR"}


def setting_vars(cls: type) -> set[str]:
    return {"IBEX_" + f.name.upper() for f in dataclasses.fields(cls)}


BROKER_VARS = setting_vars(BrokerConfig) | GUNICORN_VARS | ENTRY_VARS | OTHER_VARS
CONNECTOR_VARS = setting_vars(ConnectorConfig) | GUNICORN_VARS | ENTRY_VARS | OTHER_VARS


def test_entry_point_variables_are_read_by_the_code() -> None:
    assert "IBEX_BROKER_CONFIG" in (ROOT / "broker" / "wsgi.py").read_text()
    assert "IBEX_CONNECTOR_CONFIG" in (ROOT / "connectors" / "wsgi.py").read_text()
    assert {"IBEX_GUNICORN_WORKERS", "IBEX_GUNICORN_THREADS"} <= GUNICORN_VARS


def parses_as_ibex_command(argv: list[str]) -> str:
    """The argv (without the program name) parses with the real CLI; returns its group."""
    args = build_parser().parse_args(argv)
    return str(args.command)


# --- gunicorn ----------------------------------------------------------------------------------


def load_gunicorn_conf(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, DEPLOY / "gunicorn.conf.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_gunicorn_defaults(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for var in GUNICORN_VARS:
        monkeypatch.delenv(var, raising=False)
    # Empty counts as unset; setenv (unlike delenv of an absent variable) is undone after the
    # test, so the directory the configuration exports does not leak into other tests.
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", "")
    conf = load_gunicorn_conf("gunicorn_conf_defaults")
    import multiprocessing

    assert conf.workers == max(2, multiprocessing.cpu_count())
    assert conf.threads == 8 and conf.worker_class == "gthread"
    assert (conf.timeout, conf.graceful_timeout, conf.keepalive) == (30, 10, 30)
    assert conf.preload_app is False  # stores and committer threads are opened after the fork
    assert conf.control_socket_disable is True
    assert conf.loglevel == "warning"
    # The access log never holds a query string, a referer or a user agent.
    for atom in ("%(r)s", "%(q)s", "%(f)s", "%(a)s", "%(u)s"):
        assert atom not in conf.access_log_format
    assert "%(U)s" in conf.access_log_format
    logging_conf = conf.logconfig_dict
    assert logging_conf["formatters"]["json"]["()"] == "ibex.logs.JsonFormatter"
    assert logging_conf["loggers"]["gunicorn.access"]["level"] == "WARNING"  # access log off
    assert all(h["formatter"] == "json" for h in logging_conf["handlers"].values())
    # prometheus-client multiprocess mode: a fresh private directory when none is given.
    metrics = Path(conf._metrics_dir)
    assert metrics.is_dir() and not any(metrics.iterdir())
    metrics.rmdir()


def test_gunicorn_overrides_and_metrics_dir(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("IBEX_GUNICORN_WORKERS", "3")
    monkeypatch.setenv("IBEX_GUNICORN_THREADS", "4")
    monkeypatch.setenv("IBEX_GUNICORN_TIMEOUT", "45")
    monkeypatch.setenv("IBEX_GUNICORN_LOGLEVEL", "info")
    monkeypatch.setenv("IBEX_GUNICORN_ACCESSLOG", "-")
    metrics = tmp_path / "metrics"
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(metrics))
    conf = load_gunicorn_conf("gunicorn_conf_overrides")
    assert (conf.workers, conf.threads, conf.timeout) == (3, 4, 45)
    assert conf.logconfig_dict["loggers"]["gunicorn.access"]["level"] == "INFO"
    assert conf.logconfig_dict["root"]["level"] == "INFO"
    metrics.mkdir()
    (metrics / "counter_123.db").write_bytes(b"stale")
    (metrics / "keep.txt").write_text("x")
    conf.on_starting(None)
    assert sorted(p.name for p in metrics.iterdir()) == ["keep.txt"]
    assert isinstance(JsonFormatter(), JsonFormatter)


# --- systemd -----------------------------------------------------------------------------------


def read_unit(path: Path) -> dict[str, list[tuple[str, str]]]:
    sections: dict[str, list[tuple[str, str]]] = {}
    current = ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("[") and line.endswith("]"):
            current = line[1:-1]
            sections.setdefault(current, [])
            continue
        key, sep, value = line.partition("=")
        assert sep, f"{path.name}: not a key=value line: {line}"
        sections[current].append((key.strip(), value.strip()))
    return sections


def values(section: list[tuple[str, str]], key: str) -> list[str]:
    return [v for k, v in section if k == key]


def one(section: list[tuple[str, str]], key: str) -> str:
    [value] = values(section, key)
    return value


@pytest.mark.parametrize(
    ("unit", "group", "allowed"),
    [
        ("ibex-broker.service", "broker", BROKER_VARS),
        ("ibex-connector@.service", "connector", CONNECTOR_VARS),
    ],
)
def test_systemd_units_are_hardened_and_consistent(
    unit: str, group: str, allowed: set[str]
) -> None:
    sections = read_unit(DEPLOY / "systemd" / unit)
    assert set(sections) == {"Unit", "Service", "Install"}
    svc = sections["Service"]
    assert one(svc, "User") not in ("root", "0") and one(svc, "User").startswith("ibex-")
    assert one(svc, "NoNewPrivileges") == "yes"
    assert one(svc, "ProtectSystem") == "strict"
    assert one(svc, "ProtectHome") == "yes"
    assert one(svc, "PrivateTmp") == "yes"
    assert one(svc, "UMask") == "0077"
    assert one(svc, "CapabilityBoundingSet") == ""
    families = set(one(svc, "RestrictAddressFamilies").split())
    assert families == {"AF_INET", "AF_INET6", "AF_UNIX"}
    state = one(svc, "StateDirectory")
    runtime = one(svc, "RuntimeDirectory")
    env = dict(v.split("=", 1) for v in values(svc, "Environment"))
    assert set(env) <= allowed, set(env) - allowed
    assert env["IBEX_DATA_DIR"] == f"%S/{state}"  # the SQLCipher files live in the state dir
    assert env["PROMETHEUS_MULTIPROC_DIR"] == f"%t/{runtime}"
    # Keys come from the credentials directory, under the names MemberKeys.load expects.
    assert env["IBEX_KEYS_DIR"] == "%d" and env["IBEX_DB_KEY_FILE"] == "%d/db.key"
    creds = {v.split(":", 1)[0] for v in values(svc, "LoadCredential")}
    member = "IBEX-BROKER" if group == "broker" else "%i"
    assert {f"{member}.ed25519.key", f"{member}.x25519.key", "db.key"} <= creds
    token_var = "IBEX_OVERSIGHT_TOKEN_FILE" if group == "broker" else "IBEX_GATEWAY_TOKEN_FILE"
    assert env[token_var].removeprefix("%d/") in creds
    exe, *argv = shlex.split(one(svc, "ExecStart").replace("%i", "CA-CBSA"))
    assert exe.endswith("/bin/ibex")
    assert parses_as_ibex_command(argv) == group and argv[1] == "serve"
    assert one(sections["Install"], "WantedBy") == "multi-user.target"


# --- container image and compose ------------------------------------------------------------


def test_containerfile() -> None:
    text = (DEPLOY / "container" / "Containerfile").read_text()
    lines = [ln for ln in text.replace("\\\n", " ").splitlines() if ln and not ln.startswith("#")]
    froms = [ln.split()[1] for ln in lines if ln.startswith("FROM")]
    assert froms and all(f.endswith("python:3.11-slim") or f.endswith("python:3.11-slim AS build")
                         for f in froms)  # fmt: skip
    assert all(f.split("/")[-1] == "python:3.11-slim" for f in froms)
    users = [ln.split()[1] for ln in lines if ln.startswith("USER")]
    assert users and users[-1].split(":")[0] not in ("0", "root")
    installs = [ln for ln in lines if "pip install" in ln]
    assert installs and all("-c constraints.txt" in ln for ln in installs)
    for ln in lines:
        if ln.startswith("COPY") and "--from" not in ln:
            for src in ln.split()[1:-1]:
                assert (ROOT / src).exists(), f"Containerfile copies missing {src}"
    exposed = {int(p) for ln in lines if ln.startswith("EXPOSE") for p in ln.split()[1:]}
    assert exposed == {BROKER_PORT, CONNECTOR_PORT}
    cmd = next(ln for ln in lines if ln.startswith("CMD"))
    assert parses_as_ibex_command(yaml.safe_load(cmd[4:])) == "broker"


def compose() -> dict[str, Any]:
    return dict(yaml.safe_load((DEPLOY / "compose.yaml").read_text()))


def config_port(path: Path) -> int:
    return int(tomllib.loads(path.read_text())["port"])


def test_container_configurations_load() -> None:
    broker = tomllib.loads((DEPLOY / "config" / "broker.toml").read_text())
    connector = tomllib.loads((DEPLOY / "config" / "connector.toml").read_text())
    assert set(broker) <= {f.name for f in dataclasses.fields(BrokerConfig)}
    assert set(connector) <= {f.name for f in dataclasses.fields(ConnectorConfig)}
    assert broker["port"] == BROKER_PORT and connector["port"] == CONNECTOR_PORT
    assert (ROOT / "policies").is_dir() and broker["policies_dir"] == "/opt/ibex/app/policies"


def test_compose_services() -> None:
    doc = compose()
    services = doc["services"]
    connectors = {n: s for n, s in services.items() if n.startswith("connector-")}
    assert len(connectors) == 3
    assert {"broker", "opa", "opa-bundle", "nginx"} <= set(services)
    opa = services["opa"]["command"]
    assert opa[:2] == ["run", "--server"] and "--bundle" in opa
    bundle_dir = opa[opa.index("--bundle") + 1]
    assert any(v.endswith(f":{bundle_dir}:ro") for v in services["opa"]["volumes"])
    ob = services["opa-bundle"]
    assert ob["entrypoint"] == ["python", "-m", "ibex.opabundle"]
    out = ob["command"][ob["command"].index("--out") + 1]
    assert any(v.endswith(f":{out}") for v in ob["volumes"])
    with pytest.raises(SystemExit):  # the command's options are the module's own
        opabundle_main([*ob["command"], "--no-such-option"])
    members = set()
    for name, svc in {"broker": services["broker"], **connectors}.items():
        kind = "broker" if name == "broker" else "connector"
        assert parses_as_ibex_command(svc["command"]) == kind
        env = svc["environment"]
        allowed = BROKER_VARS if kind == "broker" else CONNECTOR_VARS
        assert set(env) <= allowed, set(env) - allowed
        assert svc["user"] == "10001:10001" and svc["read_only"] is True
        port = BROKER_PORT if kind == "broker" else CONNECTOR_PORT
        toml = DEPLOY / "config" / f"{kind}.toml"
        assert config_port(toml) == port
        assert f"http://127.0.0.1:{port}/readyz" in " ".join(svc["healthcheck"]["test"])
        assert "/readyz" in (BROKER_ROUTES if kind == "broker" else CONNECTOR_ROUTES)
        keys_dir = tomllib.loads(toml.read_text())["keys_dir"]
        member = "IBEX-BROKER" if kind == "broker" else env["IBEX_MEMBER_ID"]
        if kind == "connector":
            assert MEMBER_ID_RE.fullmatch(member)
            members.add(member)
        targets = {"/run/secrets/" + s["target"] for s in svc["secrets"]}
        for f in (f"{member}.ed25519.key", f"{member}.x25519.key", "db.key"):
            assert f"{keys_dir}/{f}" in targets
        for s in svc["secrets"]:
            assert s["mode"] == 0o400 and s["source"] in doc["secrets"]
    assert len(members) == 3
    assert services["broker"]["environment"]["IBEX_OPA_URL"] == "http://opa:8181"
    assert "0.0.0.0:8181" in opa
    for volume in services["nginx"]["volumes"]:
        src = volume.split(":")[0]
        if src.endswith(".conf"):
            assert (DEPLOY / src).is_file()


# --- nginx -------------------------------------------------------------------------------------


def nginx_servers() -> list[str]:
    text = (DEPLOY / "nginx" / "ibex.conf").read_text()
    text = "\n".join(ln.split("#", 1)[0] for ln in text.splitlines())
    return re.findall(r"server\s*\{((?:[^{}]|\{[^{}]*\})*)\}", text)


def test_nginx_mutual_tls_and_routes() -> None:
    services = compose()["services"]
    published = {int(p.split(":")[0]) for p in services["nginx"]["ports"]}
    tls_ports, plain_ports = set(), set()
    for block in nginx_servers():
        port = int(re.search(r"listen\s+(\d+)", block).group(1))  # type: ignore[union-attr]
        upstream = re.search(r"proxy_pass\s+(https?)://([\w.-]+):(\d+);", block)
        assert upstream, block
        scheme, host, target = upstream.group(1), upstream.group(2), int(upstream.group(3))
        if re.search(rf"listen\s+{port}\s+ssl", block):
            tls_ports.add(port)
            assert re.search(r"ssl_verify_client\s+on;", block), f"port {port} without mTLS"
            assert "ssl_certificate " in block and "ssl_certificate_key " in block
            assert re.search(r"location = /metrics \{ return 404; \}", block)
            assert scheme == "http" and host in services
            expected = BROKER_PORT if host == "broker" else CONNECTOR_PORT
            assert target == expected
            if host.startswith("connector-"):
                assert "location /v1/gateway/" in block
        else:
            plain_ports.add(port)
            assert scheme == "https" and re.search(r"proxy_ssl_verify\s+on;", block)
            assert "proxy_ssl_certificate " in block
    assert published == tls_ports
    nginx_text = (DEPLOY / "nginx" / "ibex.conf").read_text()
    assert "ssl_client_certificate" in nginx_text
    for name, svc in services.items():
        env = svc.get("environment") or {}
        for var in ("IBEX_BROKER_URL", "IBEX_PUBLIC_URL"):
            url = env.get(var, "")
            if url.startswith("http://nginx:"):
                assert int(url.rsplit(":", 1)[1]) in plain_ports, (name, var)


# --- Kubernetes --------------------------------------------------------------------------------


def k8s_docs() -> list[dict[str, Any]]:
    docs = []
    for path in sorted((DEPLOY / "k8s").glob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        docs += [d for d in yaml.safe_load_all(path.read_text()) if d]
    return docs


def test_kustomization_lists_every_manifest() -> None:
    kust = yaml.safe_load((DEPLOY / "k8s" / "kustomization.yaml").read_text())
    listed = set(kust["resources"])
    present = {p.name for p in (DEPLOY / "k8s").glob("*.yaml")} - {"kustomization.yaml"}
    assert listed == present


def test_k8s_manifests() -> None:
    docs = k8s_docs()
    by_kind: dict[str, list[dict[str, Any]]] = {}
    for d in docs:
        assert {"apiVersion", "kind", "metadata"} <= set(d)
        assert d["kind"] == "Namespace" or d["metadata"]["namespace"] == "ibex"
        by_kind.setdefault(d["kind"], []).append(d)
    configmaps = {d["metadata"]["name"]: d for d in by_kind["ConfigMap"]}
    deployments = by_kind["Deployment"]
    assert {d["metadata"]["name"] for d in deployments} >= {"ibex-broker", "ibex-ca-cbsa"}
    pod_labels = [d["spec"]["template"]["metadata"]["labels"] for d in deployments]
    for dep in deployments:
        spec = dep["spec"]["template"]["spec"]
        assert spec["securityContext"]["runAsNonRoot"] is True
        assert spec["automountServiceAccountToken"] is False
        volumes = {v["name"]: v for v in spec["volumes"]}
        secrets = [v["secret"]["secretName"] for v in volumes.values() if "secret" in v]
        assert any(s.endswith("-keys") for s in secrets)  # keys come from a Secret
        app = next(c for c in spec["containers"] if c["name"] in ("broker", "connector"))
        kind = app["name"]
        assert parses_as_ibex_command(app["args"]) == kind
        allowed = BROKER_VARS if kind == "broker" else CONNECTOR_VARS
        env = {e["name"]: e.get("value") for e in app.get("env", [])}
        assert set(env) <= allowed, set(env) - allowed
        config_mount = next(m for m in app["volumeMounts"] if m["mountPath"].endswith(".toml"))
        cm = configmaps[volumes[config_mount["name"]]["configMap"]["name"]]
        settings = tomllib.loads(cm["data"][config_mount["subPath"]])
        fields = {f.name for f in dataclasses.fields(BrokerConfig if kind == "broker"
                                                      else ConnectorConfig)}  # fmt: skip
        assert set(settings) <= fields
        port = settings["port"]
        assert port == (BROKER_PORT if kind == "broker" else CONNECTOR_PORT)
        assert [p["containerPort"] for p in app["ports"]] == [port]
        assert app["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": port}
        assert app["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": port}
        routes = BROKER_ROUTES if kind == "broker" else CONNECTOR_ROUTES
        for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
            assert app[probe]["httpGet"]["path"] in routes
        assert settings["keys_dir"] in {m["mountPath"] for m in app["volumeMounts"]}
        for init in spec.get("initContainers", []):
            for mount in init["volumeMounts"]:
                assert mount["name"] in volumes
        if kind == "broker":
            assert env["IBEX_POLICY_ENGINE"] == "opa"
            opa = next(c for c in spec["containers"] if c["name"] == "opa")
            assert opa["args"][:2] == ["run", "--server"] and "--bundle" in opa["args"]
            assert env["IBEX_OPA_URL"].endswith(opa["args"][opa["args"].index("--addr") + 1])
            assert volumes["policies-cm"]["configMap"]["name"] == "ibex-policies"
    for svc in by_kind["Service"]:
        selector = svc["spec"]["selector"]
        assert any(selector.items() <= labels.items() for labels in pod_labels)
        assert all(p["targetPort"] in (BROKER_PORT, CONNECTOR_PORT) for p in svc["spec"]["ports"])
    for pdb in by_kind["PodDisruptionBudget"]:
        selector = pdb["spec"]["selector"]["matchLabels"]
        assert any(selector.items() <= labels.items() for labels in pod_labels)
    policies = {p["metadata"]["name"]: p for p in by_kind["NetworkPolicy"]}
    assert policies["default-deny"]["spec"]["podSelector"] == {}
    connectors = policies["connectors-from-broker-only"]["spec"]
    assert connectors["podSelector"]["matchLabels"] == {"app.kubernetes.io/name": "ibex-connector"}
    sources = connectors["ingress"][0]["from"]
    pods = [s["podSelector"]["matchLabels"] for s in sources if "podSelector" in s]
    assert pods == [{"app.kubernetes.io/name": "ibex-broker"}]
    assert [p["port"] for p in connectors["ingress"][0]["ports"]] == [CONNECTOR_PORT]


# --- Prometheus --------------------------------------------------------------------------------


def test_prometheus_scrapes_and_alerts_name_real_metrics() -> None:
    prom = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    for rule_file in prom["rule_files"]:
        assert (DEPLOY / "prometheus" / rule_file).is_file()
    services = compose()["services"]
    for job in prom["scrape_configs"]:
        assert job["metrics_path"] == "/metrics"
        for target in job["static_configs"][0]["targets"]:
            host, port = target.split(":")
            assert host in services
            assert int(port) == (BROKER_PORT if host == "broker" else CONNECTOR_PORT)
    alerts = yaml.safe_load((DEPLOY / "prometheus" / "alerts.yml").read_text())
    rules = [r for g in alerts["groups"] for r in g["rules"]]
    known = set(METRIC_NAMES)
    used: set[str] = set()
    for rule in rules:
        for name in re.findall(r"\bibex_[a-z_]+", rule["expr"]):
            base = re.sub(r"_(bucket|count|sum)$", "", name)
            assert base in known, f"{rule['alert']}: {name} is not a metric IBEX exports"
            used.add(base)
        assert rule["labels"]["severity"] in ("warning", "critical")
    assert {
        "ibex_audit_append_failures_total",
        "ibex_audit_checkpoint_age_seconds",
        "ibex_broker_target_results_total",
        "ibex_policy_engine_errors_total",
    } <= used


def test_every_deploy_file_is_checked() -> None:
    checked = {
        "gunicorn.conf.py",
        "systemd/ibex-broker.service",
        "systemd/ibex-connector@.service",
        "container/Containerfile",
        "compose.yaml",
        "config/broker.toml",
        "config/connector.toml",
        "nginx/ibex.conf",
        "prometheus/prometheus.yml",
        "prometheus/alerts.yml",
        *(f"k8s/{p.name}" for p in (DEPLOY / "k8s").glob("*.yaml")),
    }
    present = {
        p.relative_to(DEPLOY).as_posix()
        for p in DEPLOY.rglob("*")
        if p.is_file() and "__pycache__" not in p.parts
    }
    assert present == checked, present ^ checked
