from __future__ import annotations

from fsspec.implementations.local import LocalFileSystem
from s3fs import S3FileSystem

from fashion_search_pipeline.catalog.storage import filesystem_for, join_uri


def test_local_folder_resolves_to_an_absolute_path_without_trailing_slash(tmp_path):
    fs, path = filesystem_for(f"{tmp_path}/landing/")
    assert isinstance(fs, LocalFileSystem)
    assert path == f"{tmp_path.as_posix()}/landing"


def test_file_uri_and_plain_path_name_the_same_place(tmp_path):
    (tmp_path / "a.txt").write_text("hello")
    fs, path = filesystem_for(f"file://{tmp_path}/a.txt")
    assert fs.cat_file(path) == b"hello"
    assert filesystem_for(str(tmp_path / "a.txt"))[1] == path


def test_s3_uri_uses_storage_options_and_never_caches_listings():
    options = {"key": "k", "secret": "s", "client_kwargs": {"endpoint_url": "http://127.0.0.1:9"}}
    fs, path = filesystem_for("s3://bucket/landing/", options)
    assert isinstance(fs, S3FileSystem)
    assert path == "bucket/landing"
    assert fs.client_kwargs["endpoint_url"] == "http://127.0.0.1:9"
    assert fs.dircache.use_listings_cache is False
    assert "use_listings_cache" not in options  # the caller's dict is left alone


def test_join_uri_uses_single_slashes():
    assert join_uri("s3://bucket/landing/", "drops", "/2026-11-01/") == "s3://bucket/landing/drops/2026-11-01"
    assert join_uri("/data/landing", "drops", "", "x.csv") == "/data/landing/drops/x.csv"
    assert join_uri("s3://bucket") == "s3://bucket"
