"""`fashion-search`: run the demo, materialize drops from a landing area, search the catalog, evaluate retrieval."""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import polars as pl
import yaml

from fashion_search_pipeline import config

DEMO_QUERIES = ("red dress", "blue trousers", "black shoes", "yellow cap")
DEMO_VARIANTS = 4  # items per colour x article type in the demo catalog
DEMO_TRAINING = {"epochs": 80, "batch_size": 64, "holdout_fraction": 0.15}
DEMO_TRAIN_SECONDS = 150.0


def _instance():
    """The Dagster instance in DAGSTER_HOME (created under the data folder when unset)."""
    from dagster import DagsterInstance

    home = config.dagster_home()
    home.mkdir(parents=True, exist_ok=True)
    os.environ["DAGSTER_HOME"] = str(home)
    return DagsterInstance.get()


def _loadable_models(models_file: str | None, log) -> list[str]:
    """The registry's models that load here; the others are reported with the reason."""
    from fashion_search_pipeline.models.loading import ModelLoadError, load_clip
    from fashion_search_pipeline.models.registry import load_registry

    usable = []
    for name, spec in sorted(load_registry(models_file).items()):
        try:
            load_clip(spec)
        except ModelLoadError as error:
            log(f"model {name}: not available here, skipped ({str(error).splitlines()[0]})")
            continue
        usable.append(name)
    return usable


def _materialize(drop_ids: list[str], models_file: str | None, model_names: list[str]) -> int:
    from fashion_search_pipeline.definitions import build_definitions
    from fashion_search_pipeline.defs.materialize import materialize_graph

    defs = build_definitions(models_file=models_file)
    outcome = materialize_graph(defs, _instance(), drop_ids, model_names, console_log_level="WARNING")
    return _report_failures(outcome.failures)


def _report_failures(failures: list[str]) -> int:
    for failure in failures:
        print(f"FAILED: {failure} (its log is in the Dagster UI: `make dagster`)", file=sys.stderr)
    return 1 if failures else 0


def _print_results(title: str, frame: pl.DataFrame) -> None:
    shown = [c for c in ("rank", "item_id", "description", "score", "matched") if c in frame.columns]
    with pl.Config(tbl_rows=50, fmt_str_lengths=60, tbl_hide_dataframe_shape=True, tbl_hide_column_data_types=True):
        print(f"\n{title}")
        print(frame.select(shown))


def _print_card() -> None:
    """Print the registered domain-clip version's held-out figures."""
    from fashion_search_pipeline.models.published import read_card
    from fashion_search_pipeline.models.registry import DOMAIN_MODEL

    card = read_card(DOMAIN_MODEL)
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


def cmd_demo(args: argparse.Namespace) -> int:
    """Make a demo catalog, materialize it, train domain-clip on it, embed, and print search results."""
    from fashion_search_pipeline.definitions import build_definitions
    from fashion_search_pipeline.defs.evaluation_assets import default_report_folder
    from fashion_search_pipeline.defs.materialize import GraphRunner
    from fashion_search_pipeline.demo_catalog import write_demo_landing
    from fashion_search_pipeline.evaluation.report import SUMMARY_FILE
    from fashion_search_pipeline.models.registry import DOMAIN_MODEL
    from fashion_search_pipeline.search import CatalogSearch

    started = time.perf_counter()
    if args.train_seconds <= 0:
        print(f"--train-seconds must be positive, got {args.train_seconds}", file=sys.stderr)
        return 2
    landing = config.landing_uri()
    if landing.startswith("s3://"):
        print("the demo writes its catalog to a local landing folder; unset FASHION_SEARCH_LANDING", file=sys.stderr)
        return 2
    drop_ids = write_demo_landing(Path(landing), variants=DEMO_VARIANTS)
    print(f"demo catalog: drops {', '.join(drop_ids)} in {landing}")
    models_file = config.models_file()
    runner = GraphRunner(build_definitions(models_file=models_file), _instance(), console_log_level="WARNING")
    runner.drops(drop_ids)
    if not runner.catalog():
        return _report_failures(runner.failures)
    print(f"training {DOMAIN_MODEL} on the demo catalog (offline, CPU; at most {args.train_seconds:.0f}s)")
    runner.domain_clip({**DEMO_TRAINING, "max_train_seconds": args.train_seconds})
    _print_card()
    models = _loadable_models(models_file, print)
    runner.embeddings(models)
    runner.run("retrieval_evaluation", ["retrieval_evaluation"])
    summary = default_report_folder() / SUMMARY_FILE
    if summary.exists():
        recommendation = [line for line in summary.read_text(encoding="utf-8").splitlines() if "Recommendation" in line]
        print("\n" + "\n".join(recommendation[:1]) + f"\n(full report: {summary})")
    search = CatalogSearch(config.db_uri(), registry=models_file)
    for model in models:
        for query in DEMO_QUERIES[: args.queries]:
            _print_results(f"[{model}] {query!r}", search.text(query, model=model, k=args.k))
    print(f"\ndemo finished in {time.perf_counter() - started:.1f}s; data in {config.data_home()}")
    print("next: `make dagster` to see the asset graph, `fashion-search search red dress` to query")
    return _report_failures(runner.failures)


