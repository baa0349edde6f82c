"""The ``kebr`` command: a thin argparse layer over the library, one subcommand per stage.

Each Snakemake rule runs exactly one of these; every one also works by hand. kebr's modules are
imported here at the top, except by the commands whose module brings torch, matplotlib or
scikit-learn (each import says which), so that the many short jobs of a run start without them.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import sys
from pathlib import Path
from typing import Any

from kebr import paths

from kebr.stages import assemble
from kebr.config import load_config
from kebr.demo.corpus import write_demo_corpora
from kebr.deviations import describe, table_header
from kebr.experiments import run_finetuning, run_pretraining, shard_paths, table_runs
from kebr.ingest import plan_clips, read_clip_table, write_plan
from kebr.mmsa import export_mmsa, import_shard, supervised_pickle, write_plan_arrays
from kebr.model_cache import check_cached, fetch_models, use_cache
from kebr.resources import PICKLE_MB_PER_MB, configured_mem_mb
from kebr.stages.clips_report import write_report
from kebr.stages.supervise import StageFailed, run_media_stage
from kebr.stages.status import corpus_status, format_status
from kebr.variants import TABLES, table_of_file
from kebr.worker import MB, Interrupted, WorkerFailed, job_memory_limit_mb

EXAMPLES = """examples:
  kebr config-check config.yaml      # the validated config, every default filled in
  kebr config-check --recipe paper   # the paper recipe's values, their sources, and what differs here
  kebr plan --help                   # every command's help ends with an example like these
  kebr predict clip.mp4 --checkpoint results/finetune/mosi/voxceleb1/full/seed0
  snakemake --cores 2                # the workflow runs the commands for you: here, the demo"""


def command(sub: Any, name: str, help: str, example: str) -> argparse.ArgumentParser:
    """A subcommand whose ``--help`` ends with ``example`` (one command line, or several lines).
    Every subcommand is made here; tests/test_cli_help.py checks each example parses."""
    lines = "\n".join(f"  {line}" for line in example.strip().splitlines())
    return sub.add_parser(name, help=help, description=help, epilog=f"example:\n{lines}",
                          formatter_class=argparse.RawDescriptionHelpFormatter)


def _shard_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", default="config.yaml")
    p.add_argument("--plan", required=True, type=Path, help="the shard's plan TSV (results/<ds>/plan/<shard>.tsv)")
    p.add_argument("--out", required=True, type=Path)


def cmd_plan(args: argparse.Namespace) -> None:
    config = load_config(args.config)
    if args.dataset not in config["datasets"]:
        raise ValueError(f"dataset {args.dataset!r} is not in the config's datasets {sorted(config['datasets'])}")
    dataset = config["datasets"][args.dataset]
    with contextlib.ExitStack() as stack:
        if dataset["layout"] == "mmsa_pickle" and dataset.get("trust_pickle"):
            # one supervised unpickling for the clips and the arrays, under the plan job's memory
            job_mb = configured_mem_mb(config, "plan", args.dataset, os.path.getsize(dataset["pickle"]) / MB,
                                       PICKLE_MB_PER_MB)
            stack.enter_context(supervised_pickle(dataset["pickle"], job_memory_limit_mb(job_mb)))
        clips = plan_clips(dataset, seed=config["seed"], shard_size=config["shard_size"],
                           valid_fraction=config["split"]["valid_fraction"],
                           test_fraction=config["split"]["test_fraction"])
        shards = write_plan(clips, args.out)
        if dataset["layout"] == "mmsa_pickle":  # its features come with it, from this one unpickling

            write_plan_arrays(dataset, clips, args.out)
    print(json.dumps({"dataset": args.dataset, "clips": len(clips), "shards": len(shards)}))


def cmd_stage(args: argparse.Namespace) -> None:
    config = load_config(args.config)
    if args.dataset not in config["datasets"]:
        raise KeyError(f"dataset {args.dataset!r} is not in config datasets: {sorted(config['datasets'])}")
    run_media_stage(args.command, config, args.dataset, read_clip_table(args.plan), args.out)


