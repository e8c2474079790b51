"""The production Dagster deployment in ``deploy/dagster/``, checked without a Kubernetes cluster.

* the whole ``dagster.yaml`` against Dagster's instance schema, and each configurable block against the
  schema of the class it names (dagster-postgres storage, dagster-k8s ``K8sRunLauncher``,
  ``QueuedRunCoordinator``); ``k8s_executor.yaml`` against ``k8s_job_executor``'s schema;
* the Kubernetes Job the ``K8sRunLauncher`` renders for a run of ``reconcile_business_date``: the real
  launcher class and its ``launch_run``, with only the Kubernetes API client replaced by a recorder;
* a step pod of ``k8s_job_executor``, rendered with ``construct_dagster_k8s_job`` directly;
* the storage block against the real PostgreSQL on 127.0.0.1:5432: a copy of ``dagster.yaml`` *without
  the run_launcher block* (``K8sRunLauncher.__init__`` loads the in-cluster Kubernetes config) in a
  temporary ``DAGSTER_HOME``, one materialisation, the run read back from the ``runs`` table and from a
  second instance object.
"""

from __future__ import annotations

import shutil
import uuid
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any
from unittest import mock

import dagster as dg
import pytest
import yaml
from dagster._config import process_config, validate_config
from dagster._core.definitions.reconstruct import ReconstructableRepository
from dagster._core.instance.config import dagster_instance_config
from dagster._core.launcher import LaunchRunContext
from dagster._core.run_coordinator import QueuedRunCoordinator
from dagster_k8s import K8sRunLauncher, k8s_job_executor
from dagster_k8s.job import DagsterK8sJobConfig, UserDefinedDagsterK8sConfig, construct_dagster_k8s_job
from dagster_postgres import DagsterPostgresStorage

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy" / "dagster"
INSTANCE_YAML = DEPLOY / "dagster.yaml"
EXECUTOR_YAML = DEPLOY / "k8s_executor.yaml"
JOB = "reconcile_business_date"
IMAGE = "registry.example.com/recon/code:1.2.3"
PG_ENV = ("DAGSTER_PG_HOST", "DAGSTER_PG_USER", "DAGSTER_PG_PASSWORD", "DAGSTER_PG_DB", "DAGSTER_PG_PORT")


def _load(path: Path) -> dict[str, Any]:
    data = yaml.safe_load(path.read_text())
    assert isinstance(data, dict)
    return data


def _processed(schema: Any, value: Mapping[str, Any]) -> dict[str, Any]:
    """Validate and resolve (``env:`` sources, defaults) ``value`` against a Dagster config schema."""
    result = process_config(schema, value)
    assert result.success, [e.message for e in result.errors or []]
    assert isinstance(result.value, dict)
    return result.value


@pytest.fixture
def prod_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """What the deployment sets (the real values come from the cluster's ConfigMaps and Secrets)."""
    for name, value in {
        "DAGSTER_PG_HOST": "recon-pg.internal",
        "DAGSTER_PG_USER": "dagster",
        "DAGSTER_PG_PASSWORD": "s3cret",
        "DAGSTER_PG_DB": "dagster",
        "DAGSTER_PG_PORT": "5432",
        "RECON_JOB_IMAGE": IMAGE,
        "RECON_K8S_NAMESPACE": "recon",
    }.items():
        monkeypatch.setenv(name, value)


# --- schemas -------------------------------------------------------------------------------------


def test_instance_yaml_passes_dagster_instance_schema() -> None:
    config, custom_class = dagster_instance_config(str(DEPLOY), INSTANCE_YAML.name)
    assert custom_class is None
    assert set(config["storage"]) == {"postgres"}
    assert config["run_launcher"]["module"] == "dagster_k8s"
    assert config["run_launcher"]["class"] == "K8sRunLauncher"
    assert config["run_coordinator"]["class"] == "QueuedRunCoordinator"
    assert config["telemetry"]["enabled"] is False