def cmd_materialize(args: argparse.Namespace) -> int:
    """Register the drops found in the landing area and materialize the graph for them."""
    from fashion_search_pipeline.catalog.drops import list_drops

    landing = args.landing or config.landing_uri()
    storage = config.storage_options_for(landing)
    drop_ids = args.drop or list_drops(landing, storage, require_marker=args.require_marker)
    if not drop_ids:
        print(f"no drops found under {landing}/drops/", file=sys.stderr)
        return 1
    if args.landing:
        os.environ[config.LANDING_ENV] = args.landing
    models_file = config.models_file()
    models = args.model or _loadable_models(models_file, print)
    print(f"drops: {', '.join(drop_ids)}; models: {', '.join(models) or '(none loadable)'}")
    return _materialize(drop_ids, models_file, models)


def cmd_search(args: argparse.Namespace) -> int:
    """Query the catalog by text or by an example image."""
    from fashion_search_pipeline.search import CatalogSearch

    search = CatalogSearch(args.db or config.db_uri(), registry=config.models_file())
    if args.image:
        frame = search.image(args.image, model=args.model, k=args.k, where=args.where)
        title = f"image {args.image}"
    elif args.query:
        frame = search.text(" ".join(args.query), model=args.model, k=args.k, where=args.where)
        title = repr(" ".join(args.query))
    else:
        print("give a text query or --image PATH", file=sys.stderr)
        return 2
    _print_results(title, frame)
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    """Evaluate retrieval on a catalog (through the asset graph) and on a folder of captioned images."""
    from fashion_search_pipeline.catalog.drops import list_drops
    from fashion_search_pipeline.definitions import build_definitions
    from fashion_search_pipeline.defs.evaluation_assets import (
        RetrievalEvaluationConfig,
        default_report_folder,
        materialize_evaluation,
    )
    from fashion_search_pipeline.defs.materialize import GraphRunner
    from fashion_search_pipeline.evaluation.report import SUMMARY_FILE, write_reports
    from fashion_search_pipeline.evaluation.suite import evaluate_captions_folder
    from fashion_search_pipeline.models.loading import load_clip
    from fashion_search_pipeline.models.registry import DOMAIN_MODEL, load_registry

    started = time.perf_counter()
    home = Path(args.home).expanduser().resolve() if args.home else Path(tempfile.mkdtemp(prefix="fashion-eval-"))
    catalog = Path(args.catalog).expanduser().resolve()
    # Everything this command writes stays in its own data folder, apart from any demo data.
    os.environ.update(
        {
            config.HOME_ENV: str(home),
            config.LANDING_ENV: str(catalog),
            config.DB_ENV: str(home / "lancedb"),
            config.ASSETS_ENV: str(home / "assets"),
            "DAGSTER_HOME": str(home / "dagster"),
        }
    )
    models_file = args.models or config.models_file()
    if models_file is None:
        models_file, reference = _write_demo_registry(home)
        print(f"no model registry given: the built-in models plus '{reference}' (random weights, chance level)")
    print(f"data folder: {home}")
    status, evaluated = 0, 0

    if (catalog / "drops").is_dir():
        drop_ids = list_drops(str(catalog), require_marker=False)
        print(f"\n== catalog {catalog}: drops {', '.join(drop_ids)}")
        defs = build_definitions(models_file=models_file)
        instance = _instance()
        runner = GraphRunner(defs, instance, console_log_level="WARNING")
        runner.drops(drop_ids)
        runner.catalog()
        if args.train_seconds > 0:
            print(f"training {DOMAIN_MODEL} on this catalog (at most {args.train_seconds:.0f}s)")
            runner.domain_clip({"max_train_seconds": args.train_seconds})
            _print_card()
        models = args.model or _loadable_models(models_file, print)
        print(f"models: {', '.join(models) or '(none loadable)'}")
        runner.embeddings(models)
        _report_failures(runner.failures)
        run_config = RetrievalEvaluationConfig(captions_files=args.captions_file or [], max_queries=args.max_queries)
        result = materialize_evaluation(defs, instance, run_config)
        summary = default_report_folder() / SUMMARY_FILE
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
        models = args.model or _loadable_models(models_file, lambda _: None)
        registry = load_registry(models_file)
        clips = {name: load_clip(registry[name]) for name in models}
        print(f"\n== captioned images {captioned}")
        evaluation = evaluate_captions_folder(captioned, clips, max_queries=args.max_queries, log=print)
        files = write_reports(evaluation, config.reports_dir() / captioned.name, lambda uri: Path(uri).read_bytes())
        print(files.markdown)
        print(f"reports: {files.folder}")
        evaluated += 1
    else:
        print(f"captioned image set not found at {captioned} (expected captions.csv and images/): skipped")

    print(f"evaluation finished in {time.perf_counter() - started:.1f}s")
    if not evaluated:
        print("nothing was evaluated", file=sys.stderr)
        return status or 1
    return status


