"""`fashion-search`: run the demo, materialize drops, search the catalog, list models, evaluate retrieval,
serve the API."""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import signal
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import polars as pl
import yaml

from fashion_search_pipeline.config import Settings
from fashion_search_pipeline.store.fusion import STRATEGIES

DEMO_QUERIES = ("red dress", "blue trousers", "black shoes", "yellow cap")
DEMO_VARIANTS = 4  # items per colour x article type in the demo catalog
DEMO_TRAINING = {"epochs": 80, "batch_size": 64, "holdout_fraction": 0.15}
DEMO_TRAIN_SECONDS = 150.0
RESULT_COLUMNS = ("rank", "item_id", "description", "score", "matched")
HIDDEN_RESULT_COLUMNS = ("image_uri", "attributes", "variants")


class CommandError(Exception):
    """An expected failure: one line on stderr, no traceback (unless --debug), exit `exit_code`."""

    exit_code = 1


class UsageError(CommandError):
    """A mistake in the command line or what it names (a model, a file, a filter): exit 2."""

    exit_code = 2


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors (no usage block) and exit status 2."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


class _DefaultsFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows each option's default in --help, except for options that have none."""

    def _get_help_string(self, action: argparse.Action) -> str:
        if action.default in (None, False) or action.default is argparse.SUPPRESS:
            return action.help or ""
        return super()._get_help_string(action)


def _positive_int(text: str) -> int:
    value = int(text) if text.lstrip("-").isdigit() else None
    if value is None or value < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number >= 1, got {text!r}")
    return value


def _instance(settings: Settings):
    """The Dagster instance in settings.dagster_home (created with the project's dagster.yaml when new),
    with the pool slots of runs whose process died freed (see dagster_home)."""
    from fashion_search_pipeline.dagster_home import free_dead_runs, open_instance

    instance = open_instance(settings.dagster_home)
    free_dead_runs(instance)
    return instance


def _definitions(settings: Settings):
    from fashion_search_pipeline.definitions import build_definitions

    return build_definitions(settings, environ=os.environ)


class _RunProgress:
    """A tqdm bar over a known number of Dagster runs; its `log` is GraphRunner's log callback."""

    def __init__(self, total: int, description: str):
        from tqdm import tqdm

        self.bar = tqdm(total=total, desc=description, unit="run", file=sys.stderr, dynamic_ncols=True)
        self.started = False

    def log(self, message: str) -> None:
        if self.started:
            self.bar.update(1)
        self.started = True
        self.bar.set_postfix_str(message.removeprefix("materializing "))

    def close(self) -> None:
        if self.started:
            self.bar.update(1)
        self.bar.close()


@contextlib.contextmanager
def _time_budget_bar(seconds: float, description: str):
    """A tqdm bar over a step's time budget (training stops at it), ticking once a second until the step ends."""
    import threading

    from tqdm import tqdm

    done = threading.Event()
    with tqdm(total=round(seconds), desc=description, unit="s", file=sys.stderr, dynamic_ncols=True) as bar:

        def tick() -> None:
            while not done.wait(1.0) and bar.n < bar.total:
                bar.update(1)

        ticker = threading.Thread(target=tick, daemon=True)
        ticker.start()
        try:
            yield
        finally:
            done.set()
            ticker.join()


def _runner(settings: Settings, total_runs: int, description: str):
    """A GraphRunner on settings' definitions and instance, with a progress bar; (runner, progress)."""
    from fashion_search_pipeline.defs.materialize import GraphRunner

    progress = _RunProgress(total_runs, description)
    runner = GraphRunner(_definitions(settings), _instance(settings), progress.log, console_log_level="WARNING")
    return runner, progress


def _registry(settings: Settings) -> dict:
    """The models of settings' registry file (or the built-in ones), published ones under settings.models_dir."""
    from fashion_search_pipeline.models.registry import load_registry

    return load_registry(settings.models_file, models_root=settings.models_dir)


