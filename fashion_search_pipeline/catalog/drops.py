"""The layout of a catalog drop in the landing area: <landing>/drops/<drop_id>/..."""

from __future__ import annotations

import logging
import os
import re
from abc import ABC, abstractmethod
from dataclasses import dataclass

from .storage import filesystem_for, join_uri

CAPTIONS_FILE = "captions.csv"
DELETIONS_FILE = "deletions.csv"
MARKER_FILE = "_SUCCESS"
DROPS_FOLDER = "drops"
CONTROL_FILES = frozenset({CAPTIONS_FILE, DELETIONS_FILE, MARKER_FILE})

MAX_DROP_ID_LENGTH = 64
_DROP_ID = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9_.-]*")

log = logging.getLogger(__name__)


class InvalidDropIdError(ValueError):
    """A drop id that cannot name a drop (and a Dagster partition)."""


class LandingAccessError(OSError):
    """The landing area cannot be read (403, no such bucket, wrong endpoint, timeout); names the URI."""


def landing_error(uri: str, error: BaseException, drop_id: str | None = None) -> LandingAccessError:
    """One clear message for a storage error at `uri` (of drop `drop_id`), with a hint at the usual causes."""
    what = f"drop {drop_id!r}: " if drop_id else ""
    reason = str(error).strip() or type(error).__name__
    hint = "check the bucket name, FASHION_SEARCH_S3_ENDPOINT_URL, the AWS credentials and the network"
    return LandingAccessError(f"{what}cannot read {uri}: {type(error).__name__}: {reason} ({hint})")


def validate_drop_id(drop_id: str) -> str:
    """Return `drop_id` unchanged if it is a valid drop id, else raise InvalidDropIdError.

    Valid: 1-64 letters, digits, '-', '_' or '.', not starting with '.'.
    """
    if not isinstance(drop_id, str) or not _DROP_ID.fullmatch(drop_id):
        raise InvalidDropIdError(
            f"invalid drop id {drop_id!r}: use letters, digits, '-', '_' and '.', not starting with '.'"
        )
    if len(drop_id) > MAX_DROP_ID_LENGTH:
        raise InvalidDropIdError(
            f"invalid drop id {drop_id!r}: {len(drop_id)} characters, at most {MAX_DROP_ID_LENGTH} allowed"
        )
    return drop_id


@dataclass(frozen=True)
class DropLocation:
    """Where one drop lives: <landing_uri>/drops/<drop_id>."""

    landing_uri: str
    drop_id: str

    def __post_init__(self) -> None:
        validate_drop_id(self.drop_id)

    @property
    def uri(self) -> str:
        return join_uri(self.landing_uri, DROPS_FOLDER, self.drop_id)

    @property
    def captions_uri(self) -> str:
        return join_uri(self.uri, CAPTIONS_FILE)

    @property
    def deletions_uri(self) -> str:
        return join_uri(self.uri, DELETIONS_FILE)


class DropListing(ABC):
    """The drop folders of a landing area: the one listing the CLI, the sensor and the schedule use.

    Subclasses list folder names and the files directly in a drop's folder; completeness (the
    _SUCCESS marker) and `list_drops` follow from those two.
    """

    @abstractmethod
    def drop_ids_after(self, after: str | None = None) -> list[str]:
        """Drop folder names greater than `after` (all when None), sorted."""

    @abstractmethod
    def files(self, drop_id: str) -> set[str]:
        """Names of the files directly in the drop's folder (captions.csv, _SUCCESS, ...)."""

    def is_complete(self, drop_id: str) -> bool:
        """Whether the drop's _SUCCESS marker exists."""
        return MARKER_FILE in self.files(drop_id)


class FolderDropListing(DropListing):
    """Drops in a local landing folder."""

    def __init__(self, landing: str):
        self.drops_dir = os.path.join(landing.removeprefix("file://"), DROPS_FOLDER)

    def drop_ids_after(self, after: str | None = None) -> list[str]:
        try:
            with os.scandir(self.drops_dir) as entries:
                names = [e.name for e in entries if e.is_dir() and (after is None or e.name > after)]
        except FileNotFoundError:
            return []
        except OSError as error:
            raise landing_error(self.drops_dir + "/", error) from error
        return sorted(names)

    def files(self, drop_id: str) -> set[str]:
        try:
            with os.scandir(os.path.join(self.drops_dir, drop_id)) as entries:
                return {e.name for e in entries if e.is_file()}
        except FileNotFoundError:
            return set()
        except OSError as error:
            raise landing_error(os.path.join(self.drops_dir, drop_id), error, drop_id) from error