def build_parser() -> argparse.ArgumentParser:
    """The `fashion-search` argument parser."""
    parser = argparse.ArgumentParser(prog="fashion-search", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    demo = commands.add_parser("demo", help="make a demo catalog, materialize every asset, search it")
    demo.add_argument("-k", type=int, default=5, help="results per query")
    demo.add_argument("--queries", type=int, default=len(DEMO_QUERIES), help="how many demo queries to run")
    demo.add_argument(
        "--train-seconds", type=float, default=DEMO_TRAIN_SECONDS, help="time budget for training domain-clip"
    )
    demo.set_defaults(func=cmd_demo)

    mat = commands.add_parser("materialize", help="materialize the graph for the drops in a landing area")
    mat.add_argument("--landing", help="landing URI (folder or s3://bucket/prefix); default $FASHION_SEARCH_LANDING")
    mat.add_argument("--drop", action="append", help="only this drop id (repeatable)")
    mat.add_argument("--model", action="append", help="only this model (repeatable); default every loadable one")
    mat.add_argument(
        "--require-marker", action="store_true", help="only drops whose _SUCCESS marker exists (as the sensor does)"
    )
    mat.set_defaults(func=cmd_materialize)

    search = commands.add_parser("search", help="search the catalog by text or image")
    search.add_argument("query", nargs="*", help="text query")
    search.add_argument("--image", help="query by this image file instead")
    search.add_argument("--model", help="registry model name (default: the first with tables)")
    search.add_argument("-k", type=int, default=10, help="number of products")
    search.add_argument("--where", help="SQL filter on attributes, e.g. \"gender = 'Women'\"")
    search.add_argument("--db", help="LanceDB URI; default $FASHION_SEARCH_DB")
    search.set_defaults(func=cmd_search)

    evaluate = commands.add_parser(
        "evaluate", help="measure retrieval (MRR, recall@k, nDCG) per model and fusion strategy, print the report"
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
        "--captions-file", action="append", help="an extra image,caption evaluation file for the catalog (repeatable)"
    )
    evaluate.add_argument("--home", help="data folder for the evaluation's tables, runs and reports (default: a new one)")
    evaluate.add_argument("--models", help="model registry file (default: $FASHION_SEARCH_MODELS or <home>/models.yaml)")
    evaluate.add_argument("--model", action="append", help="only this model (repeatable); default every loadable one")
    evaluate.add_argument("--max-queries", type=int, help="per task, evaluate a seeded sample of at most this many")
    evaluate.set_defaults(func=cmd_evaluate)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `fashion-search` console script."""
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    raise SystemExit(main())