def _loadable_models(settings: Settings, log: Callable[[str], None]) -> list[str]:
    """The registry's models that load here; the others are reported with the reason."""
    from tqdm import tqdm

    from fashion_search_pipeline.models.loading import ModelLoadError, load_clip

    usable = []
    for name, spec in tqdm(sorted(_registry(settings).items()), desc="loading models", unit="model",
                           file=sys.stderr, leave=False):
        try:
            load_clip(spec)
        except ModelLoadError as error:
            log(f"model {name}: not available here, skipped ({str(error).splitlines()[0]})")
            continue
        usable.append(name)
    return usable


def _report_failures(failures: list[str]) -> int:
    for failure in failures:
        print(f"FAILED: {failure} (its log is in the Dagster UI: `make dagster`)", file=sys.stderr)
    return 1 if failures else 0


def _print_results(title: str, frame: pl.DataFrame) -> None:
    """The results as a table: rank, id, description, score, matched, then every attribute."""
    shown = [c for c in RESULT_COLUMNS if c in frame.columns]
    shown += [c for c in frame.columns if c not in shown and c not in HIDDEN_RESULT_COLUMNS]
    with pl.Config(tbl_rows=50, tbl_cols=len(shown), fmt_str_lengths=60, tbl_hide_dataframe_shape=True,
                   tbl_hide_column_data_types=True):
        print(f"\n{title}")
        print(frame.select(shown))


def _print_card(settings: Settings) -> None:
    """Print the registered domain-clip version's held-out figures."""
    from fashion_search_pipeline.models.published import read_card
    from fashion_search_pipeline.models.registry import DOMAIN_MODEL

    card = read_card(DOMAIN_MODEL, settings.models_dir)
    if card is None:
        print(f"{DOMAIN_MODEL}: no trained version (see the domain_clip run's log)")
        return
    held = card["held_out"]
    print(
        f"{DOMAIN_MODEL} {card['version']} ({card['training']['wall_seconds']}s of training): held-out "
        f"text->image MRR {held['text_to_image_mrr']} = {held['mrr_over_random']}x random ({held['random_mrr']}); "
        f"untrained {held['untrained_mrr']}"
    )
    for key, figures in held.items():
        if key.startswith("zero_shot_"):
            print(
                f"  zero-shot {key.removeprefix('zero_shot_')}: accuracy {figures['accuracy']} "
                f"(majority class {figures['majority_accuracy']}), macro-F1 {figures['macro_f1']}"
            )


def _write_demo_registry(home: Path) -> tuple[str, str]:
    """Write a registry: the built-in models plus a random-weight reference model."""
    from fashion_search_pipeline.models.checkpoints import TINY_CONFIG, write_random_checkpoint

    checkpoint = write_random_checkpoint(TINY_CONFIG, home / "models" / "demo-random.pt", seed=0)
    registry = home / "models.yaml"
    registry.write_text(
        yaml.safe_dump(
            {
                "include_defaults": True,
                "models": {"demo-random": {"architecture": str(TINY_CONFIG), "pretrained": str(checkpoint)}},
            }
        )
    )
    return str(registry), "demo-random"