def cmd_assemble(args: argparse.Namespace) -> None:
    config = load_config(args.config)
    assemble.run_assemble(config, args.dataset, args.plan.stem, read_clip_table(args.plan), args.asr, args.audio,
                        args.visual, args.out, args.status)


def cmd_mmsa_import(args: argparse.Namespace) -> None:
    import_shard(read_clip_table(args.plan), args.arrays, args.asr, args.audio, args.visual)


def cmd_export_mmsa(args: argparse.Namespace) -> None:
    counts = export_mmsa(shard_paths(load_config(args.config), args.dataset), args.out, device=args.device)
    print(json.dumps({"out": str(args.out), **counts}))


def cmd_report(args: argparse.Namespace) -> None:
    plans = sorted(args.plan_dir.glob("*.tsv"))
    statuses = [args.status_dir / p.name for p in plans]
    dataset = args.dataset or args.plan_dir.resolve().parent.name
    counts = write_report(plans, statuses, args.out, dataset, args.summary)
    print(json.dumps({"clips": sum(counts.values()), **counts}))


def cmd_status(args: argparse.Namespace) -> None:
    status = corpus_status(args.results)
    print(json.dumps(status, indent=2) if args.json else format_status(status))


def cmd_demo_corpus(args: argparse.Namespace) -> None:
    paths = write_demo_corpora(args.out, seed=args.seed)
    print(json.dumps({k: str(v) for k, v in paths.items()}))


def cmd_pretrain(args: argparse.Namespace) -> None:
    final = run_pretraining(load_config(args.config), args.dataset, args.variant, args.out, args.until_epoch)
    print(json.dumps({"final_state" if args.until_epoch is None else "state": str(final)}))


def cmd_finetune(args: argparse.Namespace) -> None:
    pretrained = None if args.pretrained in (None, "none") else Path(args.pretrained)
    metrics = run_finetuning(load_config(args.config), args.dataset, pretrained, args.variant, args.seed, args.out)
    print(json.dumps(metrics))


def cmd_table(args: argparse.Namespace) -> None:
    from kebr.tables import build_table  # scikit-learn, scipy: only this command pays for them

    config = load_config(args.config)
    rows = table_runs(args.name, config)
    title, header = table_header(args.name, config, rows)
    build_table(title, rows, args.out_md, args.out_csv, header)
    print(args.out_md.read_text())


def cmd_plots(args: argparse.Namespace) -> None:
    from kebr.plots import clips, html, tables, training  # matplotlib: only this command pays for it

    if args.kind == "training":
        training.plot_training(args.runs, args.out, args.title or os.path.commonpath(args.runs))
        written = [str(args.out) + s for s in (".png", ".svg")]
    else:
        config = load_config(args.config)
        if args.kind == "dataset":
            clips_tsv = args.clips or Path(paths.clips(config["results"], args.dataset))
            written = clips.dataset_figures(config, args.dataset, clips_tsv, args.out_dir, args.max_shards)
        elif args.kind == "table":
            tables_dir = args.tables or paths.tables_dir(config["results"])
            written = tables.table_figures(table_of_file(args.name, config), config,
                                           Path(paths.table_in(tables_dir, args.name, "md")),
                                           Path(paths.table_in(tables_dir, args.name, "csv")), args.out)
        else:
            written = [html.write_text(args.out, html.config_html(config, args.config))]
    print(json.dumps({"written": [str(p) for p in written]}))


def cmd_evaluate(args: argparse.Namespace) -> None:
    from kebr.metrics import evaluate_predictions_csv  # scikit-learn, scipy: only this command pays for them

    print(json.dumps(evaluate_predictions_csv(args.predictions), indent=2))


def cmd_predict(args: argparse.Namespace) -> None:
    from kebr.predict import predict_videos  # torch and the media models: only this command pays for them

    results = predict_videos(args.videos, args.checkpoint, device=args.device, amp=args.amp)
    for row in results:
        print(json.dumps(row))
    failed = [r for r in results if "error" in r]
    for row in failed:
        print(f"kebr predict: cannot score {row['clip']}: {row['error']}", file=sys.stderr)
    if failed:
        sys.exit(1)


