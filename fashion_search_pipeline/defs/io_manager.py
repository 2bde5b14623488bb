"""An IO manager that keeps polars DataFrames as parquet files, locally or on S3.

Layout: <base_uri>/<asset key>/<partition key>.parquet (unpartitioned: <asset key>.parquet).
An unpartitioned asset that reads a partitioned one gets a dict {partition key: DataFrame}
of the partitions materialized so far, whatever their number. A partition Dagster records as
materialized whose file is gone (lost, or FASHION_SEARCH_ASSETS repointed) fails the read with
MissingAssetFileError naming asset, partition and path: skipping it would shrink catalog_items
and make the embedding step delete that drop's rows.
"""

from __future__ import annotations

import polars as pl
from dagster import ConfigurableIOManager, InputContext, MetadataValue, OutputContext

from fashion_search_pipeline.catalog.storage import filesystem_for, join_uri
from fashion_search_pipeline.defs.resources import CatalogStorage


class MissingAssetFileError(FileNotFoundError):
    """An asset (partition) whose stored value is not where the IO manager keeps it."""


class ParquetIOManager(ConfigurableIOManager):
    """Stores each asset (partition) as one parquet file under base_uri, with `storage`'s S3 access
    (endpoint, region, key, secret and session token)."""

    base_uri: str
    storage: CatalogStorage

    def storage_options(self) -> dict:
        """fsspec storage options for base_uri."""
        return self.storage.options_for(self.base_uri)

    def _filesystem(self):
        return filesystem_for(self.base_uri, self.storage_options())

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
        asset = context.asset_key.to_user_string()
        if not context.has_asset_partitions:
            uri = self._uri(path, None)
            frame = self._read(uri)
            if frame is None:
                raise MissingAssetFileError(f"{asset}: no stored value at {uri}; materialize {asset} first")
            return frame
        keys = [str(key) for key in context.asset_partition_keys]
        if context.has_partition_key and len(keys) == 1:
            uri = self._uri(path, keys[0])
            frame = self._read(uri)
            if frame is None:
                raise MissingAssetFileError(
                    f"{asset} partition {keys[0]!r}: no stored value at {uri}; materialize that partition first"
                )
            return frame
        materialized = context.instance.get_materialized_partitions(context.asset_key)
        frames = {key: self._read(self._uri(path, key)) for key in keys}
        lost = sorted(key for key, frame in frames.items() if frame is None and key in materialized)
        if lost:
            raise MissingAssetFileError(
                f"{asset}: Dagster records partition(s) {lost} as materialized, but "
                f"{', '.join(self._uri(path, key) for key in lost[:5])} do not exist (a lost file, or "
                "FASHION_SEARCH_ASSETS now points elsewhere); restore them or re-materialize those partitions"
            )
        return {key: frame for key, frame in frames.items() if frame is not None}
