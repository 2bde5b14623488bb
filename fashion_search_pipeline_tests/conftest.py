"""Fixtures shared by every test package."""

from __future__ import annotations

import pytest
from moto.server import ThreadedMotoServer


@pytest.fixture(scope="session")
def s3_endpoint():
    """A real S3 HTTP endpoint (moto's server) on 127.0.0.1 at a free port.

    Yields {endpoint_url, region, key, secret}. The server keeps its state for
    the whole session: give every test its own bucket.
    """
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield {
            "endpoint_url": f"http://{host}:{port}",
            "region": "us-east-1",
            "key": "testing",
            "secret": "testing",
        }
    finally:
        server.stop()
