"""The embedding step's encode stage on a Ray cluster, through Ray Data.

The plan (what to embed, skip, remove) and the LanceDB writes stay in embedding_sync; only the
rows to embed go to Ray. Image bytes are read from the landing area (folder or S3, the step's own
settings) and decoded and preprocessed in CPU tasks; the model runs in an actor pool (one model
load per actor, `actor_gpus` each when the cluster has GPUs). Vectors stream back to the step,
which merge-inserts them in large commits exactly as the local engine does.

Every row comes back once: positions already seen (a retried task after an actor died) are
dropped, and a pipeline that returns fewer vectors than it was given raises.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import polars as pl

from fashion_search_pipeline import columns as C
from fashion_search_pipeline import config
from fashion_search_pipeline.catalog.storage import filesystem_for
from fashion_search_pipeline.models.registry import ModelSpec

if TYPE_CHECKING:
    from fashion_search_pipeline.models.loading import LoadedClip

# A reachable head answers a TCP connect in milliseconds; ray.init itself retries for about a
# minute before giving up on an address, so the address is probed first.
CONNECT_TIMEOUT_S = 3.0
POSITION = "position"
_ENCODED = "vector"
_PIXELS = "pixels"


class RayEngineError(RuntimeError):
    """The Ray cluster cannot be reached, or the pipeline lost rows; the message says what to do."""


class ImageReadError(RuntimeError):
    """A Ray worker could not read an item's image from storage."""


@dataclass(frozen=True)
class RaySettings:
    """Where the cluster is and how the encode stage uses it.

    address: a head's `host:port` (or `ray://host:port` for Ray Client, or "auto"); None connects
    to the cluster `ray start` left on this machine, else starts one inside this process.
    actors: model actors in the pool (each loads the model once). actor_cpus / actor_gpus: Ray
    resources per actor (torch gets int(actor_cpus) threads). decode_cpus: per decode task.
    batch_size: images or texts per actor call (None: the model's batch size).
    """

    address: str | None = None
    actors: int = 1
    actor_cpus: float = 1.0
    actor_gpus: float = 0.0
    decode_cpus: float = 1.0
    batch_size: int | None = None
    read_threads: int = 8


@dataclass(frozen=True)
class RayEngine:
    """Encodes a sync's rows on Ray; plugs into embedding_sync.sync_embeddings as its `engine`."""

    settings: RaySettings = RaySettings()
    s3: config.S3Settings = field(default_factory=config.S3Settings)

    def encode(
        self, items: pl.DataFrame, clip: LoadedClip, modality: str, batch_size: int
    ) -> Iterator[tuple[pl.DataFrame, np.ndarray]]:
        """Yield (rows, vectors) for every row of `items` exactly once, in no particular order."""
        if items.is_empty():
            return
        connect(self.settings.address)
        size = self.settings.batch_size or batch_size
        seen = np.zeros(items.height, dtype=bool)
        dataset = self._dataset(items, clip, modality, size)
        for batch in dataset.iter_batches(batch_size=None, batch_format="numpy", prefetch_batches=2):
            positions, first = np.unique(batch[POSITION], return_index=True)
            fresh = ~seen[positions]
            seen[positions[fresh]] = True
            if fresh.any():
                yield items[positions[fresh].tolist()], np.asarray(batch[_ENCODED])[first[fresh]]
        if not seen.all():
            raise RayEngineError(f"the Ray pipeline returned {int(seen.sum())} of {items.height} vectors")

    def _dataset(self, items: pl.DataFrame, clip: LoadedClip, modality: str, size: int):
        import pyarrow as pa
        import ray.data

        ray.data.DataContext.get_current().enable_progress_bars = False
        if modality == "image":
            columns = {C.ITEM_ID: items[C.ITEM_ID].to_arrow(), C.IMAGE_URI: items[C.IMAGE_URI].to_arrow()}
        elif modality == "text":
            columns = {C.DESCRIPTION: items[C.DESCRIPTION].to_arrow()}
        else:
            raise ValueError(f"unknown modality {modality!r}: expected one of {C.MODALITIES}")
        table = pa.table({POSITION: np.arange(items.height), **columns})
        dataset = ray.data.from_arrow([table.slice(start, size) for start in range(0, table.num_rows, size)])
        if modality == "image":
            dataset = dataset.map_batches(
                decode_images,
                fn_kwargs={"pixels": PixelsOf.for_clip(clip), "s3": self.s3, "threads": self.settings.read_threads},
                batch_size=size,
                batch_format="numpy",
                num_cpus=self.settings.decode_cpus,
            )
        return dataset.map_batches(
            ClipEncoder,
            fn_constructor_kwargs={"spec": clip.spec, "version": clip.version, "modality": modality},
            batch_size=size,
            batch_format="numpy",
            compute=ray.data.ActorPoolStrategy(size=self.settings.actors),
            num_cpus=self.settings.actor_cpus,
            num_gpus=self.settings.actor_gpus or None,
        )


