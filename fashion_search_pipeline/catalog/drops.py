"""The layout of a catalog drop in the landing area: <landing>/drops/<drop_id>/..."""

from __future__ import annotations

import logging
import re
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

    @property
    def marker_uri(self) -> str:
        return join_uri(self.uri, MARKER_FILE)


def list_drops(landing_uri: str, storage_options: dict | None = None, *, require_marker: bool = True) -> list[str]:
    """Sorted ids of the drops under <landing_uri>/drops that have a captions file.

    With `require_marker`, only drops whose _SUCCESS marker has landed (the
    drop is complete) count. Folders whose names are not valid drop ids are
    skipped with a warning.
    """
    drops_uri = join_uri(landing_uri, DROPS_FOLDER)
    fs, root = filesystem_for(drops_uri, storage_options)
    try:
        try:
            files = fs.find(root, maxdepth=2)
        except FileNotFoundError:
            files = []
        if not files and "://" in drops_uri:
            _check_bucket(fs, root)  # s3fs's find answers "nothing" for a missing bucket or a refused listing
    except Exception as error:  # botocore and aiohttp errors are not OSErrors
        raise landing_error(drops_uri + "/", error) from error
    present: dict[str, set[str]] = {}
    for path in files:
        relative = path[len(root):].strip("/").split("/")
        if len(relative) == 2:
            present.setdefault(relative[0], set()).add(relative[1])
    required = {CAPTIONS_FILE, MARKER_FILE} if require_marker else {CAPTIONS_FILE}
    drops = []
    for drop_id, names in present.items():
        if not required <= names:
            continue
        try:
            drops.append(validate_drop_id(drop_id))
        except InvalidDropIdError as error:
            log.warning("skipping drop folder under %s: %s", landing_uri, error)
    return sorted(drops)


def _check_bucket(fs, root: str) -> None:
    """Raise when the bucket holding `root` does not exist or refuses access."""
    bucket = root.split("/", 1)[0]
    if hasattr(fs, "call_s3"):
        fs.call_s3("head_bucket", Bucket=bucket)
    elif not fs.exists(bucket):
        raise FileNotFoundError(f"no bucket {bucket!r}")
