"""`python -m kdsweep.search`: a search space -> Ray Tune trials of the one distill function -> a leaderboard.

With no arguments it runs the shipped space `default` (kdsweep/search_spaces/default.yaml: digits, CPU,
a few minutes) on an embedded Ray runtime. Every flag overrides one field of the space (named in its
help), as `--set` does.

    python -m kdsweep.search --space cifar10 --address auto --gpus-per-trial 0.25
"""

from __future__ import annotations

import argparse
import logging
import os
import shlex
import sys
from typing import NoReturn

import ray

from kdsweep.cli import ArgumentParser, add_dataset, add_tracking_uri, count, run_command
from kdsweep.config import SweepConfig, load_config, shipped_spaces
from kdsweep.sweep.run import run_sweep
from kdsweep.tracking.store import display_uri


def build_parser() -> ArgumentParser:
    p = ArgumentParser(
        prog="python -m kdsweep.search",
        description="Run a knowledge-distillation sweep on Ray Tune (default: the shipped space `default`).",
    )
    p.add_argument(
        "--space",
        default=None,
        help=f"search-space YAML, or a shipped space by name: {', '.join(shipped_spaces())} (default: default)",
    )
    add_dataset(p, default=None)
    p.add_argument("--num-samples", type=int, default=None, help="budget.num_samples: trials to sample")
    p.add_argument("--max-concurrent", type=int, default=None, help="searcher.max_concurrent")
    p.add_argument(
        "--confirm-top",
        type=count,
        default=None,
        metavar="K",
        help="confirm.top: after the search, run the K best configurations again with more seeds (0: off)",
    )
    p.add_argument(
        "--confirm-seeds",
        type=count,
        default=None,
        metavar="N",
        help="confirm.seeds: seeds per confirmed configuration in all, its search trial's included (0: off)",
    )
    p.add_argument(
        "--max-latency-ms",
        type=float,
        default=None,
        help="deploy.max_latency_ms: students slower than this never train",
    )
    p.add_argument("--max-params", type=int, default=None, help="deploy.max_params: larger students never train")
    p.add_argument("--max-flops", type=int, default=None, help="deploy.max_flops: costlier students never train")
    p.add_argument(
        "--precision", default=None, help="deploy.precision: fp32, or int8 (the top students quantized and ranked so)"
    )
    p.add_argument("--runtime", default=None, help="deploy.runtime: onnxruntime or torch, where latency is measured")
    p.add_argument("--threads", type=int, default=None, help="deploy.threads: CPU threads of the target (default 1)")
    p.add_argument("--cpus-per-trial", type=float, default=None, help="resources.cpus_per_trial")
    p.add_argument(
        "--gpus-per-trial",
        type=float,
        default=None,
        help="resources.gpus_per_trial: fractions share a GPU, 0.25 = 4 per GPU",
    )
    p.add_argument(
        "--address", default=None, help="run.address: join a running Ray cluster ('auto' on a `ray up` head node)"
    )
    p.add_argument(
        "--storage", default=None, help="run.storage: Tune storage path or URI (shared storage for multi-node)"
    )
    p.add_argument("--name", default=None, help="run.name: experiment name (default: the space file's name)")
    p.add_argument("--resume", action="store_true", help="continue the interrupted sweep of that name")
    p.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="override any field, e.g. budget.epochs=4"
    )
    p.add_argument(
        "--output-json", default=None, help="write one row per trial (config, metrics, status, MLflow run) here"
    )
    add_tracking_uri(p)
    p.add_argument(
        "--register",
        default=None,
        help="run.register_name: the champion's registered name (default: the experiment name)",
    )
    p.add_argument("--no-select", action="store_true", help="skip choosing and registering a champion at the end")
    p.add_argument(
        "--distilled-only",
        action="store_true",
        help="run.distilled_only: only distilled students compete for champion (default: scratch baselines too)",
    )
    p.add_argument(
        "--no-baselines",
        action="store_true",
        help="do not train each student without the teacher (no kd_gain / gap_closed)",
    )
    return p


def config_from_args(args: argparse.Namespace) -> SweepConfig:
    """The space file, then `--set`, then the flags, each by the YAML field it overrides."""
    return load_config(
        args.space,
        args.set,
        **{
            "data.name": args.dataset,
            "budget.num_samples": args.num_samples,
            "searcher.max_concurrent": args.max_concurrent,
            "confirm.top": args.confirm_top,
            "confirm.seeds": args.confirm_seeds,
            "deploy.max_latency_ms": args.max_latency_ms,
            "deploy.max_params": args.max_params,
            "deploy.max_flops": args.max_flops,
            "deploy.precision": args.precision,
            "deploy.runtime": args.runtime,
            "deploy.threads": args.threads,
            "resources.cpus_per_trial": args.cpus_per_trial,
            "resources.gpus_per_trial": args.gpus_per_trial,
            "run.address": args.address,
            "run.storage": args.storage,
            "run.name": args.name,
            "run.output_json": args.output_json,
            "run.resume": True if args.resume else None,
            "run.tracking_uri": args.tracking_uri,
            "run.register_name": args.register,
            "run.select": False if args.no_select else None,
            "run.baselines": False if args.no_baselines else None,
            "run.distilled_only": True if args.distilled_only else None,
        },
    )


def resume_command(argv: list[str]) -> str:
    """This very command with --resume: what continues an interrupted sweep (credentials masked)."""
    args = list(argv)
    for i, arg in enumerate(args):
        if arg == "--tracking-uri" and i + 1 < len(args):
            args[i + 1] = display_uri(args[i + 1])
        elif arg.startswith("--tracking-uri="):
            args[i] = "--tracking-uri=" + display_uri(arg.split("=", 1)[1])
    return shlex.join(["python", "-m", "kdsweep.search", *args, *([] if "--resume" in args else ["--resume"])])


def run(args: argparse.Namespace, argv: list[str]) -> int:
    """0 when the sweep finished (failed trials are listed), 1 when no trial succeeded, 130 when interrupted."""
    return run_sweep(config_from_args(args), resume_command(argv))


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    return run_command(build_parser(), lambda args: run(args, argv), argv)


def exit_now(code: int) -> NoReturn:
    """Leave without Python's interpreter teardown, which took 2-3 s after a sweep (measured on 2 cores):
    by now every run is closed and the private server stopped; Ray is shut down first, since only
    `ray.shutdown` stops the local Ray processes a sweep started."""
    ray.shutdown()
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    exit_now(main())