def cmd_demo(args: argparse.Namespace, settings: Settings) -> int:
    """Make a demo catalog, materialize it, train domain-clip on it, embed, and print search results."""
    from fashion_search_pipeline.defs.evaluation_assets import default_report_folder
    from fashion_search_pipeline.demo_catalog import write_demo_landing
    from fashion_search_pipeline.evaluation.report import SUMMARY_FILE
    from fashion_search_pipeline.models.registry import DOMAIN_MODEL
    from fashion_search_pipeline.search import CatalogSearch

    started = time.perf_counter()
    if args.train_seconds <= 0:
        raise UsageError(f"--train-seconds must be positive, got {args.train_seconds}")
    if settings.landing.startswith("s3://"):
        raise UsageError("the demo writes its catalog to a local landing folder; unset FASHION_SEARCH_LANDING")
    drop_ids = write_demo_landing(Path(settings.landing), variants=DEMO_VARIANTS)
    print(f"demo catalog: drops {', '.join(drop_ids)} in {settings.landing}")
    runner, progress = _runner(settings, len(drop_ids) + 1, "demo catalog")
    runner.drops(drop_ids)
    catalog_ok = runner.catalog()
    progress.close()
    if not catalog_ok:
        return _report_failures(runner.failures)
    print(f"training {DOMAIN_MODEL} on the demo catalog (offline, CPU; at most {args.train_seconds:.0f}s)")
    runner.log = lambda _: None
    with _time_budget_bar(args.train_seconds, f"training {DOMAIN_MODEL}"):
        runner.domain_clip({**DEMO_TRAINING, "max_train_seconds": args.train_seconds})
    _print_card(settings)
    models = _loadable_models(settings, print)
    embedding = _RunProgress(2 * len(models) + 1, "embedding + evaluation")
    runner.log = embedding.log
    runner.embeddings(models)
    runner.run("retrieval_evaluation", ["retrieval_evaluation", "fusion_choices"])
    embedding.close()
    summary = default_report_folder(settings.home) / SUMMARY_FILE
    if summary.exists():
        recommendation = [line for line in summary.read_text(encoding="utf-8").splitlines() if "Recommendation" in line]
        print("\n" + "\n".join(recommendation[:1]) + f"\n(full report: {summary})")
    with CatalogSearch.from_settings(settings) as search:
        for model in models:
            for query in DEMO_QUERIES[: args.queries]:
                _print_results(f"[{model}] {query!r}", search.text(query, model=model, k=args.k))
    print(f"\ndemo finished in {time.perf_counter() - started:.1f}s; data in {settings.home}")
    print("next: `make dagster` to see the asset graph, `fashion-search search red dress` to query")
    return _report_failures(runner.failures)


def cmd_materialize(args: argparse.Namespace, settings: Settings) -> int:
    """Register the drops found in the landing area and materialize the graph for them."""
    from fashion_search_pipeline.catalog.drops import InvalidDropIdError, LandingAccessError, list_drops

    try:
        drop_ids = args.drop or list_drops(
            settings.landing, settings.storage_options(settings.landing), require_marker=args.require_marker
        )
    except LandingAccessError as error:
        raise CommandError(str(error)) from error
    if not drop_ids:
        raise UsageError(f"no drops found under {settings.landing}/drops/ (check --landing)")
    models = args.model or _loadable_models(settings, print)
    _known_models(settings, models)
    print(f"drops: {', '.join(drop_ids)}; models: {', '.join(models) or '(none loadable)'}")
    from fashion_search_pipeline.dagster_home import reporting_pool_waits, stopping_on_sigterm

    runner, progress = _runner(settings, len(drop_ids) + 1 + 2 * len(models), "materialize")
    try:
        with stopping_on_sigterm(), reporting_pool_waits(runner.instance):
            runner.drops(drop_ids)
            if runner.catalog():
                runner.embeddings(models)
    except InvalidDropIdError as error:
        raise UsageError(str(error)) from error
    finally:
        progress.close()
    return _report_failures(runner.failures)


def _known_models(settings: Settings, names: list[str]) -> None:
    """Raise UsageError for names the registry does not have."""
    registry = _registry(settings)
    unknown = [name for name in names if name not in registry]
    if unknown:
        raise UsageError(f"unknown model(s) {', '.join(map(repr, unknown))}; registered: {', '.join(sorted(registry))}")


def _database_exists(db: str) -> None:
    """Raise UsageError when a local database folder is missing (nothing is created)."""
    if "://" not in db and not Path(db).expanduser().is_dir():
        raise UsageError(f"no LanceDB database at {db}: check --db, or run `fashion-search materialize` first")