def cmd_fetch_models(args: argparse.Namespace) -> None:
    print(json.dumps(fetch_models(load_config(args.config), args.out), indent=2))


def cmd_config_check(args: argparse.Namespace) -> None:
    config = load_config(args.config)
    if args.recipe:
        print(describe(config, args.recipe))
    else:
        print(json.dumps(config, indent=2))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="kebr", description=__doc__, epilog=EXAMPLES,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-v", "--verbose", action="store_true")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = command(sub, "plan", "list a dataset's clips, splits and shards",
                "kebr plan --config config.yaml --dataset mosi --out results/mosi/plan")
    p.add_argument("--config", default="config.yaml")
    p.add_argument("--dataset", required=True)
    p.add_argument("--out", required=True, type=Path, help="folder for one plan TSV per shard")
    p.set_defaults(func=cmd_plan)

    for name, text in (("asr", "transcribe a shard (gold text where the corpus has it)"),
                       ("audio", "audio features of a shard"), ("visual", "visual features of a shard")):
        p = command(sub, name, text, f"kebr {name} --config config.yaml --dataset mosi"
                                     f" --plan results/mosi/plan/00000.tsv --out results/mosi/{name}/00000.h5")
        _shard_args(p)
        p.add_argument("--dataset", required=True, help="the shard's dataset (its per-dataset config keys)")
        p.set_defaults(func=cmd_stage)

    p = command(sub, "assemble", "English filter + masking + features -> HDF5 shard and status",
                "kebr assemble --config config.yaml --dataset mosi --plan results/mosi/plan/00000.tsv"
                " --asr results/mosi/asr/00000.h5 --audio results/mosi/audio/00000.h5"
                " --visual results/mosi/visual/00000.h5 --out results/mosi/shards/00000.h5"
                " --status results/mosi/status/00000.tsv")
    _shard_args(p)
    p.add_argument("--dataset", required=True)
    for name in ("asr", "audio", "visual"):
        p.add_argument(f"--{name}", required=True, type=Path)
    p.add_argument("--status", required=True, type=Path)
    p.set_defaults(func=cmd_assemble)

    p = command(sub, "mmsa-import", "an mmsa_pickle shard's gold text and features as the stage outputs",
                "kebr mmsa-import --plan results/mosi/plan/00000.tsv --arrays results/mosi/plan/00000.mmsa.h5"
                " --asr results/mosi/asr/00000.h5 --audio results/mosi/audio/00000.h5"
                " --visual results/mosi/visual/00000.h5")
    p.add_argument("--plan", required=True, type=Path, help="the shard's plan TSV")
    p.add_argument("--arrays", required=True, type=Path, help="the shard's arrays (plan/<shard>.mmsa.h5)")
    for name in ("asr", "audio", "visual"):
        p.add_argument(f"--{name}", required=True, type=Path, help=f"the {name} stage output to write")
    p.set_defaults(func=cmd_mmsa_import)

    p = command(sub, "export-mmsa", "a dataset's labelled shards as an MMSA feature pickle",
                "kebr export-mmsa --config config.yaml --dataset mosi --out results/mosi/unaligned.pkl")
    p.add_argument("--config", default="config.yaml")
    p.add_argument("--dataset", required=True)
    p.add_argument("--out", required=True, type=Path, help="the pickle to write (e.g. unaligned.pkl)")
    p.add_argument("--device", default="cpu", help="where the LM computes the `text` features")
    p.set_defaults(func=cmd_export_mmsa)

    p = command(sub, "report", "clips.tsv (every planned clip: status, kind, reason) and clips_summary.tsv",
                "kebr report --plan-dir results/mosi/plan --status-dir results/mosi/status"
                " --out results/mosi/clips.tsv")
    p.add_argument("--plan-dir", required=True, type=Path)
    p.add_argument("--status-dir", required=True, type=Path)
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--dataset", help="the dataset's name in clips_summary.tsv (default: the plan folder's parent)")
    p.add_argument("--summary", type=Path, help="clips_summary.tsv path (default: beside --out)")
    p.set_defaults(func=cmd_report)

    p = command(sub, "status", "progress of a running or finished corpus: shards per stage, clips by kind",
                "kebr status results")
    p.add_argument("results", type=Path, nargs="?", default=Path("results"), help="the results folder")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=cmd_status)

    p = command(sub, "demo-corpus", "write the embedded demo corpora (TTS speech over a real face)",
                "kebr demo-corpus demo_data")
    p.add_argument("out", type=Path)
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_demo_corpus)

    p = command(sub, "pretrain", "pretrain KEBR on a dataset's shards (spec 5)",
                "kebr pretrain --config config.yaml --dataset voxceleb1 --out results/pretrain/voxceleb1/full")
    p.add_argument("--config", default="config.yaml")
    p.add_argument("--dataset", required=True)
    p.add_argument("--variant", default="full", help="full, no_tcmf, no_mcc, bert_base, bert_large (kebr/variants.py)")
    p.add_argument("--out", required=True, type=Path, help="run directory (resumes if it holds a state)")
    p.add_argument("--until-epoch", type=int,
                   help="stop after this epoch (one job of a chain; writes until-epoch<N>.json, not final.json)")
    p.set_defaults(func=cmd_pretrain)

    p = command(sub, "finetune", "fine-tune one seed on a labelled dataset's shards (spec 6)",
                "kebr finetune --config config.yaml --dataset mosi --pretrained results/pretrain/voxceleb1/full"
                " --seed 0 --out results/finetune/mosi/voxceleb1/full/seed0")
    p.add_argument("--config", default="config.yaml")
    p.add_argument("--dataset", required=True)
    p.add_argument("--pretrained", help="pretraining run directory, or none")
    p.add_argument("--variant", default="full", help="full, no_pretrain, no_tcmf, no_mcc, none, text_only, bert_base, bert_large, g<value>")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True, type=Path)
    p.set_defaults(func=cmd_finetune)

    p = command(sub, "table", f"a table ({', '.join(TABLES)}) from finished runs",
                "kebr table demo --config config.yaml --out-md results/tables/demo.md"
                " --out-csv results/tables/demo.csv")
    p.add_argument("name")
    p.add_argument("--config", default="config.yaml")
    p.add_argument("--out-md", required=True, type=Path)
    p.add_argument("--out-csv", required=True, type=Path)
    p.set_defaults(func=cmd_table)

    p = command(sub, "plots", "figures of a dataset, a training run, a table, and the config as a page",
                "kebr plots dataset --dataset mosi --out-dir results/plots/mosi")
    kinds = p.add_subparsers(dest="kind", required=True, metavar="KIND")
    q = command(kinds, "dataset", "clips ok/skipped by reason, clip durations, feature distributions",
                "kebr plots dataset --config config.yaml --dataset mosi --out-dir results/plots/mosi")
    q.add_argument("--config", default="config.yaml")
    q.add_argument("--dataset", required=True)
    q.add_argument("--clips", type=Path, help="the dataset's clips.tsv (default: results/<dataset>/clips.tsv)")
    q.add_argument("--max-shards", type=int, default=20, help="feature statistics read at most this many shards")
    q.add_argument("--out-dir", required=True, type=Path)
    q = command(kinds, "training", "loss terms, modality cosines, valid MAE and learning rates per epoch",
                "kebr plots training results/finetune/mosi/voxceleb1/full/seed0"
                " results/finetune/mosi/voxceleb1/full/seed1 --out results/plots/finetune/mosi/voxceleb1/full")
    q.add_argument("runs", nargs="+", type=Path, help="run directories (each holds a log.csv); seeds are overlaid")
    q.add_argument("--title", help="figure title (default: the runs' common folder)")
    q.add_argument("--out", required=True, type=Path, help="figure path without suffix: writes .png and .svg")
    q = command(kinds, "table", "a table's figure beside the paper's numbers (gsweep: Fig. 4), and the table as HTML",
                "kebr plots table table2-paper --config config.yaml --out results/plots/tables/table2-paper")
    q.add_argument("name", help="the table's file name in --tables without .md: demo, or a paper table's with its "
                   "recipe (table2-paper; table2-config for paper_recipe.name none)")
    q.add_argument("--config", default="config.yaml")
    q.add_argument("--tables", type=Path, help="folder of <name>.md and <name>.csv (default: results/tables)")
    q.add_argument("--out", required=True, type=Path, help="path without suffix: writes .png, .svg and .html")
    q = command(kinds, "config", "the validated config, every default filled in, as an HTML page",
                "kebr plots config --config config.yaml --out results/plots/config.html")
    q.add_argument("--config", default="config.yaml")
    q.add_argument("--out", required=True, type=Path)
    p.set_defaults(func=cmd_plots)

    p = command(sub, "evaluate", "MMSA metrics of a predictions CSV (columns prediction, label)",
                "kebr evaluate results/finetune/mosi/voxceleb1/full/seed0/predictions.csv")
    p.add_argument("predictions", type=Path)
    p.set_defaults(func=cmd_evaluate)

    p = command(sub, "predict", "sentiment score of new videos with a fine-tuned run",
                "kebr predict clip.mp4 other.mp4 --checkpoint results/finetune/mosi/voxceleb1/full/seed0")
    p.add_argument("videos", nargs="+", type=Path)
    p.add_argument("--checkpoint", required=True, type=Path, help="a fine-tuning run directory (results/finetune/...)")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--amp", action=argparse.BooleanOptionalAction, default=None,
                   help="bf16 autocast on CUDA (default: as the run evaluated, finetune.eval_amp)")
    p.set_defaults(func=cmd_predict)

    p = command(sub, "fetch-models", "download every model the config names into the model cache (needs network)",
                "kebr fetch-models --config config.yaml")
    p.add_argument("--config", default="config.yaml")
    p.add_argument("--out", type=Path, help="the lock file to write (default <models.dir>/kebr-models.json)")
    p.set_defaults(func=cmd_fetch_models)

    p = command(sub, "config-check", "validate a config and print it with every default filled in",
                "kebr config-check config.yaml\nkebr config-check config.yaml --recipe paper")
    p.add_argument("config", nargs="?", default="config.yaml")
    p.add_argument("--recipe", metavar="NAME",
                   help="instead, every value of recipe NAME (kebr/recipes/NAME.yaml, e.g. paper) with its source, "
                        "beside this config's value for the paper targets' runs where it differs")
    p.set_defaults(func=cmd_config_check)
    return parser


