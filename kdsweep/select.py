"""`python -m kdsweep.select`: a sweep's MLflow runs -> Pareto front -> the champion in the Model Registry.

python -m kdsweep.select --max-latency-ms 1 --register edge-digits --export onnx
python -m kdsweep.select --max-latency-ms 1 --precision int8   # on the int8 figures of a --precision int8 sweep

Re-selecting trains nothing: it reads the figures the sweep logged, under a new (tighter) budget.

With `--export`, the registered champion is then shipped as `python -m kdsweep.export` ships it.
"""

from __future__ import annotations

import argparse

from mlflow.tracking import MlflowClient

from kdsweep.champion import select_champion
from kdsweep.cli import ArgumentParser, add_shipping, add_tracking_uri, run_command, ship_spec
from kdsweep.errors import ConfigError
from kdsweep.selection import PRECISIONS, Constraints, check_selection_metric
from kdsweep.shipping import FORMATS, ship_model
from kdsweep.summary import summarise_sweep
from kdsweep.sweep_record import default_experiment
from kdsweep.tracking.server import open_store
from kdsweep.tracking.store import resolve_tracking_uri
from kdsweep.tracking.ui import run_url, ui_base


def build_parser() -> ArgumentParser:
    p = ArgumentParser(
        prog="python -m kdsweep.select", description="Pick a sweep's champion student and register it as NAME@champion."
    )
    add_tracking_uri(p)
    p.add_argument("--experiment", default=None, help="experiment name (default: that of the most recent sweep)")
    p.add_argument("--parent-run-id", default=None, help="the sweep's parent run (default: the experiment's latest)")
    p.add_argument(
        "--max-latency-ms",
        type=float,
        default=None,
        help="only students at most this slow (latency_ms; at int8 latency_ms_int8)",
    )
    p.add_argument("--max-params", type=float, default=None, help="only students with at most this many parameters")
    p.add_argument(
        "--min-accuracy",
        type=float,
        default=None,
        help="only students with at least this val_accuracy (at int8 val_accuracy_int8)",
    )
    p.add_argument(
        "--precision",
        default=None,
        choices=list(PRECISIONS),
        help="judge the students as shipped at this precision: int8 ranks and constrains on the int8 accuracy and "
        "latency the sweep measured (default: the sweep's deploy.precision)",
    )
    p.add_argument("--metric", default="val_accuracy", help="what makes the best student (default: val_accuracy)")
    p.add_argument("--mode", default="max", choices=["max", "min"], help="maximise or minimise --metric")
    p.add_argument(
        "--distilled-only",
        action="store_true",
        help="only distilled students compete (by default the scratch baselines, trained without the teacher, do too)",
    )
    p.add_argument("--register", default=None, metavar="NAME", help="registered model name (default: the experiment's)")
    p.add_argument("--export", default=None, choices=list(FORMATS), help="then export the champion, as kdsweep.export")
    add_shipping(p)
    return p


def run(args: argparse.Namespace) -> int:
    """0 with the champion's model URI printed last; 1 when no student meets the constraints, or when the
    exported champion fails its check. An export is attempted only after registering, and a failed one
    leaves the champion registered (exit 1 for a failed check, 2 for a model the exporter refuses)."""
    if args.export is None and (args.output or args.quantize):
        raise ConfigError("--export", "--output and --quantize need --export onnx or --export torchscript")
    spec = ship_spec(args, args.export, "--export") if args.export else None  # before the work: --output writable
    constraints = Constraints(args.max_latency_ms, args.max_params, args.min_accuracy)
    check_selection_metric(args.metric)  # before the store is opened
    with open_store(args.tracking_uri) as uri:
        experiment = args.experiment or default_experiment(MlflowClient(uri), args.parent_run_id)
        champion = select_champion(
            uri,
            experiment,
            args.parent_run_id,
            constraints,
            args.register,
            args.metric,
            args.mode,
            distilled_only=args.distilled_only,
            precision=args.precision,
        )
        if champion is None:
            return 1
        summarise_sweep(uri, champion.parent_run_id, champion.stats.metric, args.mode, champion)  # at its precision
        if spec is not None:
            try:
                shipped = ship_model(uri, champion.model_uri, spec, field="--export")
            except ConfigError as error:
                kept = f"(the champion is registered all the same: {champion.model_uri})"
                raise ConfigError(error.field, f"{error.problem} {kept}") from None
            if not shipped.passed:
                return 1
    base = ui_base(resolve_tracking_uri(args.tracking_uri))[0]  # the store's own UI, not this command's server
    print(f"champion in MLflow's UI: {run_url(base, champion.experiment_id, champion.run_id)}")
    print(champion.model_uri)
    return 0


def main(argv: list[str] | None = None) -> int:
    return run_command(build_parser(), run, argv)


if __name__ == "__main__":
    raise SystemExit(main())
