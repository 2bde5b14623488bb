"""One Settings value, read once at the edge, reaches every S3 client (s3fs, LanceDB, dagster-aws,
the parquet IO manager, CatalogSearch, the service) with the endpoint and the session token, and its
secrets never reach Dagster's run config, metadata or logs."""

from __future__ import annotations

import tempfile
import uuid
from pathlib import Path

import boto3
import pytest
from dagster import EnvVar, build_resources, instance_for_test

from fashion_search_pipeline.config import S3Settings, Settings
from fashion_search_pipeline.definitions import build_definitions
from fashion_search_pipeline.defs.materialize import materialize_graph
from fashion_search_pipeline.demo_catalog import demo_items, write_drop
from fashion_search_pipeline.search import CatalogSearch
from fashion_search_pipeline.service.settings import ServiceSettings
from fashion_search_pipeline.store.tables import table_name
from fashion_search_pipeline_tests.data_folder import write_tiny_registry

MODEL = "tiny"

SECRET = "secret-" + uuid.uuid4().hex
TOKEN = "session-token-" + uuid.uuid4().hex


@pytest.fixture
def bucket(s3_endpoint) -> str:
    name = f"settings-{uuid.uuid4().hex[:8]}"
    client = boto3.client(
        "s3", endpoint_url=s3_endpoint["endpoint_url"], region_name=s3_endpoint["region"],
        aws_access_key_id=s3_endpoint["key"], aws_secret_access_key=SECRET, aws_session_token=TOKEN,
    )
    client.create_bucket(Bucket=name)
    return name