def cmd_search(args: argparse.Namespace, settings: Settings) -> int:
    """Query the catalog by text or by an example image."""
    text = " ".join(args.query).strip()
    if args.image and text:
        raise UsageError("give either a text query or --image, not both")
    if not args.image and not text:
        raise UsageError("give a text query or --image PATH")
    if args.image and "://" not in args.image and not Path(args.image).expanduser().is_file():
        raise UsageError(f"query image {args.image} does not exist")
    _database_exists(settings.db)
    if args.model:
        _known_models(settings, [args.model])

    from fashion_search_pipeline.models.loading import ModelLoadError
    from fashion_search_pipeline.search import CatalogSearch, ReembeddingInProgressError

    try:
        with CatalogSearch.from_settings(settings) as search:
            queries = {"texts": [text]} if text else {"images": [args.image]}
            encoded = search.encode(args.model, **queries)
            fusion = args.fusion or search.fusion_for(encoded.model)
            frame = search.vector(
                encoded.vectors[0], encoded.model, args.k, args.where, fusion=fusion,
                keyword=text or None, collapse=args.collapse,
            )
    except (ValueError, LookupError, ReembeddingInProgressError) as error:
        raise UsageError(str(error).splitlines()[0]) from error
    except ModelLoadError as error:
        raise CommandError(str(error).splitlines()[0]) from error
    query = {"text": text} if text else {"image": args.image}
    if args.json:
        answer = {**query, "model": encoded.model, "model_version": encoded.version, "fusion": fusion,
                  "k": args.k, "where": args.where, "results": frame.to_dicts()}
        print(json.dumps(answer, default=str, ensure_ascii=False))
        return 0
    title = repr(text) if text else f"image {args.image}"
    _print_results(f"{title}: model {encoded.model} {encoded.version}, fusion {fusion}", frame)
    return 0


def cmd_models(args: argparse.Namespace, settings: Settings) -> int:
    """List the registry's models: loadable here or not (and why), table versions and row counts."""
    from fashion_search_pipeline.columns import MODALITIES, MODEL_VERSION
    from fashion_search_pipeline.models.availability import registry_availability
    from fashion_search_pipeline.store.tables import connect, open_existing_table, table_name

    specs = _registry(settings)
    has_db = "://" in settings.db or Path(settings.db).is_dir()
    db = connect(settings.db, settings.lancedb_options(settings.db)) if has_db else None
    rows = []
    for name, status in registry_availability(specs).items():
        counts, versions = {}, set()
        for modality in MODALITIES:
            table = open_existing_table(db, table_name(name, modality)) if db is not None else None
            counts[modality] = table.count_rows() if table is not None else 0
            if table is not None:
                found = table.search().select([MODEL_VERSION]).limit(None).to_arrow().column(MODEL_VERSION)
                versions.update(found.unique().to_pylist())
        rows.append({"model": name, "status": "loadable" if status.available else "unavailable",
                     "version": ", ".join(sorted(versions)) or "-", **{f"{m} rows": counts[m] for m in MODALITIES},
                     "reason": status.describe() if not status.available else ""})
    if args.json:
        print(json.dumps({"registry": settings.models_file or "built-in", "db": settings.db, "models": rows}))
        return 0
    print(f"registry: {settings.models_file or 'built-in models'}; tables: {settings.db}")
    with pl.Config(tbl_rows=100, fmt_str_lengths=120, tbl_hide_dataframe_shape=True, tbl_hide_column_data_types=True):
        print(pl.DataFrame(rows))
    return 0


def cmd_evaluate(args: argparse.Namespace, settings: Settings) -> int:
    """Evaluate retrieval on a catalog (through the asset graph) and on a folder of captioned images."""
    started = time.perf_counter()
    home = Path(args.home).expanduser().resolve() if args.home else Path(tempfile.mkdtemp(prefix="fashion-eval-"))
    catalog = Path(args.catalog).expanduser().resolve()
    # Everything this command writes stays in its own data folder, apart from any demo data.
    settings = Settings.from_env(
        os.environ, home=home, landing=str(catalog), db=str(home / "lancedb"), assets=str(home / "assets"),
        dagster_home=home / "dagster", models_file=args.models,
    )
    return _evaluate(args, settings, home, catalog, started)