def test_storage_block_matches_dagster_postgres_schema(prod_env: None) -> None:
    raw = _load(INSTANCE_YAML)["storage"]["postgres"]
    assert raw["postgres_db"] == {
        "hostname": {"env": "DAGSTER_PG_HOST"},
        "username": {"env": "DAGSTER_PG_USER"},
        "password": {"env": "DAGSTER_PG_PASSWORD"},
        "db_name": {"env": "DAGSTER_PG_DB"},
        "port": {"env": "DAGSTER_PG_PORT"},
    }
    db = _processed(DagsterPostgresStorage.config_type(), raw)["postgres_db"]
    assert (db["hostname"], db["username"], db["password"], db["db_name"], db["port"]) == (
        "recon-pg.internal",
        "dagster",
        "s3cret",
        "dagster",
        5432,
    )


def test_run_coordinator_block_matches_queued_run_coordinator_schema() -> None:
    block = _load(INSTANCE_YAML)["run_coordinator"]
    config = _processed(QueuedRunCoordinator.config_type(), block["config"])
    assert config["max_concurrent_runs"] >= 1
    assert {"key": "dagster/partition", "limit": 1} in config["tag_concurrency_limits"]
    coordinator = QueuedRunCoordinator(**config)
    assert coordinator.get_run_queue_config().max_concurrent_runs == config["max_concurrent_runs"]


def test_run_launcher_block_matches_dagster_k8s_schema(prod_env: None) -> None:
    block = _load(INSTANCE_YAML)["run_launcher"]["config"]
    assert validate_config(K8sRunLauncher.config_type(), block).success
    config = _processed(K8sRunLauncher.config_type(), block)
    assert config["job_image"] == IMAGE
    assert config["job_namespace"] == "recon"
    assert config["load_incluster_config"] is True
    # a misspelt key is refused by the same schema, so the check above is not vacuous
    assert not validate_config(K8sRunLauncher.config_type(), {**block, "job_imag": "x"}).success


def test_executor_yaml_matches_k8s_job_executor_schema() -> None:
    execution = _load(EXECUTOR_YAML)["execution"]
    config = _processed(k8s_job_executor.config_schema.as_field().config_type, execution["config"])
    assert config["resources"]["limits"] == {"cpu": "1", "memory": "2Gi"}
    # per-step overrides name real steps of the job
    from reconciliation_pipeline.definitions import defs

    steps = {node.name for node in defs.resolve_job_def(JOB).graph.nodes}
    assert set(config["per_step_k8s_config"]) <= steps, steps


# --- rendered Kubernetes Jobs ----------------------------------------------------------------------


def _env_by_name(container: Any) -> dict[str, Any]:
    return {e.name: e for e in container.env or []}


@pytest.fixture
def launched_job(prod_env: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """The V1Job the production K8sRunLauncher submits for a run of reconcile_business_date."""
    config = _processed(K8sRunLauncher.config_type(), _load(INSTANCE_YAML)["run_launcher"]["config"])
    batch_api = mock.MagicMock()
    # The one thing that needs a cluster: reading the in-cluster service-account config.
    monkeypatch.setattr("dagster_k8s.launcher.load_kubernetes_config", lambda **_: None)
    launcher = K8sRunLauncher(**config, k8s_client_batch_api=batch_api, k8s_client_core_api=mock.MagicMock())

    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path))
    with dg.DagsterInstance.from_config(
        str(tmp_path)
    ) as instance:  # SQLite: get_ref() needs a persistent one
        launcher.register_instance(instance)
        recon_job = ReconstructableRepository.for_module(
            "reconciliation_pipeline.definitions", "defs", working_directory=str(REPO)
        ).get_reconstructable_job(JOB)
        run = instance.create_run_for_job(
            recon_job.get_definition(),
            job_code_origin=recon_job.get_python_origin(),
            tags={"dagster/partition": "2024-05-01"},
        )
        launcher.launch_run(LaunchRunContext(dagster_run=run, workspace=None))
        assert batch_api.create_namespaced_job.call_count == 1
        kwargs = batch_api.create_namespaced_job.call_args.kwargs
        assert kwargs["namespace"] == "recon"
        yield run, kwargs["body"], instance