@pytest.fixture
def environ(s3_endpoint, bucket, tmp_path, monkeypatch) -> dict[str, str]:
    """An environment with every location on s3:// and temporary (STS-style) credentials, set for this process."""
    registry = write_tiny_registry(tmp_path / "home", MODEL)
    env = {
        "FASHION_SEARCH_HOME": str(tmp_path / "home"),
        "FASHION_SEARCH_LANDING": f"s3://{bucket}/landing",
        "FASHION_SEARCH_DB": f"s3://{bucket}/lancedb",
        "FASHION_SEARCH_ASSETS": f"s3://{bucket}/assets",
        "FASHION_SEARCH_MODELS": str(registry),
        "AWS_ENDPOINT_URL": s3_endpoint["endpoint_url"],
        "AWS_DEFAULT_REGION": s3_endpoint["region"],
        "AWS_ACCESS_KEY_ID": s3_endpoint["key"],
        "AWS_SECRET_ACCESS_KEY": SECRET,
        "AWS_SESSION_TOKEN": TOKEN,
    }
    for name in ("FASHION_SEARCH_S3_ENDPOINT_URL", "AWS_REGION", "DAGSTER_HOME"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return env


def test_settings_read_every_location_and_credential_once(environ, s3_endpoint, bucket):
    settings = Settings.from_env(environ)
    assert settings.landing == f"s3://{bucket}/landing" and settings.assets == f"s3://{bucket}/assets"
    assert settings.s3 == S3Settings(s3_endpoint["endpoint_url"], s3_endpoint["region"], "testing", SECRET, TOKEN)
    assert SECRET not in repr(settings) and TOKEN not in repr(settings)
    assert Settings.from_env(environ, db="/elsewhere").db == "/elsewhere"
    assert Settings.from_env({}, home="/tmp/h").landing == str(Path("/tmp/h/landing").resolve())


def test_every_s3_client_gets_the_endpoint_and_the_session_token(environ, s3_endpoint):
    settings = Settings.from_env(environ)
    endpoint = s3_endpoint["endpoint_url"]
    assert settings.storage_options(settings.landing) == {
        "key": "testing", "secret": SECRET, "token": TOKEN,
        "client_kwargs": {"endpoint_url": endpoint, "region_name": s3_endpoint["region"]},
    }
    lance = settings.lancedb_options(settings.db)
    assert lance["aws_session_token"] == TOKEN and lance["aws_endpoint"] == endpoint and lance["allow_http"] == "true"
    assert settings.storage_options("/local/folder") == {} and settings.lancedb_options("/local/db") == {}

    defs = build_definitions(settings, environ=environ)
    storage = defs.resources["storage"]
    # Secrets reach Dagster as EnvVars (their names), never as values ...
    assert storage.aws_session_token == EnvVar("AWS_SESSION_TOKEN")
    assert storage.aws_secret_access_key == EnvVar("AWS_SECRET_ACCESS_KEY")
    assert defs.resources["s3"].aws_session_token == EnvVar("AWS_SESSION_TOKEN")
    assert defs.resources["s3"].endpoint_url == EnvVar("AWS_ENDPOINT_URL")
    # ... that resolve, when a run initializes the resources, to what every client is given.
    with build_resources(defs.resources) as resources:
        assert resources.storage.options_for(settings.landing)["token"] == TOKEN
        assert resources.storage.s3() == settings.s3
        options = resources.io_manager.storage_options()
        assert options["token"] == TOKEN and options["client_kwargs"]["endpoint_url"] == endpoint
        assert resources.s3.meta.endpoint_url == endpoint  # S3Resource yields its boto3 client
        assert resources.s3._request_signer._credentials.token == TOKEN

    with CatalogSearch.from_settings(settings, registry={}) as search:
        assert search.s3.session_token == TOKEN and search.s3.endpoint_url == endpoint
    service = ServiceSettings.from_environment(environ, settings)
    assert service.s3 == settings.s3 and service.db_uri == settings.db


def test_materialization_on_s3_with_a_session_token_keeps_secrets_out_of_dagster(environ, bucket, s3_endpoint):
    client = boto3.client(
        "s3", endpoint_url=s3_endpoint["endpoint_url"], region_name=s3_endpoint["region"],
        aws_access_key_id="testing", aws_secret_access_key=SECRET, aws_session_token=TOKEN,
    )
    with tempfile.TemporaryDirectory() as folder:
        local = write_drop(Path(folder), demo_items(variants=1)[:8])
        for path in sorted(p for p in local.rglob("*") if p.is_file()):
            client.put_object(Bucket=bucket, Key=f"landing/drops/d1/{path.relative_to(local).as_posix()}",
                              Body=path.read_bytes())
    settings = Settings.from_env(environ)
    defs = build_definitions(settings, environ=environ)
    with instance_for_test() as instance:
        runner = materialize_graph(defs, instance, ["d1"], [MODEL], log=lambda _: None, console_log_level="ERROR")
        assert runner.ok, runner.failures
        runs = instance.get_runs()
        assert runs and all(SECRET not in str(run.run_config) and TOKEN not in str(run.run_config) for run in runs)
        stored = [p for p in Path(instance.root_directory).rglob("*") if p.is_file()]
        assert any(p.suffix == ".db" for p in stored)
        for path in stored:
            content = path.read_bytes()
            assert SECRET.encode() not in content and TOKEN.encode() not in content, path

    keys = {item["Key"] for item in client.list_objects_v2(Bucket=bucket)["Contents"]}
    assert any(key.startswith("assets/cleaned_captions/") for key in keys), "asset values on S3 (the IO manager)"
    assert any(key.startswith(f"lancedb/{table_name(MODEL, 'image')}.lance/") for key in keys)
    with CatalogSearch.from_settings(settings) as search:
        assert search.text("red dress", model=MODEL, k=3).height == 3


# Where the environment may be touched: the edges that build Settings (or, for dagster_home, point the
# CLI's own Dagster instance at its folder). Every other module takes a Settings value.
ENVIRONMENT_EDGES = {"config.py", "cli.py", "definitions.py", "dagster_home.py", "scale/ray_serve.py"}


def test_only_the_edges_touch_the_environment():
    package = Path(__file__).resolve().parents[1] / "fashion_search_pipeline"
    readers = {
        str(path.relative_to(package))
        for path in package.rglob("*.py")
        if any(word in path.read_text(encoding="utf-8") for word in ("os.environ", "os.getenv", "os.putenv"))
    }
    assert readers <= ENVIRONMENT_EDGES, sorted(readers - ENVIRONMENT_EDGES)
    assert not hasattr(__import__("fashion_search_pipeline.config").config, "data_home")


def test_the_models_root_and_the_last_good_registry_live_in_the_data_folder(tmp_path):
    settings = Settings.from_env({"FASHION_SEARCH_HOME": str(tmp_path)})
    assert settings.models_dir == tmp_path.resolve() / "models"
    assert settings.last_good_models_file == tmp_path.resolve() / "models.last-good.yaml"
