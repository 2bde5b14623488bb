"""The search service under load: a closed-loop load generator against `fashion-search serve` on 127.0.0.1.

A fixed number of clients, each sending its next query as soon as the last one is answered, for a
fixed time (so it stops by itself); three queries in four are text, one is a base64 photo. Run on
the same tables (and ViT-B-32 checkpoint) as the query benchmark. Measured in one run:
  - queries/s, p50 and p99 with 8 clients, micro-batching on, and the same with it off;
  - one client's p50 through HTTP against CatalogSearch in-process doing the same work
    (a text query ranked PAGE_BLOCK products deep, as the service ranks a first page);
  - the service process's RSS sampled through the run: the last third's peak against the first's.

    python -m benchmarks.service_load --rows 100000 --seconds 10    # on its own, building its tables
"""

from __future__ import annotations

import argparse
import base64
import dataclasses
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import requests
import yaml

from benchmarks.report import Row
from fashion_search_pipeline.models.loading import LoadedClip
from fashion_search_pipeline.search import CatalogSearch
from fashion_search_pipeline.service.app import PAGE_BLOCK

CLIENTS = 8
IMAGE_SHARE = 4  # every 4th query is a photo
TARGET_HTTP_OVERHEAD = 1.15
TARGET_BATCHING_GAIN = 2.0
TARGET_RSS_GROWTH = 1.05
STARTUP_TIMEOUT_S = 300
REPO = Path(__file__).resolve().parents[1]


def run(
    db_uri: str,
    clip: LoadedClip,
    texts: Sequence[str],
    photos: Sequence[bytes],
    work: Path,
    *,
    seconds: float,
    sequential_queries: int,
    log: Callable[[str], None],
) -> dict:
    """Load both service configurations for `seconds` each and time the in-process baseline."""
    registry = _registry_file(clip, work)
    in_process = _in_process_p50(db_uri, clip, texts[:sequential_queries])
    log(f"service load: in-process CatalogSearch.text p50 {in_process['p50_ms']:.1f} ms")
    results = {"in_process": in_process, "clients": CLIENTS, "seconds": seconds, "rows": _rows(db_uri, clip)}
    for name, window_ms in (("batched", None), ("unbatched", 0.0)):
        options = ["--db", db_uri, "--models", str(registry)]
        if window_ms is not None:
            options += ["--batch-window-ms", str(window_ms)]
        with ServiceProcess(work / f"serve-{name}.log", options) as service:
            if name == "batched":
                results["sequential"] = _sequential(service.url, texts[:sequential_queries])
                log(f"service load: one client p50 {results['sequential']['p50_ms']:.1f} ms")
            results[name] = _closed_loop(service, texts, photos, CLIENTS, seconds)
        log(f"service load ({name}): {results[name]['queries_per_second']:.1f} q/s, "
            f"p50 {results[name]['p50_ms']:.1f} ms, p99 {results[name]['p99_ms']:.1f} ms, "
            f"errors {results[name]['errors']}, RSS {results[name]['rss_first_third_mib']:.0f} -> "
            f"{results[name]['rss_last_third_mib']:.0f} MiB")
    return results