def connect(address: str | None) -> None:
    """Join the Ray cluster at `address` (see RaySettings), once per process.

    An address that does not answer fails within seconds, naming it, before Ray's own minute of retries.
    """
    import ray

    if ray.is_initialized():
        return
    if address and address not in ("auto", "local"):
        _probe(address)
    ray.init(address=address, logging_level="WARNING", configure_logging=True, log_to_driver=False)


def _probe(address: str) -> None:
    host, _, port = address.removeprefix("ray://").rpartition(":")
    if not host or not port.isdigit():
        raise RayEngineError(f"Ray address {address!r} is not of the form host:port or ray://host:port")
    try:
        socket.create_connection((host, int(port)), timeout=CONNECT_TIMEOUT_S).close()
    except OSError as exc:
        raise RayEngineError(
            f"cannot reach the Ray cluster at {address} ({exc}). Start a head there (`ray start --head`, "
            "see docs/scale-out.md), fix RAY_ADDRESS, or set the embedding engine to local."
        ) from exc


@dataclass(frozen=True)
class PixelsOf:
    """The model's image preprocessing, without the model: encoded bytes in, a pixel array out."""

    preprocess: object
    draft_size: int

    @classmethod
    def for_clip(cls, clip: LoadedClip) -> PixelsOf:
        """The preprocessing `clip` applies to an image (JPEGs drafted to its input size, as locally)."""
        size = clip.model.visual.preprocess_cfg["size"]
        return cls(clip.preprocess, int(size if isinstance(size, int) else max(size)))

    def __call__(self, item_id: str, image: bytes) -> np.ndarray:
        """The model input for one image; ValueError naming the item when it does not decode."""
        from fashion_search_pipeline.models import encoders

        try:
            # encoders' own decode path (draft, RGB on white, preprocess), so vectors match local ones.
            return encoders.preprocess_image(self, image, self.draft_size).numpy()
        except encoders.DECODE_ERRORS as exc:
            raise ValueError(f"image of item {item_id!r} cannot be decoded: {exc}") from exc


def read_image(item_id: str, uri: str, s3: config.S3Settings) -> bytes:
    """The bytes of one item's image; ImageReadError naming the item and the URI."""
    try:
        fs, path = filesystem_for(uri, config.storage_options_for(uri, s3))
        return fs.cat_file(path)
    except Exception as exc:  # fsspec backends raise OSError, botocore and aiohttp errors alike
        raise ImageReadError(f"cannot read the image of item {item_id!r} at {uri}: {exc}") from exc


def decode_images(batch: dict[str, np.ndarray], *, pixels: PixelsOf, s3: config.S3Settings, threads: int) -> dict:
    """Ray Data CPU stage: read each image (on threads, hiding storage latency) and preprocess it."""
    ids, uris = batch[C.ITEM_ID].tolist(), batch[C.IMAGE_URI].tolist()
    with ThreadPoolExecutor(max_workers=max(1, min(threads, len(uris)))) as pool:
        images = list(pool.map(read_image, ids, uris, [s3] * len(uris)))
        arrays = list(pool.map(pixels, ids, images))
    return {POSITION: batch[POSITION], _PIXELS: np.stack(arrays)}


class ClipEncoder:
    """Ray Data actor: loads the model once, then encodes pixel or text batches into unit vectors."""

    def __init__(self, spec: ModelSpec, version: str, modality: str):
        from fashion_search_pipeline.models.loading import load_clip

        self.clip = load_clip(spec)
        self.modality = modality
        if self.clip.version != version:
            raise RayEngineError(
                f"a Ray worker loaded model {spec.name!r} as version {self.clip.version}, but the step "
                f"planned {version}: every node must see the same checkpoint ({spec.pretrained})"
            )

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """{position, vector} for one batch."""
        import torch

        from fashion_search_pipeline.models import encoders

        if self.modality == "text":
            texts = batch[C.DESCRIPTION].tolist()
            vectors = encoders.encode_texts(self.clip, texts, batch_size=len(texts))
        else:
            pixels = torch.from_numpy(np.ascontiguousarray(batch[_PIXELS]))
            vectors = encoders.encode_pixels(self.clip, pixels)
        return {POSITION: batch[POSITION], _ENCODED: vectors}