def _evaluate(args: argparse.Namespace, settings: Settings, home: Path, catalog: Path, started: float) -> int:
    from tqdm import tqdm

    from fashion_search_pipeline.catalog.drops import list_drops
    from fashion_search_pipeline.defs.evaluation_assets import (
        RetrievalEvaluationConfig,
        default_report_folder,
        materialize_evaluation,
    )
    from fashion_search_pipeline.evaluation.report import SUMMARY_FILE, write_reports
    from fashion_search_pipeline.evaluation.suite import evaluate_captions_folder
    from fashion_search_pipeline.models.loading import load_clip
    from fashion_search_pipeline.models.registry import DOMAIN_MODEL

    if settings.models_file is None:
        models_file, reference = _write_demo_registry(home)
        settings = dataclasses.replace(settings, models_file=models_file)
        print(f"no model registry given: the built-in models plus '{reference}' (random weights, chance level)")
    print(f"data folder: {home}")
    status, evaluated = 0, 0

    if (catalog / "drops").is_dir():
        drop_ids = list_drops(str(catalog), require_marker=False)
        print(f"\n== catalog {catalog}: drops {', '.join(drop_ids)}")
        runner, progress = _runner(settings, len(drop_ids) + 1, "catalog")
        runner.drops(drop_ids)
        runner.catalog()
        progress.close()
        runner.log = lambda _: None
        if args.train_seconds > 0:
            print(f"training {DOMAIN_MODEL} on this catalog (at most {args.train_seconds:.0f}s)")
            with _time_budget_bar(args.train_seconds, f"training {DOMAIN_MODEL}"):
                runner.domain_clip({"max_train_seconds": args.train_seconds})
            _print_card(settings)
        models = args.model or _loadable_models(settings, print)
        _known_models(settings, models)
        print(f"models: {', '.join(models) or '(none loadable)'}")
        embedding = _RunProgress(2 * len(models), "embeddings")
        runner.log = embedding.log
        runner.embeddings(models)
        embedding.close()
        _report_failures(runner.failures)
        run_config = RetrievalEvaluationConfig(captions_files=args.captions_file or [], max_queries=args.max_queries)
        result = materialize_evaluation(runner.defs, runner.instance, run_config)
        summary = default_report_folder(settings.home) / SUMMARY_FILE
        if result.success and summary.exists():
            print(summary.read_text(encoding="utf-8"))
            evaluated += 1
        for check in result.get_asset_check_evaluations():
            verdict = "passed" if check.passed else f"FAILED ({check.severity.value})"
            print(f"check {check.check_name}: {verdict}: {check.description}")
        status = int(not (runner.ok and result.success))
        print(f"reports: {summary.parent}")
    else:
        print(f"fashion catalog not found at {catalog} (expected {catalog}/drops/<drop_id>/): skipped")

    captioned = Path(args.captions_dataset).expanduser().resolve()
    if (captioned / "captions.csv").is_file():
        models = args.model or _loadable_models(settings, lambda _: None)
        registry = _registry(settings)
        clips = {name: load_clip(registry[name]) for name in tqdm(models, desc="loading models", file=sys.stderr)}
        print(f"\n== captioned images {captioned}")
        evaluation = evaluate_captions_folder(captioned, clips, max_queries=args.max_queries, log=print)
        files = write_reports(evaluation, settings.reports_dir / captioned.name, lambda uri: Path(uri).read_bytes())
        print(files.markdown)
        print(f"reports: {files.folder}")
        evaluated += 1
    else:
        print(f"captioned image set not found at {captioned} (expected captions.csv and images/): skipped")

    print(f"evaluation finished in {time.perf_counter() - started:.1f}s")
    if not evaluated:
        raise CommandError("nothing was evaluated")
    return status


def cmd_serve(args: argparse.Namespace, settings: Settings) -> int:
    """Serve the search API and page over the pipeline's tables (uvicorn)."""
    import uvicorn

    from fashion_search_pipeline.service.app import create_app
    from fashion_search_pipeline.service.settings import ServiceSettings

    _database_exists(settings.db)
    service = ServiceSettings.from_environment(
        os.environ,
        settings,
        batch_window_s=None if args.batch_window_ms is None else args.batch_window_ms / 1000,
    )
    if args.ray:
        return _serve_on_ray(args, service)
    print(f"serving {service.db_uri} on http://{args.host}:{args.port} (API docs at /docs)")
    uvicorn.run(create_app(service), host=args.host, port=args.port, log_level=args.log_level, access_log=False)
    return 0