class S3DropListing(DropListing):
    """Drops under s3://bucket/prefix/drops/, listed with delimited ListObjectsV2 calls.

    `client` is anything with boto3's `list_objects_v2` (a boto3 client, e.g. dagster-aws
    S3Resource's, or an s3fs filesystem through `S3fsListClient`). A tick lists only the drops after
    the high-water mark (StartAfter). Every error (403, no such bucket, endpoint, timeout) raises
    LandingAccessError naming the URI: an unreadable landing never reads as "no drops".
    """

    def __init__(self, client, landing_uri: str):
        bucket, _, prefix = landing_uri.removeprefix("s3://").partition("/")
        self.client = client
        self.bucket = bucket
        self.drops_prefix = f"{prefix.strip('/')}/{DROPS_FOLDER}/".lstrip("/")

    def drop_ids_after(self, after: str | None = None) -> list[str]:
        # Every key of drop `after` sorts before `<prefix>drops/<after>/` + U+10FFFF.
        start_after = f"{self.drops_prefix}{after}/\U0010ffff" if after else ""
        uri = f"s3://{self.bucket}/{self.drops_prefix}"
        pages = self._pages(uri, None, Prefix=self.drops_prefix, StartAfter=start_after)
        names = [entry["Prefix"][len(self.drops_prefix) :].rstrip("/") for page in pages
                 for entry in page.get("CommonPrefixes", [])]
        return sorted(name for name in names if after is None or name > after)

    def files(self, drop_id: str) -> set[str]:
        prefix = f"{self.drops_prefix}{drop_id}/"
        pages = self._pages(f"s3://{self.bucket}/{prefix}", drop_id, Prefix=prefix)
        return {obj["Key"][len(prefix) :] for page in pages for obj in page.get("Contents", [])}

    def _pages(self, uri: str, drop_id: str | None, **request) -> list[dict]:
        """Every page of one delimited listing; any storage error becomes LandingAccessError."""
        pages, token = [], None
        try:
            while True:
                page = self.client.list_objects_v2(
                    Bucket=self.bucket, Delimiter="/", **request, **({"ContinuationToken": token} if token else {})
                )
                pages.append(page)
                token = page.get("NextContinuationToken")
                if not page.get("IsTruncated") or not token:
                    return pages
        except Exception as error:  # botocore and aiohttp errors are not all OSErrors
            raise landing_error(uri, error, drop_id) from error


class S3fsListClient:
    """boto3's `list_objects_v2` through an s3fs filesystem: its credentials, endpoint and retries."""

    def __init__(self, fs):
        self._fs = fs

    def list_objects_v2(self, **request) -> dict:
        return self._fs.call_s3("list_objects_v2", **request)


def drop_listing(landing_uri: str, s3_client=None, storage_options: dict | None = None) -> DropListing:
    """The listing of a landing URI: a local folder, or s3:// through `s3_client` (boto3) or else
    s3fs with fsspec `storage_options`."""
    if landing_uri.startswith("s3://"):
        if s3_client is None:
            fs, _ = filesystem_for(landing_uri, storage_options)
            s3_client = S3fsListClient(fs)
        return S3DropListing(s3_client, landing_uri)
    if "://" in landing_uri and not landing_uri.startswith("file://"):
        raise ValueError(f"landing {landing_uri}: use a local folder or an s3:// URI")
    return FolderDropListing(landing_uri)


def list_drops(landing_uri: str, storage_options: dict | None = None, *, require_marker: bool = True) -> list[str]:
    """Sorted ids of the drops under <landing_uri>/drops that have a captions file.

    With `require_marker`, only drops whose _SUCCESS marker has landed (the drop is complete)
    count. Folders whose names are not valid drop ids are skipped with a warning. Raises
    LandingAccessError, naming the URI, when the landing cannot be read.
    """
    listing = drop_listing(landing_uri, storage_options=storage_options)
    required = {CAPTIONS_FILE, MARKER_FILE} if require_marker else {CAPTIONS_FILE}
    drops = []
    for drop_id in listing.drop_ids_after(None):
        try:
            validate_drop_id(drop_id)
        except InvalidDropIdError as error:
            log.warning("skipping drop folder under %s: %s", landing_uri, error)
            continue
        if required <= listing.files(drop_id):
            drops.append(drop_id)
    return drops
