"""One writer at a time per LanceDB table, across threads, processes and machines.

Lance commits are atomic, but two merge-inserts that both find an item_id absent both insert it:
each adds a new fragment and touches none the other read, so neither sees a conflict (Lance
records inserted keys only for an unenforced primary key, and not on every merge path: see
lance-format/lance#4585, #8949, lancedb/lancedb#2463). Without serialisation, two processes
upserting the same 500 new ids duplicated all of them in 7 of 8 trials. So every write to a
table (create, merge-insert, delete, index build) holds that table's lock:

- a local database folder: an flock on `<db>/_locks/<table>.lock` (threads, processes, and
  machines sharing the folder over a filesystem with working flock);
- an s3:// database: a lease object `<db>/_locks/<table>.lease`, taken with a conditional
  PUT (If-None-Match: *), renewed every `ttl/3` with If-Match on its own ETag, released with
  a conditional DELETE. A holder killed with SIGKILL stops renewing; a waiter that sees the
  same ETag unchanged for `ttl` seconds of its own clock takes the lease over with If-Match
  on that ETag, so no clock has to agree with another.

A waiter reports what it waits for every `report_every_s` seconds and gives up after
`timeout_s` with LockTimeoutError, or at once with LockWaitStopped after `stop_waiting()` (the
process got SIGTERM: a wait on a writer thread would otherwise outlive the interrupted step).
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

LOCKS_FOLDER = "_locks"
DEFAULT_TIMEOUT_S = 1_800.0
DEFAULT_TTL_S = 30.0
REPORT_EVERY_S = 5.0
_LOCAL_POLL_S = 0.01
_S3_POLL_S = 0.05


class LockTimeoutError(TimeoutError):
    """A table's write lock was not free within the allowed time; the message names its holder."""


class LockWaitStopped(RuntimeError):
    """A wait for a table's write lock was stopped by `stop_waiting` (the process is stopping)."""


_STOP_WAITING = threading.Event()


def stop_waiting(stop: bool = True) -> None:
    """Make every wait for a table lock in this process end with LockWaitStopped (False: waits go on again)."""
    if stop:
        _STOP_WAITING.set()
    else:
        _STOP_WAITING.clear()


@dataclass(frozen=True)
class LockSettings:
    """How long to wait for a table lock, how long an S3 lease lives unrenewed, how often to report."""

    timeout_s: float = DEFAULT_TIMEOUT_S
    ttl_s: float = DEFAULT_TTL_S
    report_every_s: float = REPORT_EVERY_S


def _owner() -> dict:
    return {"owner": uuid.uuid4().hex, "host": socket.gethostname(), "pid": os.getpid(), "since": time.time()}


def _holder_text(holder: dict | None) -> str:
    if not holder:
        return "another writer"
    since = time.strftime("%H:%M:%S", time.localtime(holder.get("since", 0)))
    return f"pid {holder.get('pid')} on {holder.get('host')} (since {since})"


class _Reporter:
    """Calls `report` at most every `every_s` seconds while a wait goes on."""

    def __init__(self, report: Callable[[str], None], every_s: float):
        self._report, self._every_s = report, every_s
        self._started = self._last = time.monotonic()

    @property
    def waited(self) -> float:
        return time.monotonic() - self._started

    def tick(self, message: str) -> None:
        now = time.monotonic()
        if now - self._last >= self._every_s:
            self._last = now
            self._report(f"{message}; waiting {self.waited:.0f}s so far")


@contextmanager
def table_lock(
    db_uri: str,
    name: str,
    storage_options: dict | None = None,
    *,
    settings: LockSettings = LockSettings(),
    report: Callable[[str], None] = lambda message: None,
) -> Iterator[None]:
    """Hold the write lock of table `name` of the database at `db_uri` (folder or s3://)."""
    uri = str(db_uri)
    if uri.startswith("s3://"):
        lease = S3Lease(_s3_client(storage_options or {}), *_lease_location(uri, name), settings=settings)
        with lease.held(report):
            yield
    elif "://" in uri and not uri.startswith("file://"):
        raise ValueError(f"no cross-process table lock for {uri}: use a local folder or s3://")
    else:
        folder = Path(uri.removeprefix("file://")) / LOCKS_FOLDER
        with _folder_lock(folder / f"{name}.lock", name, settings, report):
            yield


@contextmanager
def _folder_lock(path: Path, name: str, settings: LockSettings, report: Callable[[str], None]) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as handle:
        reporter = _Reporter(report, settings.report_every_s)
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                holder = _read_json(path)
                if _STOP_WAITING.is_set():
                    raise LockWaitStopped(
                        f"table {name!r}: stopped waiting for its write lock {path}, held by {_holder_text(holder)}"
                    ) from None
                if reporter.waited >= settings.timeout_s:
                    raise LockTimeoutError(
                        f"table {name!r}: its write lock {path} is held by {_holder_text(holder)}; "
                        f"gave up after {settings.timeout_s:.0f}s"
                    ) from None
                reporter.tick(f"table {name!r}: waiting for its write lock, held by {_holder_text(holder)}")
                time.sleep(_LOCAL_POLL_S)
        try:
            handle.seek(0)
            handle.truncate()
            handle.write(json.dumps(_owner()))
            handle.flush()
            yield
        finally:
            handle.seek(0)
            handle.truncate()
            handle.flush()
            fcntl.flock(handle, fcntl.LOCK_UN)


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text() or "null")
    except (OSError, ValueError):
        return None


