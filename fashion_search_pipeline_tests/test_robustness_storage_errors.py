"""Probe: storage faults (no such bucket, wrong endpoint, a connection refused) say what and where.

Before: the CLI said "no drops found under s3://…/drops/" for an unreadable bucket, connection
errors escaped as raw tracebacks without the drop's name, and LanceDB's errors reached users raw.
"""

from __future__ import annotations

import socket
import subprocess
import sys

import boto3
import pytest

from fashion_search_pipeline.catalog.captions import CaptionsFileError, read_captions
from fashion_search_pipeline.catalog.discovery import S3DropListing
from fashion_search_pipeline.catalog.drops import DropLocation, LandingAccessError, list_drops
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
    with pytest.raises(LandingAccessError, match=r"drop '2026-11-22'.*_SUCCESS"):
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
