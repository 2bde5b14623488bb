"""Probe: storage faults (no such bucket, wrong endpoint, a connection refused) say what and where.

Before: the CLI said "no drops found under s3://…/drops/" for an unreadable bucket, connection
errors escaped as raw tracebacks without the drop's name, and LanceDB's errors reached users raw.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import urllib.request

import boto3
import pytest

from fashion_search_pipeline.catalog.captions import CaptionsFileError, read_captions
from fashion_search_pipeline.catalog.drops import DropLocation, LandingAccessError, S3DropListing, list_drops
from fashion_search_pipeline.config import S3Settings
from fashion_search_pipeline.store.tables import TableStoreError, connect


@pytest.fixture(scope="module")
def closed_port() -> int:
    """A local port nothing listens on (connections are refused at once)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _settings(s3_endpoint, endpoint_url=None) -> S3Settings:
    return S3Settings(
        endpoint_url=endpoint_url or s3_endpoint["endpoint_url"],
        region=s3_endpoint["region"],
        access_key_id=s3_endpoint["key"],
        secret_access_key=s3_endpoint["secret"],
    )


def test_a_missing_bucket_is_an_error_naming_the_uri_not_no_drops(s3_endpoint):
    with pytest.raises(LandingAccessError, match=r"s3://no-such-bucket-x/shop/drops/.*bucket name"):
        list_drops("s3://no-such-bucket-x/shop", _settings(s3_endpoint).s3fs_options())


def test_an_empty_but_readable_landing_has_no_drops(s3_endpoint):
    boto3.client("s3", **_client_args(s3_endpoint)).create_bucket(Bucket="empty-landing")
    assert list_drops("s3://empty-landing/shop", _settings(s3_endpoint).s3fs_options()) == []


def _client_args(s3_endpoint, endpoint_url=None) -> dict:
    return {
        "endpoint_url": endpoint_url or s3_endpoint["endpoint_url"],
        "region_name": s3_endpoint["region"],
        "aws_access_key_id": s3_endpoint["key"],
        "aws_secret_access_key": s3_endpoint["secret"],
    }


def test_a_wrong_endpoint_names_the_uri_and_the_drop(s3_endpoint, closed_port):
    wrong = f"http://127.0.0.1:{closed_port}"
    options = _settings(s3_endpoint, wrong).s3fs_options()
    with pytest.raises(LandingAccessError, match=r"cannot read s3://shop-landing/shop/drops/: EndpointConnectionError"):
        list_drops("s3://shop-landing/shop", options)
    with pytest.raises(CaptionsFileError, match=r"drop '2026-11-22': cannot read s3://shop-landing/shop/drops/2026-11-22/captions.csv"):
        read_captions(DropLocation("s3://shop-landing/shop", "2026-11-22"), options)
    listing = S3DropListing(boto3.client("s3", **_client_args(s3_endpoint, wrong)), "s3://shop-landing/shop")
    with pytest.raises(LandingAccessError, match=r"s3://shop-landing/shop/drops/"):
        listing.drop_ids_after(None)
    with pytest.raises(LandingAccessError, match=r"drop '2026-11-22': cannot read s3://shop-landing/shop/drops/2026-11-22/"):
        listing.is_complete("2026-11-22")


def test_lancedb_errors_name_the_database_uri_in_one_line(s3_endpoint, closed_port):
    options = _settings(s3_endpoint, f"http://127.0.0.1:{closed_port}").lancedb_options()
    with pytest.raises(TableStoreError) as raised:
        db = connect("s3://no-such-db-bucket/lancedb", options)
        db.open_table("tiny__image")
    message = str(raised.value)
    assert "s3://no-such-db-bucket/lancedb" in message and "\n" not in message and len(message) < 600


def test_the_cli_reports_an_unreadable_landing_in_one_line(s3_endpoint, closed_port, tmp_path):
    env = {
        "PATH": "/usr/bin:/bin",
        "FASHION_SEARCH_HOME": str(tmp_path),
        "FASHION_SEARCH_S3_ENDPOINT_URL": f"http://127.0.0.1:{closed_port}",
        "AWS_REGION": "us-east-1",
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_MAX_ATTEMPTS": "1",
    }
    done = subprocess.run(
        [sys.executable, "-m", "fashion_search_pipeline.cli", "materialize", "--landing", "s3://shop-landing/shop"],
        capture_output=True, text=True, env=env, timeout=300,
    )
    assert done.returncode == 1
    assert "no drops found" not in done.stderr
    assert done.stderr.startswith("fashion-search materialize: error: cannot read s3://shop-landing/shop/drops/") and "Traceback" not in done.stderr
    assert "testing" not in done.stderr  # the secret (and key) never printed


# --- 403: moto's server with IAM auth on (its own process: moto's auth switch is process-wide) ---

IAM_BUCKET = "iam-landing"
IAM_DROP = "2026-11-22"