def _serve_on_ray(args: argparse.Namespace, settings) -> int:
    """Deploy the service as Ray Serve replicas on the cluster at --ray-address; Ctrl-C removes it."""
    import threading

    from ray import serve

    from fashion_search_pipeline.scale.ray_serve import APP_NAME, ServeScaling, run_search_service

    scaling = ServeScaling(
        min_replicas=args.min_replicas, max_replicas=args.max_replicas, target_ongoing_requests=args.target_ongoing
    )
    run_search_service(settings, scaling, address=args.ray_address, host=args.host, port=args.port)
    print(f"serving {settings.db_uri} on Ray Serve at http://{args.host}:{args.port} "
          f"({scaling.min_replicas}-{scaling.max_replicas} replicas); Ctrl-C stops it")
    stopped = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopped.set())
    try:
        stopped.wait()
    except KeyboardInterrupt:
        pass
    serve.delete(APP_NAME)
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The `fashion-search` argument parser."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                        help="show tracebacks and Dagster's warnings")
    parser = _Parser(prog="fashion-search", description=__doc__, formatter_class=_DefaultsFormatter)
    parser.add_argument("--debug", action="store_true", help="show tracebacks and Dagster's warnings")
    commands = parser.add_subparsers(dest="command", required=True)

    def command(name: str, help: str) -> argparse.ArgumentParser:
        return commands.add_parser(name, help=help, description=help, parents=[common],
                                   formatter_class=_DefaultsFormatter)

    demo = command("demo", "make a demo catalog, materialize every asset, search it")
    demo.add_argument("-k", type=_positive_int, default=5, help="results per query")
    demo.add_argument("--queries", type=_positive_int, default=len(DEMO_QUERIES), help="how many demo queries to run")
    demo.add_argument(
        "--train-seconds", type=float, default=DEMO_TRAIN_SECONDS, help="time budget for training domain-clip"
    )
    demo.set_defaults(func=cmd_demo)

    mat = command("materialize", "materialize the graph for the drops in a landing area")
    mat.add_argument("--landing", help="landing URI (folder or s3://bucket/prefix); default $FASHION_SEARCH_LANDING")
    mat.add_argument("--drop", action="append", help="only this drop id (repeatable)")
    mat.add_argument("--model", action="append", help="only this model (repeatable); default every loadable one")
    mat.add_argument(
        "--require-marker", action="store_true", help="only drops whose _SUCCESS marker exists (as the sensor does)"
    )
    mat.set_defaults(func=cmd_materialize)

    search = command("search", "search the catalog by text or image")
    search.add_argument("query", nargs="*", help="text query")
    search.add_argument("--image", help="query by this image file (or s3:// URI) instead")
    search.add_argument("--model", help="registry model name (default: the first with tables)")
    search.add_argument("-k", type=_positive_int, default=10, help="number of products")
    search.add_argument("--where", help="SQL filter on attributes, e.g. \"gender = 'Women'\"")
    search.add_argument("--db", help="LanceDB URI; default $FASHION_SEARCH_DB")
    search.add_argument(
        "--fusion", choices=STRATEGIES, help="how the legs are fused (default: the model's evaluated choice)"
    )
    search.add_argument("--collapse", action="store_true", help="one result per product cluster (variants)")
    search.add_argument("--json", action="store_true", help="print one JSON object: model, version, fusion, results")
    search.set_defaults(func=cmd_search)

    models = command("models", "list the registry's models: loadable or not, table versions and row counts")
    models.add_argument("--db", help="LanceDB URI; default $FASHION_SEARCH_DB")
    models.add_argument("--models", help="model registry file; default $FASHION_SEARCH_MODELS or <home>/models.yaml")
    models.add_argument("--json", action="store_true", help="print one JSON object")
    models.set_defaults(func=cmd_models)

    evaluate = command(
        "evaluate", "measure retrieval (MRR, recall@k, nDCG) per model and fusion strategy, print the report"
    )
    evaluate.add_argument(
        "--train-seconds",
        type=float,
        default=480.0,
        help="train domain-clip on the catalog first, for at most this long (0: skip training)",
    )
    evaluate.add_argument(
        "--catalog", default="../shared/data/fashion-catalog", help="a landing folder with drops/<drop_id>/ to evaluate"
    )
    evaluate.add_argument(
        "--captions-dataset",
        default="../shared/data/flickr8k-1k",
        help="a folder with captions.csv (image,caption) and images/, evaluated in memory",
    )
    evaluate.add_argument(
        "--captions-file", action="append",
        help="an extra image,caption evaluation file for the catalog (repeatable)",
    )
    evaluate.add_argument("--home", help="data folder for the evaluation's tables, runs and reports; default a new one")
    evaluate.add_argument("--models", help="model registry file; default $FASHION_SEARCH_MODELS or <home>/models.yaml")
    evaluate.add_argument("--model", action="append", help="only this model (repeatable); default every loadable one")
    evaluate.add_argument(
        "--max-queries", type=_positive_int, help="per task, evaluate a seeded sample of at most this many"
    )
    evaluate.set_defaults(func=cmd_evaluate)

    serve = command("serve", "serve the search API (/v1, /docs) and the search page")
    serve.add_argument("--host", default="127.0.0.1", help="interface to listen on")
    serve.add_argument("--port", type=int, default=8080, help="port to listen on")
    serve.add_argument("--db", help="LanceDB URI (folder or s3://...); default $FASHION_SEARCH_DB")
    serve.add_argument("--models", help="model registry file; default $FASHION_SEARCH_MODELS or <home>/models.yaml")
    serve.add_argument(
        "--batch-window-ms", type=float, help="gather concurrent queries this long to encode them together (0: off)"
    )
    serve.add_argument("--log-level", default="info", help="uvicorn log level")
    serve.add_argument("--ray", action="store_true", help="run as Ray Serve replicas on a Ray cluster instead")
    serve.add_argument("--ray-address", help="Ray head host:port; default $RAY_ADDRESS")
    serve.add_argument("--min-replicas", type=int, default=1, help="with --ray: fewest replicas")
    serve.add_argument("--max-replicas", type=int, default=4, help="with --ray: most replicas")
    serve.add_argument(
        "--target-ongoing", type=float, default=8.0, help="with --ray: requests in flight per replica before scaling up"
    )
    serve.set_defaults(func=cmd_serve)
    return parser