def test_launcher_renders_run_worker_job(launched_job: Any) -> None:
    run, job, instance = launched_job
    assert job.kind == "Job"
    assert job.metadata.name == f"dagster-run-{run.run_id}"
    pod = job.spec.template.spec
    [container] = pod.containers

    # image, and the command that executes exactly this run
    assert container.image == IMAGE
    assert container.image_pull_policy == "IfNotPresent"
    assert instance.get_run_by_id(run.run_id).tags["dagster/image"] == IMAGE
    args = container.args
    assert args[:3] == ["dagster", "api", "execute_run"]
    payload = args[3]
    assert run.run_id in payload and JOB in payload and "reconciliation_pipeline.definitions" in payload

    # environment: the store URL from a secret key, config maps, literal values, Dagster's own
    env = _env_by_name(container)
    db_url = env["RECON_DATABASE_URL"]
    assert db_url.value is None
    assert (db_url.value_from.secret_key_ref.name, db_url.value_from.secret_key_ref.key) == (
        "recon-secrets",
        "RECON_DATABASE_URL",
    )
    assert env["RECON_DATA_DIR"].value == "/data"
    assert env["RECON_BUSINESS_TZ"].value == "Europe/Malta"
    assert env["DAGSTER_HOME"].value == "/opt/dagster/dagster_home"
    assert env["DAGSTER_RUN_JOB_NAME"].value == JOB
    assert env["DAGSTER_PG_PASSWORD"].value_from.secret_key_ref.name == "recon-dagster-postgresql"
    assert [s.config_map_ref.name for s in container.env_from] == ["recon-dagster-pg-env", "recon-config"]

    # resources, volumes, identity
    assert container.resources.requests == {"cpu": "500m", "memory": "1Gi"}
    assert container.resources.limits == {"cpu": "2", "memory": "4Gi"}
    assert [(m.name, m.mount_path) for m in container.volume_mounts] == [("recon-data", "/data")]
    assert pod.volumes[0].persistent_volume_claim.claim_name == "recon-data"
    assert pod.service_account_name == "recon-dagster-run"
    assert pod.restart_policy == "Never"

    # labels on the Job and on the pod template
    for labels in (job.metadata.labels, job.spec.template.metadata.labels):
        assert labels["app.kubernetes.io/part-of"] == "recon"
        assert labels["app.kubernetes.io/component"] == "run_worker"
        assert labels["dagster/job"] == JOB
        assert labels["dagster/run-id"] == run.run_id

    # Kubernetes does not retry the pod (Dagster does), finished Jobs are cleaned up
    assert job.spec.backoff_limit == 0
    assert job.spec.ttl_seconds_after_finished == 86400
    assert job.spec.active_deadline_seconds == 7200


def test_executor_step_pod_rendering() -> None:
    """A step pod for ``reconciliation`` as k8s_job_executor builds it: the executor's job config plus the
    step_k8s_config, with the per-step override for that step winning on resources."""
    config = _processed(
        k8s_job_executor.config_schema.as_field().config_type, _load(EXECUTOR_YAML)["execution"]["config"]
    )
    job_config = DagsterK8sJobConfig(
        job_image=IMAGE,
        dagster_home="/opt/dagster/dagster_home",
        image_pull_policy=config["image_pull_policy"],
        service_account_name=config["service_account_name"],
        env_config_maps=config["env_config_maps"],
        env_vars=config["env_vars"],
        labels=config["labels"],
        resources=config["resources"],
        instance_config_map="recon-dagster-instance",
    )
    step_config = UserDefinedDagsterK8sConfig.from_dict(config["step_k8s_config"])
    override = UserDefinedDagsterK8sConfig.from_dict(config["per_step_k8s_config"]["reconciliation"])
    merged = UserDefinedDagsterK8sConfig.from_dict(
        {
            **step_config.to_dict(),
            "container_config": {**step_config.container_config, **override.container_config},
        }
    )
    args = ["dagster", "api", "execute_step", "<serialized ExecuteStepArgs>"]
    job = construct_dagster_k8s_job(
        job_config=job_config,
        args=args,
        job_name="dagster-step-0123456789abcdef",
        user_defined_k8s_config=merged,
        component="step_worker",
        labels={"dagster/job": JOB, "dagster/op": "reconciliation"},
    )
    pod = job.spec.template.spec
    [container] = pod.containers
    assert container.image == IMAGE and container.args == args
    assert container.resources.limits == {"cpu": "2", "memory": "6Gi"}
    assert _env_by_name(container)["RECON_DATABASE_URL"].value_from.secret_key_ref.name == "recon-secrets"
    assert _env_by_name(container)["RECON_DATA_DIR"].value == "/data"
    assert pod.service_account_name == "recon-dagster-run"
    assert job.metadata.labels["app.kubernetes.io/component"] == "step_worker"
    assert job.metadata.labels["recon/component"] == "dagster-step"
    assert (job.spec.backoff_limit, job.spec.ttl_seconds_after_finished) == (0, 3600)