def rows(results: dict) -> list[Row]:
    """The bench table's service rows."""
    load = results.get("service_load")
    if not load:
        return []
    batched, unbatched = load["batched"], load["unbatched"]
    overhead = load["sequential"]["p50_ms"] / load["in_process"]["p50_ms"]
    gain = batched["queries_per_second"] / unbatched["queries_per_second"]
    growth = batched["rss_last_third_mib"] / batched["rss_first_third_mib"]
    size = f"{load['rows']:,} rows per table, {CLIENTS} clients, {load['seconds']:.0f} s"
    return [
        Row(f"service: queries/s, text + photo, micro-batched ({size})", f"{batched['queries_per_second']:.1f} q/s",
            "clip-retrieval back: ~20 q/s (its README)", batched["queries_per_second"] / 20.0),
        Row("service: p50 / p99 under that load", f"{batched['p50_ms']:.0f} / {batched['p99_ms']:.0f} ms",
            "clip-retrieval back: ~50 ms (its README)", batched["p50_ms"] / 50.0),
        Row("service: one client p50 via HTTP vs CatalogSearch in-process", f"{load['sequential']['p50_ms']:.1f} ms",
            f"{load['in_process']['p50_ms']:.1f} ms", overhead, f"<= {TARGET_HTTP_OVERHEAD}",
            overhead <= TARGET_HTTP_OVERHEAD),
        Row(f"service: queries/s with micro-batching vs without ({CLIENTS} clients)",
            f"{batched['queries_per_second']:.1f} q/s", f"{unbatched['queries_per_second']:.1f} q/s", gain,
            f">= {TARGET_BATCHING_GAIN}", gain >= TARGET_BATCHING_GAIN),
        Row("service: RSS peak, last third of the load vs first third", f"{batched['rss_last_third_mib']:.0f} MiB",
            f"{batched['rss_first_third_mib']:.0f} MiB", growth, f"<= {TARGET_RSS_GROWTH} (flat)",
            growth <= TARGET_RSS_GROWTH),
        Row("service: failed requests under load", str(batched["errors"] + unbatched["errors"]),
            f"{batched['queries'] + unbatched['queries']} requests", None, "0",
            batched["errors"] + unbatched["errors"] == 0),
    ]


def _registry_file(clip: LoadedClip, work: Path) -> Path:
    """A registry naming only the benchmark's model, as the service reads it."""
    spec = dataclasses.asdict(clip.spec)
    settings = {key: value for key, value in spec.items() if key != "name" and value is not None}
    path = work / "service-models.yaml"
    path.write_text(yaml.safe_dump({"include_defaults": False, "models": {clip.spec.name: settings}}))
    return path


def _rows(db_uri: str, clip: LoadedClip) -> int:
    with CatalogSearch(db_uri, registry={clip.spec.name: clip.spec}) as search:
        return search.tables(clip.spec.name)["image"].count_rows()


def _in_process_p50(db_uri: str, clip: LoadedClip, texts: Sequence[str]) -> dict:
    with CatalogSearch(db_uri, registry={clip.spec.name: clip.spec}, default_model=clip.spec.name) as search:
        search.text(texts[0], k=PAGE_BLOCK)
        latencies = []
        for text in texts[1:]:
            started = time.perf_counter()
            search.text(text, k=PAGE_BLOCK)
            latencies.append(time.perf_counter() - started)
    return _percentiles(latencies)


def _sequential(url: str, texts: Sequence[str]) -> dict:
    session = requests.Session()
    latencies = []
    for text in texts[1:]:
        started = time.perf_counter()
        session.post(f"{url}/v1/search", json={"text": text}, timeout=60).raise_for_status()
        latencies.append(time.perf_counter() - started)
    return _percentiles(latencies)


