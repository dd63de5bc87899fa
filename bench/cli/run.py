"""``run``: algorithms on a suite under fixed seeds, then the suite's leaderboard; ``episodes``: the
episodes a suite evaluates on, as an episode file; ``evaluate``: saved models on another suite."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from bench import api
from bench.cli import common
from bench.config import TEXT_ENCODERS
from bench.errors import one_line
from bench.run.execution import ExecutionOptions
from bench.run.tuning import format_values

log = logging.getLogger("bench")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("suite", help="suite name (see `list`) or path to a suite file")
    common.add_algorithms(parser)
    common.add_seeds(parser)
    common.add_tier(parser)
    common.add_results_dir(parser)
    common.add_device(parser)
    common.add_overrides(parser)
    parser.add_argument("--encoder", choices=TEXT_ENCODERS,
                        help="text suites: the frozen sentence encoder (minilm), the same transformer trained "
                             "(minilm-finetune: the suite's finetune_layers top layers) or a word-CNN trained from "
                             "scratch (wordcnn); the same as --set suite.model.encoder=NAME")
    speed = parser.add_argument_group("execution (speed and memory; recorded under `execution`, the protocol is unchanged)")
    speed.add_argument("--task-chunk", type=common.positive_int, metavar="N",
                       help="gradient-based methods: adapt N tasks of a meta-batch together (1 = per-task loop); "
                            "default: the fastest size, measured once per device and configuration and cached")
    speed.add_argument("--eval-chunk", type=common.positive_int, metavar="N",
                       help="gradient-based methods: adapt N test episodes together (1 = per-episode loop); "
                            "default: measured and cached as for --task-chunk where the plan adapts enough episodes "
                            "to pay for it, else the task chunk")
    speed.add_argument("--checkpoint-inner-steps", action="store_true",
                       help="second-order methods: recompute each inner step in the backward pass instead of keeping "
                            "its graph (memory no longer grows with the steps; about one more forward pass of time)")
    speed.add_argument("--autocast", choices=["bf16"], help="run meta-training and evaluation under bfloat16 autocast")
    speed.add_argument("--compile", action="store_true",
                       help="torch.compile the backbone's forward (first-order and non-gradient methods only)")
    parser.add_argument("--log", action="append", default=[], metavar="TRACKER", dest="log_to",
                        help="also stream each run's curve, validation metric, throughput and final metric to "
                             "tensorboard[:DIR] (default runs/) or mlflow[:URI] (default sqlite:///mlruns.db); "
                             "repeatable; extras `tensorboard`, `mlflow`; records stay the source of truth")
    parser.add_argument("--save-model", action="store_true",
                        help="keep each run's selected weights in RESULTS_DIR/models/<sha256>.pt, named with their "
                             "SHA-256 in the record (saved_model); off by default")
    parser.add_argument("--dry-run", action="store_true",
                        help="check everything and print the planned runs; run nothing, write nothing")
    common.add_executor_arguments(parser)
    parser.add_argument("--resume", action="store_true",
                        help="skip runs already finished in --results-dir, continue interrupted ones from their last "
                             "checkpoint, run the rest")
    parser.add_argument("--tuned", action="store_true",
                        help="run with the hyperparameters `bench tune` found for this suite and tier "
                             "(RESULTS_DIR/tuned/SUITE-TIER.json); their records form entries of their own, marked tuned")


def handle(args: argparse.Namespace) -> int:
    overrides = [*args.overrides, *([f"suite.model.encoder={args.encoder}"] if args.encoder else [])]
    execution = ExecutionOptions(task_chunk=args.task_chunk, eval_chunk=args.eval_chunk,
                                 checkpoint_inner_steps=args.checkpoint_inner_steps,
                                 autocast=args.autocast, compile=args.compile, threads=args.threads,
                                 checkpoint_every=args.checkpoint_every)
    executor = common.executor_from(args)
    plan = api.plan(args.suite, args.algorithms, args.seeds, args.tier, args.results_dir, args.device, overrides,
                    execution, executor=executor, dry_run=args.dry_run, log_to=args.log_to, save_models=args.save_model,
                    use_tuned=args.tuned)
    log.info("%d run(s) of suite %s (%s tier) on %s; records go to %s", len(plan.runs), plan.suite.name,
             plan.suite.tier, plan.device, plan.results_dir / plan.suite.name / str(plan.suite.tier))
    if args.dry_run:
        for run in plan.runs:
            print(f"{plan.suite.name} ({plan.suite.tier} tier): {run.algorithm.name} seed {run.seed}")
        for name, why in plan.skipped.items():
            print(f"not run: {name}: {why}")
        return 0
    results = api.execute(plan, progress=not args.quiet, executor=executor, resume=args.resume)
    failed = [r for r in results if r["status"] != "completed"]
    if len(failed) < len(results):
        print(api.render_leaderboard(api.leaderboard(plan.suite.name, args.results_dir, plan.suite.tier)))
    for record in failed:
        error = record["error"]
        what = error["message"] if record["status"] == "diverged" else f"{error['type']}: {error['message']}"
        print(f"error: {record['algorithm']['name']} seed {record['seeds']['training_seed']} {record['status']}: "
              f"{one_line(what)} (record: {record['_path']})", file=sys.stderr)
    return 1 if failed else 0


def add_episodes_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("action", choices=["export"], help="export: write the episodes a suite draws to an episode file")
    parser.add_argument("suite", help="suite name (see `list`) or path to a suite file")
    parser.add_argument("--split", choices=["test", "val"], default="test", help="whose episodes (default: test)")
    parser.add_argument("--count", type=common.positive_int, metavar="N",
                        help="the first N episodes (default: the suite's test_tasks at --tier)")
    common.add_tier(parser)
    common.add_overrides(parser, help="suite.FIELD=VALUE: change the suite before drawing (repeatable)")
    parser.add_argument("--out", type=Path, required=True, metavar="FILE", help="the episode file to write (JSON)")
    parser.add_argument("--force", action="store_true", help="replace --out if it exists")


def handle_episodes(args: argparse.Namespace) -> int:
    path = api.export_episodes(args.suite, args.out, args.split, args.count, args.tier, args.overrides, args.force)
    print(path)
    return 0


def add_evaluate_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("records", nargs="+", type=Path, metavar="RECORD",
                        help="run records with a saved model (`run --save-model`)")
    parser.add_argument("--suite", required=True, help="the suite to evaluate on (name or file): its test episodes, "
                        "ways, shots and test inner steps; the network and hyperparameters are the record's")
    common.add_tier(parser)
    parser.add_argument("--episodes", type=Path, metavar="FILE",
                        help="evaluate on this episode file instead of the suite's drawn test episodes")
    common.add_results_dir(parser)
    common.add_device(parser)


def handle_evaluate(args: argparse.Namespace) -> int:
    evaluated = api.evaluate(args.records, args.suite, args.tier, args.episodes, args.results_dir, args.device,
                             progress=not args.quiet)
    for record in evaluated:
        metric = record["metric"]
        print(f"{record['algorithm']['name']} seed {record['seeds']['training_seed']} "
              f"(trained on {record['evaluation_of']['suite']['name']}): {metric['name']} {metric['mean']:.4g} "
              f"+- {metric['ci95']:.2g} over {metric['n_episodes']} episodes ({record['_path']})")
    return 0


def add_tune_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("suite", help="suite name (see `list`) or path to a suite file")
    common.add_algorithms(parser, help="comma-separated names (default: every one that applies and declares a search space)")
    parser.add_argument("--trials", type=int, default=20, metavar="N",
                        help="trials per algorithm, the same for all (default: 20)")
    common.add_tier(parser)
    parser.add_argument("--seed", type=int, default=0, help="the study's seed and each trial's training seed (default: 0)")
    common.add_overrides(parser, help="suite.FIELD=VALUE: the budget every trial of every algorithm gets, e.g. "
                                      "suite.meta_iterations=200 (repeatable; hyperparameters are what is searched)")
    common.add_device(parser)
    common.add_results_dir(parser, help="trial records go to RESULTS_DIR/tuning/, the best values to "
                                        "RESULTS_DIR/tuned/SUITE-TIER.json (default: results)")
    parser.add_argument("--resume", action="store_true", help="continue a study: finished trials are read back, an "
                                                              "interrupted one continues from its checkpoint")
    parser.add_argument("--parallel", type=common.positive_int, default=1, metavar="N",
                        help="with --executor ray: N trials at a time, drawn in rounds from the earlier rounds' results "
                             "(part of the study: other values than one at a time; default 1)")
    common.add_executor_arguments(parser)


def handle_tune(args: argparse.Namespace) -> int:
    summaries, path = api.tune(args.suite, args.algorithms, args.trials, args.tier, args.seed, args.results_dir,
                               args.device, args.overrides, args.resume, progress=not args.quiet,
                               executor=common.executor_from(args), parallel=args.parallel)
    for summary in summaries:
        best = summary["best"]
        print(f"{summary['algorithm']}: best of {summary['trials']} trials is trial {best['number']} "
              f"(validation {best['best_val_metric']:.4g}): {format_values(best['values'])}; "
              f"{summary['tuning_wall_time_s']:.0f} s in all")
    print(f"tuned hyperparameters: {path} (run them with `bench run {args.suite} --tuned`)")
    return 0


COMMANDS = (common.Command("run", "run algorithms on a suite and print its leaderboard",
                           "python -m bench run sine --tier smoke --algorithms maml,protonet --seeds 0,1",
                           add_arguments, handle),
            common.Command("tune", "tune every algorithm with the same trials and budget on validation episodes "
                           "(Optuna TPE); the best values go to RESULTS_DIR/tuned/ for `run --tuned`",
                           "python -m bench tune sine --tier smoke --trials 20 --algorithms maml,reptile",
                           add_tune_arguments, handle_tune),
            common.Command("episodes", "export the episodes a suite evaluates on to an episode file "
                           "(evaluate on it with the suite field test_episodes: FILE)",
                           "python -m bench episodes export omniglot-5w1s --split test --count 600 --out omniglot-test.json",
                           add_episodes_arguments, handle_episodes),
            common.Command("evaluate", "evaluate saved models on another suite (cross-domain) or an episode file; "
                           "writes evaluation records under RESULTS_DIR/evaluations/",
                           "python -m bench evaluate results/tiny-imagenet-5w1s/standard/protonet-seed0-*.json "
                           "--suite omniglot-5w1s-rgb64",
                           add_evaluate_arguments, handle_evaluate))