# --- PostgreSQL storage against the real server ------------------------------------------------------


PG_ADMIN = {"host": "127.0.0.1", "port": 5432, "user": "postgres", "dbname": "postgres", "connect_timeout": 5}


@pytest.fixture
def dagster_pg_db() -> Iterator[str]:
    psycopg2 = pytest.importorskip("psycopg2")
    try:
        admin = psycopg2.connect(**PG_ADMIN)
    except psycopg2.OperationalError as exc:
        pytest.skip(f"PostgreSQL not reachable at 127.0.0.1:5432: {exc}")
    admin.autocommit = True
    name = f"dagster_deploy_{uuid.uuid4().hex[:12]}"
    try:
        with admin.cursor() as cur:
            cur.execute(f'CREATE DATABASE "{name}"')
        yield name
    finally:
        with admin.cursor() as cur:
            cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()


@dg.asset
def deploy_smoke() -> int:
    return 42


@pytest.mark.postgres
def test_production_storage_records_runs_in_postgres(
    dagster_pg_db: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import psycopg2

    for name, value in zip(PG_ENV, ("127.0.0.1", "postgres", "", dagster_pg_db, "5432"), strict=True):
        monkeypatch.setenv(name, value)
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copy(INSTANCE_YAML, home / "dagster.yaml")
    # The copy without the run_launcher block: K8sRunLauncher() loads the in-cluster config (no cluster
    # here). Everything else (storage, run coordinator, telemetry) is the production file as is.
    config = _load(home / "dagster.yaml")
    del config["run_launcher"]
    (home / "dagster.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    monkeypatch.setenv("DAGSTER_HOME", str(home))

    with dg.DagsterInstance.get() as instance:
        assert type(instance.run_storage).__name__ == "PostgresRunStorage"
        assert type(instance.event_log_storage).__name__ == "PostgresEventLogStorage"
        assert type(instance.run_coordinator).__name__ == "QueuedRunCoordinator"
        result = dg.materialize([deploy_smoke], instance=instance, tags={"recon/test": "deploy"})
        assert result.success
        run_id = result.run_id

    with psycopg2.connect(**{**PG_ADMIN, "dbname": dagster_pg_db}) as conn, conn.cursor() as cur:
        cur.execute("SELECT status FROM runs WHERE run_id = %s", (run_id,))
        assert cur.fetchall() == [("SUCCESS",)]
        cur.execute("SELECT count(*) FROM event_logs WHERE run_id = %s", (run_id,))
        row = cur.fetchone()
        assert row is not None and row[0] > 0
    conn.close()

    with dg.DagsterInstance.from_config(str(home)) as second:
        [run] = second.get_runs(filters=dg.RunsFilter(run_ids=[run_id]))
        assert run.status == dg.DagsterRunStatus.SUCCESS
        assert run.tags["recon/test"] == "deploy"
        mat = second.get_latest_materialization_event(dg.AssetKey("deploy_smoke"))
        assert mat is not None and mat.run_id == run_id