def _wait_until_listening(port: int, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            assert time.monotonic() < deadline, f"moto's server did not listen on port {port}"
            time.sleep(0.1)


@pytest.fixture(scope="module")
def iam_s3():
    """A moto S3+IAM server enforcing IAM auth, with a landing bucket holding one complete drop.

    Yields {endpoint_url, region, reader: (key, secret) allowed to list and read the bucket,
    no_list: (key, secret) allowed only GetObject}. Auth is switched on after the setup, through
    moto's /moto-api/reset-auth.
    """
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        _wait_until_listening(port)
        endpoint = f"http://127.0.0.1:{port}"
        admin = {"endpoint_url": endpoint, "region_name": "us-east-1",
                 "aws_access_key_id": "admin", "aws_secret_access_key": "admin"}
        s3 = boto3.client("s3", **admin)
        s3.create_bucket(Bucket=IAM_BUCKET)
        for name, body in (("captions.csv", b"image_path#description\n"), ("_SUCCESS", b"")):
            s3.put_object(Bucket=IAM_BUCKET, Key=f"shop/drops/{IAM_DROP}/{name}", Body=body)
        iam = boto3.client("iam", **admin)
        users = {
            "reader": ["s3:ListBucket", "s3:GetObject"],
            "no_list": ["s3:GetObject"],
        }
        keys = {}
        for user, actions in users.items():
            iam.create_user(UserName=user)
            policy = {"Version": "2012-10-17", "Statement": [{
                "Effect": "Allow", "Action": actions,
                "Resource": [f"arn:aws:s3:::{IAM_BUCKET}", f"arn:aws:s3:::{IAM_BUCKET}/*"],
            }]}
            iam.put_user_policy(UserName=user, PolicyName=f"{user}-landing", PolicyDocument=json.dumps(policy))
            key = iam.create_access_key(UserName=user)["AccessKey"]
            keys[user] = (key["AccessKeyId"], key["SecretAccessKey"])
        urllib.request.urlopen(urllib.request.Request(
            f"{endpoint}/moto-api/reset-auth", data=b"0", method="POST", headers={"Content-Type": "text/plain"}
        ))
        yield {"endpoint_url": endpoint, "region": "us-east-1", **keys}
    finally:
        server.terminate()
        server.wait()


def _iam_settings(iam_s3, key: str, secret: str) -> S3Settings:
    return S3Settings(endpoint_url=iam_s3["endpoint_url"], region=iam_s3["region"],
                      access_key_id=key, secret_access_key=secret)


LANDING = f"s3://{IAM_BUCKET}/shop"
DROPS_URI = f"{LANDING}/drops/"


@pytest.mark.s3
def test_a_wrong_secret_or_a_refused_listing_is_a_403_naming_the_uri_not_no_drops(iam_s3):
    key, secret = iam_s3["reader"]
    assert list_drops(LANDING, _iam_settings(iam_s3, key, secret).s3fs_options()) == [IAM_DROP]  # auth works

    wrong_secret = _iam_settings(iam_s3, key, "not-the-secret").s3fs_options()
    with pytest.raises(LandingAccessError) as wrong:
        list_drops(LANDING, wrong_secret)
    no_list_key, no_list_secret = iam_s3["no_list"]
    with pytest.raises(LandingAccessError) as refused:
        list_drops(LANDING, _iam_settings(iam_s3, no_list_key, no_list_secret).s3fs_options())
    for raised in (wrong, refused):
        message = str(raised.value)
        assert message.startswith(f"cannot read {DROPS_URI}: ") and "\n" not in message, message
        assert "not-the-secret" not in message and no_list_secret not in message


@pytest.mark.s3
def test_the_sensor_reports_a_403_in_one_line_naming_the_uri(iam_s3, tmp_path):
    from dagster import DagsterInstance, build_sensor_context
    from dagster_aws.s3 import S3Resource

    from fashion_search_pipeline.defs.resources import CatalogStorage
    from fashion_search_pipeline.defs.sensors import catalog_drop_sensor

    key, _ = iam_s3["reader"]
    storage = CatalogStorage(landing_uri=LANDING, db_uri=str(tmp_path / "lancedb"), s3_endpoint_url=iam_s3["endpoint_url"],
                             s3_region=iam_s3["region"], aws_access_key_id=key, aws_secret_access_key="not-the-secret")
    s3 = S3Resource(endpoint_url=iam_s3["endpoint_url"], region_name=iam_s3["region"], aws_access_key_id=key,
                    aws_secret_access_key="not-the-secret", max_attempts=1)
    with DagsterInstance.ephemeral() as instance:
        context = build_sensor_context(instance=instance, resources={"storage": storage, "s3": s3})
        with pytest.raises(LandingAccessError) as raised:
            catalog_drop_sensor(context)
    message = str(raised.value)
    assert message.startswith(f"cannot read {DROPS_URI}: ClientError: ") and "SignatureDoesNotMatch" in message
    assert "\n" not in message and "not-the-secret" not in message


@pytest.mark.s3
@pytest.mark.slow  # a subprocess CLI run
def test_the_cli_reports_a_403_in_one_line_naming_the_uri(iam_s3, tmp_path):
    key, _ = iam_s3["reader"]
    env = {
        "PATH": "/usr/bin:/bin",
        "FASHION_SEARCH_HOME": str(tmp_path),
        "FASHION_SEARCH_S3_ENDPOINT_URL": iam_s3["endpoint_url"],
        "AWS_REGION": iam_s3["region"],
        "AWS_ACCESS_KEY_ID": key,
        "AWS_SECRET_ACCESS_KEY": "not-the-secret",
    }
    done = subprocess.run(
        [sys.executable, "-m", "fashion_search_pipeline.cli", "materialize", "--landing", LANDING],
        capture_output=True, text=True, env=env, timeout=300,
    )
    assert done.returncode == 1, done.stderr[-3000:]
    assert done.stderr.startswith(f"fashion-search materialize: error: cannot read {DROPS_URI}: "), done.stderr[-3000:]
    assert len(done.stderr.strip().splitlines()) == 1 and "no drops found" not in done.stderr
    assert "not-the-secret" not in done.stderr + done.stdout
