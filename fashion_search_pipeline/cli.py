"""`fashion-search`: run the demo, materialize drops from a landing area, and search the catalog."""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import polars as pl
import yaml

from fashion_search_pipeline import config

DEMO_QUERIES = ("red dress", "blue trousers", "black shoes", "yellow cap")


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
    outcome = materialize_graph(defs, _instance(), drop_ids, model_names)
    for failure in outcome.failures:
        print(f"FAILED: {failure}", file=sys.stderr)
    return 0 if outcome.ok else 1


def _print_results(title: str, frame: pl.DataFrame) -> None:
    shown = [c for c in ("rank", "item_id", "description", "score", "matched") if c in frame.columns]
    with pl.Config(tbl_rows=50, fmt_str_lengths=60, tbl_hide_dataframe_shape=True, tbl_hide_column_data_types=True):
        print(f"\n{title}")
        print(frame.select(shown))


def _write_demo_registry(home: Path) -> tuple[str, str]:
    """Write the demo's model registry: the built-in models plus an offline random-weight model."""
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
    """Make a demo catalog, materialize every asset for it, and print search results."""
    from fashion_search_pipeline.demo_catalog import write_demo_landing
    from fashion_search_pipeline.search import CatalogSearch

    started = time.perf_counter()
    home = config.data_home()
    landing = config.landing_uri()
    if landing.startswith("s3://"):
        print("the demo writes its catalog to a local landing folder; unset FASHION_SEARCH_LANDING", file=sys.stderr)
        return 2
    drop_ids = write_demo_landing(Path(landing))
    print(f"demo catalog: drops {', '.join(drop_ids)} in {landing}")
    models_file, demo_model = _write_demo_registry(home)
    print(
        f"NOTE: the offline demo model '{demo_model}' has RANDOM weights (no model hub is reachable and no\n"
        "      domain model has been trained yet), so its search results are not meaningful yet."
    )
    models = _loadable_models(models_file, print)
    status = _materialize(drop_ids, models_file, models)
    search = CatalogSearch(config.db_uri(), registry=models_file)
    for model in models:
        for query in DEMO_QUERIES[: args.queries]:
            _print_results(f"[{model}] {query!r}", search.text(query, model=model, k=args.k))
    print(f"\ndemo finished in {time.perf_counter() - started:.1f}s; data in {home}")
    print("next: `make dagster` to see the asset graph, `fashion-search search \"red dress\"` to query")
    return status


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


def build_parser() -> argparse.ArgumentParser:
    """The `fashion-search` argument parser."""
    parser = argparse.ArgumentParser(prog="fashion-search", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    demo = commands.add_parser("demo", help="make a demo catalog, materialize every asset, search it")
    demo.add_argument("-k", type=int, default=5, help="results per query")
    demo.add_argument("--queries", type=int, default=len(DEMO_QUERIES), help="how many demo queries to run")
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
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `fashion-search` console script."""
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    raise SystemExit(main())
