"""An IO manager that keeps polars DataFrames as parquet files, locally or on S3.

Layout: <base_uri>/<asset key>/<partition key>.parquet (unpartitioned: <asset key>.parquet).
An unpartitioned asset that reads a partitioned one gets a dict {partition key: DataFrame}
of the partitions that exist, whatever their number.
"""

from __future__ import annotations

import polars as pl
from dagster import ConfigurableIOManager, InputContext, MetadataValue, OutputContext

from fashion_search_pipeline import config
from fashion_search_pipeline.catalog.storage import filesystem_for, join_uri


class ParquetIOManager(ConfigurableIOManager):
    """Stores each asset (partition) as one parquet file under base_uri."""

    base_uri: str
    s3_endpoint_url: str | None = None
    s3_region: str | None = None
    aws_access_key_id: str | None = None
    aws_secret_access_key: str | None = None

    def _filesystem(self):
        s3 = config.S3Settings(
            endpoint_url=self.s3_endpoint_url,
            region=self.s3_region,
            access_key_id=self.aws_access_key_id,
            secret_access_key=self.aws_secret_access_key,
        )
        return filesystem_for(self.base_uri, config.storage_options_for(self.base_uri, s3))

    def _uri(self, asset_path: list[str], partition_key: str | None) -> str:
        if partition_key is None:
            return join_uri(self.base_uri, *asset_path[:-1], f"{asset_path[-1]}.parquet")
        return join_uri(self.base_uri, *asset_path, f"{partition_key}.parquet")

    def _write(self, uri: str, frame: pl.DataFrame) -> None:
        fs, _ = self._filesystem()
        _, path = filesystem_for(uri, {})
        fs.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
        with fs.open(path, "wb") as handle:
            frame.write_parquet(handle)

    def _read(self, uri: str) -> pl.DataFrame | None:
        fs, _ = self._filesystem()
        _, path = filesystem_for(uri, {})
        if not fs.exists(path):
            return None
        with fs.open(path, "rb") as handle:
            return pl.read_parquet(handle)

    def handle_output(self, context: OutputContext, obj: pl.DataFrame) -> None:
        """Write the asset's DataFrame as parquet."""
        if obj is None:
            return
        if not isinstance(obj, pl.DataFrame):
            raise TypeError(f"{context.asset_key.to_user_string()} returned {type(obj).__name__}, expected a polars DataFrame")
        partition = context.partition_key if context.has_asset_partitions else None
        uri = self._uri(context.asset_key.path, partition)
        self._write(uri, obj)
        context.add_output_metadata({"path": MetadataValue.path(uri)})

    def load_input(self, context: InputContext):
        """One DataFrame for the same partition; a dict of all present partitions for a fan-in."""
        path = context.asset_key.path
        if not context.has_asset_partitions:
            frame = self._read(self._uri(path, None))
            if frame is None:
                raise FileNotFoundError(f"{context.asset_key.to_user_string()} has not been materialized yet")
            return frame
        keys = [str(key) for key in context.asset_partition_keys]
        if context.has_partition_key and len(keys) == 1:
            frame = self._read(self._uri(path, keys[0]))
            if frame is None:
                raise FileNotFoundError(
                    f"{context.asset_key.to_user_string()} partition {keys[0]!r} has not been materialized yet"
                )
            return frame
        frames = {key: self._read(self._uri(path, key)) for key in keys}
        return {key: frame for key, frame in frames.items() if frame is not None}