def _lease_location(db_uri: str, name: str) -> tuple[str, str]:
    bucket, _, prefix = db_uri.removeprefix("s3://").partition("/")
    key = "/".join(part for part in (prefix.strip("/"), LOCKS_FOLDER, f"{name}.lease") if part)
    return bucket, key


def _s3_client(options: dict):
    """A boto3 S3 client from LanceDB (object_store) storage options."""
    import boto3
    from botocore.config import Config

    return boto3.client(
        "s3",
        endpoint_url=options.get("aws_endpoint") or None,
        region_name=options.get("aws_region") or None,
        aws_access_key_id=options.get("aws_access_key_id") or None,
        aws_secret_access_key=options.get("aws_secret_access_key") or None,
        aws_session_token=options.get("aws_session_token") or None,
        config=Config(retries={"mode": "standard", "max_attempts": 3}, connect_timeout=10, read_timeout=30),
    )


def _error_code(error: Exception) -> str:
    return str(getattr(error, "response", {}).get("Error", {}).get("Code", ""))


# 412: the condition failed; 409: a concurrent conditional write to the same key is in flight.
_LOST_RACE = {"PreconditionFailed", "412", "ConditionalRequestConflict", "409"}


class S3Lease:
    """A lease object on S3 that at most one holder owns (see the module docstring)."""

    def __init__(self, client, bucket: str, key: str, *, settings: LockSettings = LockSettings()):
        self.client, self.bucket, self.key, self.settings = client, bucket, key, settings
        self._etag: str | None = None
        self._lock = threading.Lock()
        self.lost = threading.Event()

    @property
    def uri(self) -> str:
        return f"s3://{self.bucket}/{self.key}"

    @contextmanager
    def held(self, report: Callable[[str], None] = lambda message: None) -> Iterator[None]:
        """Acquire the lease, keep renewing it while the block runs, then release it."""
        try:
            self.acquire(report)
        except BaseException:  # e.g. a SIGTERM just after the conditional PUT won: leave no lease behind
            self.release()
            raise
        stop = threading.Event()
        renewer = threading.Thread(target=self._renew_until, args=(stop,), name="lease-renew", daemon=True)
        renewer.start()
        try:
            yield
        finally:
            stop.set()
            renewer.join()
            self.release()

    def acquire(self, report: Callable[[str], None] = lambda message: None) -> None:
        """Take the lease, waiting for its holder or taking over a lease nobody renews."""
        from botocore.exceptions import ClientError

        reporter = _Reporter(report, self.settings.report_every_s)
        seen: tuple[str, float] | None = None  # (ETag of the holder's lease, when first seen unchanged)
        while True:
            try:
                self._put(IfNoneMatch="*")
                return
            except ClientError as error:
                if _error_code(error) not in _LOST_RACE:
                    raise
            holder, etag = self._current()
            now = time.monotonic()
            if etag is None:
                continue  # released in between: try again at once
            if seen is None or seen[0] != etag:
                seen = (etag, now)
            elif now - seen[1] >= self.settings.ttl_s:
                try:
                    self._put(IfMatch=etag)  # the holder stopped renewing: take over its lease
                    report(f"{self.uri}: took over a lease {_holder_text(holder)} left unrenewed")
                    return
                except ClientError as error:
                    if _error_code(error) not in _LOST_RACE | {"NoSuchKey", "404"}:
                        raise
                seen = None
            if _STOP_WAITING.is_set():
                raise LockWaitStopped(f"{self.uri}: stopped waiting for the lease, held by {_holder_text(holder)}")
            if reporter.waited >= self.settings.timeout_s:
                raise LockTimeoutError(
                    f"{self.uri} is held by {_holder_text(holder)}; gave up after {self.settings.timeout_s:.0f}s"
                )
            reporter.tick(f"{self.uri}: waiting for the table's write lease, held by {_holder_text(holder)}")
            time.sleep(_S3_POLL_S)

    def release(self) -> None:
        """Delete the lease if it is still ours (a taken-over lease is left to its new holder)."""
        from botocore.exceptions import ClientError

        with self._lock:
            etag, self._etag = self._etag, None
        if etag is None:
            return
        try:
            self.client.delete_object(Bucket=self.bucket, Key=self.key, IfMatch=etag)
        except ClientError as error:
            if _error_code(error) not in _LOST_RACE | {"NoSuchKey", "404"}:
                raise

    def _put(self, **condition) -> None:
        body = json.dumps({**_owner(), "ttl_s": self.settings.ttl_s}).encode()
        response = self.client.put_object(Bucket=self.bucket, Key=self.key, Body=body, **condition)
        with self._lock:
            self._etag = response["ETag"]

    def _current(self) -> tuple[dict | None, str | None]:
        from botocore.exceptions import ClientError

        try:
            response = self.client.get_object(Bucket=self.bucket, Key=self.key)
        except ClientError as error:
            if _error_code(error) in {"NoSuchKey", "404"}:
                return None, None
            raise
        try:
            holder = json.loads(response["Body"].read())
        except ValueError:
            holder = None
        return holder, response["ETag"]

    def _renew_until(self, stop: threading.Event) -> None:
        from botocore.exceptions import BotoCoreError, ClientError

        while not stop.wait(self.settings.ttl_s / 3):
            with self._lock:
                etag = self._etag
            if etag is None:
                return
            try:
                self._put(IfMatch=etag)
            except ClientError as error:
                if _error_code(error) in _LOST_RACE | {"NoSuchKey", "404"}:
                    self.lost.set()  # another writer judged this holder dead and took over
                    return
            except BotoCoreError:
                continue  # a network blip: the next renewal may get through within the TTL