def settings_for(args: argparse.Namespace, environ) -> Settings:
    """The one Settings of this command: the environment, with the command line's locations on top."""
    return Settings.from_env(
        environ, landing=getattr(args, "landing", None), db=getattr(args, "db", None),
        models_file=getattr(args, "models", None),
    )


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `fashion-search` console script."""
    args = build_parser().parse_args(argv)
    if getattr(args, "command", None) == "serve" and args.ray_address is None:
        args.ray_address = os.environ.get("RAY_ADDRESS")
    if not args.debug:
        from dagster_shared.utils.warnings import BetaWarning, PreviewWarning, SupersessionWarning

        for category in (BetaWarning, PreviewWarning, SupersessionWarning, DeprecationWarning):
            warnings.filterwarnings("ignore", category=category)
    try:
        return args.func(args, settings_for(args, os.environ))
    except CommandError as error:
        if args.debug:
            raise
        print(f"fashion-search {args.command}: error: {error}", file=sys.stderr)
        return error.exit_code
    except KeyboardInterrupt as interruption:  # 128 + the signal: 130 for Ctrl-C, 143 for SIGTERM
        signum = getattr(interruption, "signum", signal.SIGINT)
        print(f"fashion-search {args.command}: stopped by {signal.Signals(signum).name}", file=sys.stderr)
        return 128 + signum


if __name__ == "__main__":
    raise SystemExit(main())