def _closed_loop(service: ServiceProcess, texts: Sequence[str], photos: Sequence[bytes], clients: int,
                 seconds: float) -> dict:
    """`clients` threads, each sending its next query when the last is answered, for `seconds`."""
    encoded = [base64.b64encode(photo).decode() for photo in photos]
    latencies: list[list[float]] = [[] for _ in range(clients)]
    errors = [0] * clients
    rss: list[tuple[float, int]] = []
    stop = threading.Event()

    def client(index: int) -> None:
        session = requests.Session()
        sent = index
        while not stop.is_set():
            body = ({"image": encoded[sent % len(encoded)]} if sent % IMAGE_SHARE == 0
                    else {"text": texts[sent % len(texts)]})
            started = time.perf_counter()
            try:
                answer = session.post(f"{service.url}/v1/search", json=body, timeout=60)
                ok = answer.status_code == 200
            except requests.RequestException:
                ok = False
            latencies[index].append(time.perf_counter() - started)
            errors[index] += not ok
            sent += clients

    threads = [threading.Thread(target=client, args=(index,), daemon=True) for index in range(clients)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    while time.perf_counter() - started < seconds:
        rss.append((time.perf_counter() - started, service.rss_bytes()))
        time.sleep(0.25)
    stop.set()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - started
    every = [value for values in latencies for value in values]
    third = len(rss) // 3
    return {
        **_percentiles(every),
        "queries": len(every),
        "queries_per_second": len(every) / elapsed,
        "errors": sum(errors),
        "rss_first_third_mib": max(value for _, value in rss[:third]) / 2**20,
        "rss_last_third_mib": max(value for _, value in rss[-third:]) / 2**20,
    }


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class ServiceProcess:
    """`fashion-search serve` in its own process group on a free 127.0.0.1 port: started, waited for
    (`/readyz` 200) on entering, its RSS read, stopped on exit (SIGTERM, then SIGKILL). The tests use it too.

    options: more `serve` options (--db, --models, ...). env: the process's environment (default: this one's).
    """

    def __init__(self, log: Path, options: Sequence[str] = (), *, env: dict[str, str] | None = None,
                 startup_timeout_s: float = STARTUP_TIMEOUT_S):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = log
        self.startup_timeout_s = startup_timeout_s
        command = [sys.executable, "-m", "fashion_search_pipeline.cli", "serve", "--port", str(self.port),
                   "--log-level", "warning", *options]
        with open(log, "wb") as output:
            self.process = subprocess.Popen(command, cwd=REPO, env=env, stdout=output, stderr=subprocess.STDOUT,
                                            start_new_session=True)

    def __enter__(self) -> ServiceProcess:
        try:
            self.wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc_info) -> None:
        self.stop()

    def wait_ready(self) -> None:
        """Block until `/readyz` answers 200; fails when the process exits or the startup timeout passes."""
        deadline = time.monotonic() + self.startup_timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"the service exited with {self.process.returncode}; {self.log}: {self._log_tail()}")
            try:
                if requests.get(f"{self.url}/readyz", timeout=2).status_code == 200:
                    return
            except requests.ConnectionError:
                pass
            time.sleep(0.3)
        raise TimeoutError(f"the service was not ready within {self.startup_timeout_s}s; {self.log}: {self._log_tail()}")

    def stop(self) -> None:
        """SIGTERM to the process group, SIGKILL if it has not exited within 30 s."""
        try:
            os.killpg(self.process.pid, signal.SIGTERM)
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)
        except ProcessLookupError:
            pass

    def rss_bytes(self) -> int:
        """The service process's resident memory now."""
        with open(f"/proc/{self.process.pid}/status") as status:
            return int(next(line for line in status if line.startswith("VmRSS:")).split()[1]) * 1024

    def _log_tail(self, chars: int = 4000) -> str:
        return self.log.read_text(errors="replace")[-chars:]


def _percentiles(seconds: list[float]) -> dict:
    values = np.asarray(seconds) * 1000
    return {"p50_ms": float(np.percentile(values, 50)), "p99_ms": float(np.percentile(values, 99))}


def main(argv: list[str] | None = None) -> int:
    """Build tables of `--rows` vectors with the query benchmark's code, then run the load."""
    from benchmarks import queries
    from benchmarks.report import render
    from benchmarks.run import _catalog, _log, _read_bytes, _vit_b_32
    from fashion_search_pipeline import columns as C
    from fashion_search_pipeline.store.tables import connect

    parser = argparse.ArgumentParser(prog="python -m benchmarks.service_load", description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=100_000, help="vectors per table")
    parser.add_argument("--seconds", type=float, default=10.0, help="load duration per configuration")
    parser.add_argument("--catalog", type=Path, default=REPO.parent / "shared" / "data" / "fashion-catalog")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="fsp-service-load-") as temporary:
        work = Path(temporary)
        clip, _ = _vit_b_32(work, 64)
        catalog, _ = _catalog(args.catalog, work, 64)
        texts = catalog[C.DESCRIPTION].to_list()[:200]
        photos = [_read_bytes(uri) for uri in catalog[C.IMAGE_URI].to_list()[:16]]
        db_uri = str(work / "query-db")
        queries.run(connect(db_uri), db_uri, clip, image_rows=args.rows, text_rows=args.rows, queries=20,
                    text_queries=texts[:21], log=_log)
        results = {"service_load": run(db_uri, clip, texts, photos, work, seconds=args.seconds,
                                       sequential_queries=40, log=_log)}
    print(render(rows(results), f"service load ({os.cpu_count()} CPUs)"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