# The models each command loads (kebr/model_cache.py): they must be in the model cache, read offline.
MODEL_KINDS = {"asr": ("asr", "langid"), "visual": ("pyfeat",), "assemble": ("text",), "pretrain": ("text",),
               "finetune": ("text",)}


def _offline_models(args: argparse.Namespace) -> None:
    config = load_config(args.config)
    use_cache(config)
    check_cached(config, MODEL_KINDS.get(args.command, ()))


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    try:
        if getattr(args, "config", None) and args.command not in ("fetch-models", "config-check"):
            _offline_models(args)
        args.func(args)
    except (ValueError, FileNotFoundError, KeyError) as exc:
        name = " ".join([args.command] + ([args.kind] if getattr(args, "kind", None) else []))
        message = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc  # KeyError quotes its text
        print(f"kebr {name}: error: {message}", file=sys.stderr)
        print(f"kebr {name}: `kebr {name} --help` lists the arguments and ends with an example", file=sys.stderr)
        sys.exit(2)
    except (StageFailed, WorkerFailed) as exc:
        print(f"kebr {args.command}: failed: {exc}", file=sys.stderr)
        sys.exit(1)
    except Interrupted as exc:
        print(f"kebr {args.command}: {exc}", file=sys.stderr)
        sys.exit(128 + exc.signum)


if __name__ == "__main__":
    main()
