"""The ``deam-mamba`` command: parses arguments and calls library functions, nothing else.

Each subcommand is one ``_cmd_<name>(sub)`` function that adds its parser and sets
``func``; ``COMMANDS`` lists them. Library errors (:class:`DeamError`) print as one line.

Each subcommand imports the library stage it calls inside its ``run`` function, on purpose: a
command then loads only what it uses (``predict`` never loads the training or evaluation stages,
``info`` never loads torch models), which keeps the start-up of every command short.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path

from deam_mamba.core.errors import ConfigError, DeamError, describe_os_error
from deam_mamba.core.io import to_json
from deam_mamba.core.runtime import tune_malloc

PROGRESS_INTERVAL_NOT_A_TTY_S = 30  # tqdm's mininterval when stderr is redirected (TQDM_MININTERVAL overrides)

# --- subcommands --------------------------------------------------------------------------


def _dataset_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--kind", default=None, choices=["deam", "4q", "pmemo", "csv"],
                   help="dataset reader (default: detected from the files)")
    p.add_argument("--scale", default=None, help="label scale of a CSV's valence/arousal (1-9, 0-1, '[-1, 1]', "
                                                 "'lo,hi')")


def _open_dataset(root: str | None, a: argparse.Namespace):  # -> MusicDataset | DEAMHandler
    from deam_mamba.data.registry import open_dataset

    return open_dataset(root, kind=a.kind, **({"scale": a.scale} if a.scale else {}))


def _cmd_evaluate(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("evaluate", help="metrics (bootstrap 95%% CIs), report and plots of a trained run",
                       description="Evaluate RUN_DIR on a split of its own data (same cache, split and features "
                                   "as training). Static runs: MSE, RMSE, MAE, r, CCC, R² per dimension on the 1-9 "
                                   "scale; dynamic runs: MediaEval 2015 per-song RMSE and r on [-1, 1].")
    p.add_argument("run_dir", metavar="RUN_DIR")
    p.add_argument("--split", default="test", choices=["train", "val", "test", "all"],
                   help="songs to score (all: every song of the dataset, e.g. with --data)")
    p.add_argument("--data", default=None, help="score the run on another dataset (folder or CSV; e.g. a DEAM-trained "
                                                "run on 4Q quadrants), or a moved copy of its own")
    p.add_argument("--kind", default=None, choices=["deam", "4q", "pmemo", "csv"], help="reader for --data")
    p.add_argument("--cache", default=None, help="feature cache for --data (built with the run's features if "
                                                 "missing), or a moved cache of the run's own data")
    p.add_argument("--out", default=None, help="output folder (default RUN_DIR/eval, or RUN_DIR/eval_<split>)")
    p.add_argument("--which", default="best", choices=["best", "last"], help="checkpoint to evaluate")
    p.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples for the 95%% CIs (0: none)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--force", action="store_true", help="overwrite a non-empty --out folder")
    p.add_argument("--ridge", action="store_true",
                   help="also fit the ridge baseline (mel statistics) on the same split and write comparison.md")

    def run(a: argparse.Namespace) -> int:
        from deam_mamba.evaluation.evaluate import evaluate_run, summary_lines

        if a.ridge and a.split != "test":
            raise ConfigError("--ridge is fitted on the train+val songs: use it with --split test")
        m = evaluate_run(a.run_dir, split=a.split, out_dir=a.out, which=a.which, bootstrap=a.bootstrap,
                         device=a.device, batch_size=a.batch_size, force=a.force, data=a.data, kind=a.kind,
                         cache=a.cache)
        print("\n".join(summary_lines(m)))
        print(f"report: {m['paths'].get('report_md', m['paths'])}")
        if a.ridge:
            from deam_mamba.experiments.compare import compare_run_with_ridge
            from deam_mamba.experiments.compare import summary_lines as table_lines

            out = Path(m["paths"]["report_md"]).parent
            rows = compare_run_with_ridge(a.run_dir, m, out, bootstrap=a.bootstrap)
            print("\n".join(table_lines(rows)))
            print(f"comparison: {out / 'comparison.md'}")
        return 0

    p.set_defaults(func=run)


def _cmd_predict(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("predict", help="valence/arousal (1-9) and a 2 Hz curve for audio files or folders",
                       description="Predict song-level valence and arousal and a 2 Hz curve for any "
                                   "mp3/wav/flac/ogg (files or folders, recursive). Unreadable files are reported "
                                   "and skipped; the exit code is non-zero only if nothing could be predicted.")
    p.add_argument("run_dir", metavar="RUN_DIR")
    p.add_argument("audio", metavar="AUDIO", nargs="+", help="audio files or folders")
    p.add_argument("--out", default=None, help="write predictions to a .csv or .json file (default: print)")
    p.add_argument("--force", action="store_true", help="overwrite an existing --out file")
    p.add_argument("--batch-size", type=int, default=16, help="chunks per forward pass")
    p.add_argument("--hop-seconds", type=float, default=None, help="chunk hop (default: the run's eval hop)")
    p.add_argument("--which", default="best", choices=["best", "last"])
    p.add_argument("--device", default="cpu")
    p.add_argument("--backend", default="torch", choices=["torch", "onnx"],
                   help="run the network in PyTorch or in ONNX Runtime (CPU; needs `deam-mamba export` first)")
    p.add_argument("--onnx", default=None, metavar="MODEL.onnx",
                   help="with --backend onnx: the exported file (default RUN_DIR/model.onnx; its checkpoint "
                        "replaces --which)")

    def run(a: argparse.Namespace) -> int:
        from deam_mamba.inference.files import check_output_path, predict_paths, predictions_to_json, write_predictions

        if a.hop_seconds is not None and not a.hop_seconds > 0:
            raise ConfigError(f"--hop-seconds must be > 0, got {a.hop_seconds}")
        if a.out:
            check_output_path(a.out, force=a.force)  # fail before any work
        if a.onnx and a.backend != "onnx":
            raise ConfigError("--onnx needs --backend onnx")
        res = predict_paths(a.run_dir, a.audio, which=a.which, device=a.device, batch_size=a.batch_size,
                            hop_seconds=a.hop_seconds, backend=a.backend, onnx=a.onnx)
        for s in res.skipped:
            print(f"deam-mamba predict: skipped {s['path']}: {s['reason']}", file=sys.stderr)
        if a.out:
            write_predictions(res, a.out, force=a.force)
            print(f"{len(res.predictions)} song(s) predicted, {len(res.skipped)} skipped -> {a.out}")
        else:
            for pr in res.predictions:
                quad = f"Q{pr.quadrant}" if pr.quadrant else "-"
                if pr.p_valence_positive is not None:
                    what = (f"P(valence positive) {pr.p_valence_positive:.3f}\tP(arousal high) "
                            f"{pr.p_arousal_high:.3f}\tquadrant {quad}")
                else:
                    what = (f"valence {pr.valence:.3f}\tarousal {pr.arousal:.3f}\tquadrant {quad}"
                            f"\t(scale {pr.song_scale})")
                flags = f"\tflags: {','.join(pr.flags)}" if pr.flags else ""
                print(f"{pr.source}\t{what}\t({pr.duration_s:.1f} s, curve {len(pr.curve_times_s)} points at 2 Hz "
                      f"on {pr.curve_scale}){flags}")
            if not res.predictions:
                print(predictions_to_json(res), end="")
        return 0 if res.predictions else 1

    p.set_defaults(func=run)


def _cmd_compare(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("compare", help="train + evaluate MambaVision, timm baselines and ridge on one split",
                       description="Train and evaluate several models from ONE config (only model.name changes) "
                                   "plus a ridge regression on mel statistics; write comparison.md/.json.")
    p.add_argument("--config", required=True, help="YAML config (e.g. configs/demo.yaml)")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides for every model")
    p.add_argument("--models", default="mambavision_audio,resnet18,efficientnet_b0,vit_audio",
                   help="comma-separated model names (the ridge baseline is added unless --no-ridge)")
    p.add_argument("--no-ridge", action="store_true", help="leave out the ridge baseline")
    p.add_argument("--out", default="compare_out", help="output folder (runs/<model>, comparison.md/.json)")
    p.add_argument("--bootstrap", type=int, default=1000)
    p.add_argument("--force", action="store_true", help="overwrite a non-empty --out folder")

    def run(a: argparse.Namespace) -> int:
        from deam_mamba.experiments.compare import run_comparison, summary_lines

        models = [m.strip() for m in a.models.split(",") if m.strip()]
        res = run_comparison(a.config, a.overrides, models=models, out_dir=a.out, force=a.force,
                             bootstrap=a.bootstrap, ridge=not a.no_ridge)
        print("\n".join(summary_lines(res["rows"])))
        print(f"table: {res['paths'].get('comparison_md', res['paths'])}")
        return 0

    p.set_defaults(func=run)


def _cmd_synth(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("synth", help="write a synthetic DEAM-shaped corpus (Kaggle layout, MP3 + CSVs)")
    p.add_argument("--out", required=True, help="folder to create (must be absent or empty unless --force)")
    p.add_argument("--songs", type=int, default=200, help="45 s excerpts, ids <= 2000 (default 200)")
    p.add_argument("--seconds", type=float, default=45.0, help="excerpt length in seconds (default 45)")
    p.add_argument("--full-songs", type=int, default=None,
                   help="full-length songs, ids 2001.. (default 5%% of --songs)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workers", type=int, default=None, help="parallel processes (default: all CPUs)")
    p.add_argument("--force", action="store_true", help="replace a non-empty --out folder")

    def run(a: argparse.Namespace) -> int:
        from deam_mamba.synth.corpus import synthesize

        root = synthesize(a.out, songs=a.songs, seconds=a.seconds, full_songs=a.full_songs, seed=a.seed,
                          workers=a.workers, force=a.force)
        info = json.loads((root / "synth_info.json").read_text())
        print(f"wrote {len(info['song_ids'])} songs ({info['songs']} excerpts, {info['full_songs']} full) to {root}")
        return 0

    p.set_defaults(func=run)


def _cmd_info(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("info", help="summarise a dataset (DEAM, 4Q, PMEmo, a CSV): songs, labels, problems")
    p.add_argument("data_root", nargs="?", default=None,
                   help="dataset folder (any nesting) or a CSV file; default: DEAM from $DEAM_ROOT, else kagglehub")
    _dataset_args(p)
    p.add_argument("--json", action="store_true", help="print the summary and problems as JSON")
    p.add_argument("--check-audio", action="store_true",
                   help="read every audio header (adds durations; unreadable files become problems)")
    p.add_argument("--deep", action="store_true", help="with --check-audio: decode every file fully (slow)")
    p.add_argument("--all", action="store_true", help="list every problem (default: the first 50)")
    p.add_argument("--problems-out", default=None, help="also write the problems to this .csv or .json file")
    p.add_argument("--force", action="store_true", help="overwrite --problems-out if it exists")

    def run(a: argparse.Namespace) -> int:
        from deam_mamba.data import base, deam

        handler = _open_dataset(a.data_root, a)
        format_summary = deam.format_summary if handler.kind == "deam" else base.format_summary
        if a.check_audio:
            handler.check_audio(deep=a.deep)
        summary = handler.summary()
        if a.problems_out:
            handler.write_problems(a.problems_out, overwrite=a.force)
        if a.json:
            print(to_json({"summary": summary, "problems": [p.to_dict() for p in handler.problems]}))
        else:
            print(format_summary(summary, handler.problems, max_problems=None if a.all else 50))
            if a.problems_out:
                print(f"problems written to {a.problems_out}")
        return 0

    p.set_defaults(func=run)


def _cmd_train(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train a model from a YAML config (resumable; torchrun for multi-GPU)",
                       description="Train from configs/NAME.yaml; any value can be overridden as key=value "
                                   "(e.g. optim.lr=3e-4 train.epochs=5). Multi-GPU: torchrun --nproc-per-node N "
                                   "-m deam_mamba.cli train ...")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="dotted config overrides")
    p.add_argument("--config", help="YAML config (not needed with --resume)")
    p.add_argument("--resume", metavar="RUN_DIR", help="continue a run from its last checkpoint")
    p.add_argument("--out", default="runs", metavar="RUNS_DIR", help="parent of new run folders (default: runs)")
    p.add_argument("--run-dir", help="exact folder for a new run (default: RUNS_DIR/<config>-<time>)")

    def run(args: argparse.Namespace) -> int:
        from deam_mamba.train.launch import start_training

        res = start_training(args.config, args.overrides, resume=args.resume, out=args.out,
                             run_dir=args.run_dir, argv=sys.argv)
        if int(os.environ.get("RANK", "0")) == 0:
            best = {k: round(v, 4) for k, v in res.best_metrics.items() if k.startswith("val_ccc")}
            print(f"run {res.run_dir}: {res.epoch} epochs, {res.step} steps in {res.seconds:.0f} s"
                  f"{' (early stop)' if res.stopped_early else ''}; best {best} (mean pooling)")
            if res.pooling and "val_attention" in res.pooling:
                print(f"attention pooling (epoch {res.pooling['selected_epoch']}): val CCC "
                      f"{ {k: round(v, 4) for k, v in res.pooling['val_attention'].items()} }")
            elif res.pooling:
                p = res.pooling
                inner = p["inner_scores"].get(repr(p["C"]), float("nan"))
                print(f"linear song head ({p['task']}): C={p['C']:g} by {p['inner_folds']} inner folds of "
                      f"{p['n_songs']} songs, {p['inner_metric']} {inner:.4f}")
        return 0

    p.set_defaults(func=run)


def _cmd_prepare(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("prepare", help="decode + featurise every song once into a log-mel feature cache",
                       description="Build (or update) the feature cache: every song is decoded and turned into a "
                                   "float16 log-mel array once, in worker processes. A re-run processes only new or "
                                   "changed songs and rebuilds corrupt arrays; other feature settings get their own "
                                   "sub-folder. Undecodable songs are listed in skipped.json/.csv.")
    p.add_argument("--data", default=None, help="dataset folder or CSV file (default: DEAM from $DEAM_ROOT, "
                                                "else kagglehub)")
    _dataset_args(p)
    p.add_argument("--cache", required=True, help="cache folder (one per dataset)")
    p.add_argument("--workers", type=int, default=None, help="worker processes (default: CPU count; 0: in-process)")
    p.add_argument("--n-mels", type=int, default=128, help="mel bands, 64..128 (default 128)")
    p.add_argument("--fmax", type=float, default=8000.0, help="highest mel frequency in Hz (default 8000)")
    p.add_argument("--top-db", type=float, default=80.0, help="dynamic range in dB below each song's peak "
                                                              "(default 80; 0 = no floor)")
    p.add_argument("--no-verify", action="store_true", help="reuse arrays after a size check only (no sha1)")
    p.add_argument("--force", action="store_true", help="recompute every song (and allow a non-cache folder)")
    p.add_argument("--no-progress", action="store_true")

    def run(a: argparse.Namespace) -> int:
        from deam_mamba.config import FeatureConfig
        from deam_mamba.features.prepare import build_cache

        cfg = FeatureConfig(n_mels=a.n_mels, fmax=a.fmax, top_db=a.top_db or None)
        s = build_cache(_open_dataset(a.data, a), a.cache, cfg, workers=a.workers, progress=not a.no_progress,
                        force=a.force, verify=not a.no_verify)
        print(f"cache {s['cache_dir']}: {s['songs']} songs ({s['processed']} processed, {s['reused']} reused, "
              f"{s['rebuilt_corrupt']} rebuilt, {s['n_skipped']} skipped) in {s['seconds']:.1f} s")
        for row in s["skipped"]:
            print(f"  skipped song {row['song_id']}: {row['reason']}")
        return 0

    p.set_defaults(func=run)


# --- pretrain (issue 15: self-supervised pretraining on unlabelled audio) -------------------------

def _cmd_pretrain(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("pretrain", help="pretrain a backbone without labels on folders of audio (masked patches, "
                                        "contrastive crops or MusiCNN distillation)",
                       description="Pretrain a MambaVision backbone on any folders of audio (no labels) through the "
                                   "feature cache (data.cache). pretrain.objective: mask (masked spectrogram patch "
                                   "reconstruction, the default), contrast (two crops of one song), both (mask + "
                                   "contrast), distill (regress the MusiCNN teacher's embeddings and tags; the best "
                                   "on 4Q, see docs/pretraining.md) or mask+distill. Resumable (--resume RUN). "
                                   "Fine-tune with `deam-mamba train ... model.init=RUN`.")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="dotted config overrides")
    p.add_argument("--data", nargs="+", metavar="FOLDER", help="audio folders or files (every format predict "
                                                                "reads); with --resume: default the run's own")
    p.add_argument("--out", metavar="RUN_DIR", help="new run folder")
    p.add_argument("--config", default="configs/pretrain.yaml", help="YAML config (default configs/pretrain.yaml)")
    p.add_argument("--resume", metavar="RUN_DIR", help="continue a pretraining run from its last checkpoint")

    def run(a: argparse.Namespace) -> int:
        from deam_mamba.train.pretrain import start_pretraining

        config = a.config if a.resume is None else None
        if config is not None and not Path(config).is_file():
            raise ConfigError(f"--config {config}: no such file (run from the repository root or pass --config)")
        if a.resume is None and not a.data:
            raise ConfigError("give the audio to pretrain on: --data FOLDER [FOLDER ...]")
        res = start_pretraining(config, a.overrides, a.data, a.out, resume=a.resume, argv=sys.argv)
        last = res.history[-1]["train_loss"] if res.history else float("nan")
        print(f"pretrain run {res.run_dir}: {res.files} files ({res.hours:.2f} h), {res.epoch} epochs, {res.step} "
              f"steps in {res.seconds:.0f} s; last epoch loss {last:.4f}")
        return 0

    p.set_defaults(func=run)

# --- end pretrain ---------------------------------------------------------------------------------


# --- issue 14: embed, export (ONNX) ---------------------------------------------------------


def _cmd_embed(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("embed", help="per-song and per-chunk embeddings (forward_features) of audio, as .npz",
                       description="Write the backbone's pooled features of every chunk of every file, their "
                                   "start times and the per-song means to a .npz (keys: files, song, chunks, "
                                   "chunk_file, chunk_start_s, chunk_seconds, run_dir, skipped_files, "
                                   "skipped_reasons). Unreadable files are reported and skipped; the exit code is "
                                   "non-zero only if nothing could be embedded.")
    p.add_argument("run_dir", metavar="RUN_DIR")
    p.add_argument("audio", metavar="AUDIO", nargs="+", help="audio files or folders")
    p.add_argument("--out", required=True, metavar="FILE.npz", help="output file")
    p.add_argument("--force", action="store_true", help="overwrite an existing --out file")
    p.add_argument("--batch-size", type=int, default=16, help="chunks per forward pass")
    p.add_argument("--hop-seconds", type=float, default=None, help="chunk hop (default: the run's eval hop)")
    p.add_argument("--which", default="best", choices=["best", "last"])
    p.add_argument("--device", default="cpu")

    def run(a: argparse.Namespace) -> int:
        from deam_mamba.inference.embed import NPZ, embed_paths, write_embeddings
        from deam_mamba.inference.files import check_output_path

        if a.hop_seconds is not None and not a.hop_seconds > 0:
            raise ConfigError(f"--hop-seconds must be > 0, got {a.hop_seconds}")
        check_output_path(a.out, force=a.force, formats=NPZ)  # fail before any work
        res = embed_paths(a.run_dir, a.audio, which=a.which, device=a.device, batch_size=a.batch_size,
                          hop_seconds=a.hop_seconds)
        for s in res.skipped:
            print(f"deam-mamba embed: skipped {s['path']}: {s['reason']}", file=sys.stderr)
        if not res.embeddings:
            print("deam-mamba embed: nothing could be embedded; no file written", file=sys.stderr)
            return 1
        write_embeddings(res, a.out, force=a.force)
        n_chunks = sum(len(e.chunks) for e in res.embeddings)
        print(f"{len(res.embeddings)} song(s), {n_chunks} chunk(s) of {res.chunk_seconds:g} s, "
              f"dim {res.embeddings[0].dim}, {len(res.skipped)} skipped -> {a.out}")
        return 0

    p.set_defaults(func=run)


def _cmd_export(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("export", help="export a run's network to ONNX (for predict --backend onnx)",
                       description="Write the network of RUN_DIR as ONNX: normalised log-mel chunks [B, 1, n_mels, "
                                   "frames] (dynamic batch, frames fixed by the run) -> raw outputs and embeddings. "
                                   "The run config digest, normalisation and mode are stored in the file's "
                                   "metadata; use it with `deam-mamba predict RUN_DIR --backend onnx --onnx FILE`.")
    p.add_argument("run_dir", metavar="RUN_DIR")
    p.add_argument("--onnx", required=True, metavar="MODEL.onnx", help="output file")
    p.add_argument("--which", default="best", choices=["best", "last"])
    p.add_argument("--force", action="store_true", help="overwrite an existing file")

    def run(a: argparse.Namespace) -> int:
        from deam_mamba.inference.export import export_onnx

        info = export_onnx(a.run_dir, a.onnx, which=a.which, force=a.force)
        print(f"exported {info['model_name']} ({info['mode']}, {info['which']} checkpoint, step {info['step']}; "
              f"chunks [B, 1, {info['n_mels']}, {info['chunk_frames']}]) -> {info['path']}")
        return 0

    p.set_defaults(func=run)


# --- end of issue 14 block -----------------------------------------------------------------

# (each helper adds its _cmd_* function above this line)

def _cmd_crossval(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("crossval", help="k-fold cross-validation of a config (artist-disjoint by default)",
                       description="Train and evaluate one run per fold (data.split=kfold) and report per-fold and "
                                   "mean ± std metrics. --protocol artist: stratified, artist-disjoint folds; "
                                   "random: the literature's stratified random folds (an artist's songs can fall "
                                   "on both sides). Resumable: finished folds are reused.")
    p.add_argument("--config", required=True, help="YAML config (e.g. configs/real_4q.yaml)")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="config overrides for every fold")
    p.add_argument("--folds", type=int, default=5)
    p.add_argument("--protocol", default="artist", choices=["artist", "random"])
    p.add_argument("--seed", type=int, default=None, help="split seed (default: the config's data.split_seed)")
    p.add_argument("--out", default="crossval_out", help="output folder (fold<i>/ runs, crossval.md/.json)")
    p.add_argument("--bootstrap", type=int, default=1000)
    p.add_argument("--force", action="store_true", help="rewrite the summary of a finished cross-validation")
    p.add_argument("--only-folds", default=None, metavar="I,J,...",
                   help="train and summarise only these folds (0-based; e.g. 0,1,2) into crossval_partial.md; "
                        "a later run without it reuses them")

    def run(a: argparse.Namespace) -> int:
        from deam_mamba.experiments.crossval import run_crossval, summary_lines, table_path

        if a.folds < 2:
            raise ConfigError(f"--folds must be at least 2, got {a.folds}")
        only = None
        if a.only_folds is not None:
            try:
                only = [int(x) for x in a.only_folds.split(",") if x.strip()]
            except ValueError:
                raise ConfigError(f"--only-folds {a.only_folds!r}: give fold numbers separated by commas, "
                                  "e.g. 0,1,2") from None
        s = run_crossval(a.config, a.overrides, out_dir=a.out, folds=a.folds, protocol=a.protocol, seed=a.seed,
                         bootstrap=a.bootstrap, force=a.force, only=only)
        print("\n".join(summary_lines(s)))
        print(f"table: {table_path(a.out, s)}")
        return 0

    p.set_defaults(func=run)


# --- serve (issue 14: the local web page and JSON API) -------------------------------------


def _cmd_serve(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("serve", help="a local web page and JSON API: drop audio files, see valence/arousal",
                       description="Serve RUN_DIR on http://HOST:PORT/: a web page (drop or choose audio files; "
                                   "valence/arousal, quadrant, the valence-arousal plane, 2 Hz curves, songs side by "
                                   "side, CSV/JSON download) and a JSON API (POST /api/predict with a multipart "
                                   "field 'file', GET /api/health; OpenAPI at /openapi.json). Uploads are deleted "
                                   "as soon as they are answered. Loopback only unless --host says otherwise.")
    p.add_argument("run_dir", metavar="RUN_DIR")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine "
                                                       "only; 0.0.0.0 opens it to the network)")
    p.add_argument("--port", type=int, default=8000, help="TCP port (default 8000; 0: any free port)")
    p.add_argument("--which", default="best", choices=["best", "last"], help="checkpoint to serve")
    p.add_argument("--max-upload-mb", type=float, default=100.0, help="largest upload accepted, in MB (default 100)")
    p.add_argument("--device", default="cpu")

    def run(a: argparse.Namespace) -> int:
        from deam_mamba.serve.server import serve

        def announce(url: str) -> None:
            print(f"deam-mamba serve: {a.run_dir} on {url} (Ctrl-C to stop)", flush=True)

        serve(a.run_dir, host=a.host, port=a.port, which=a.which, max_upload_mb=a.max_upload_mb, device=a.device,
              announce=announce)
        return 0

    p.set_defaults(func=run)

# --- end of serve ---------------------------------------------------------------------------


COMMANDS: list[Callable[[argparse._SubParsersAction], None]] = [
    _cmd_prepare,
    _cmd_train,
    _cmd_info,
    _cmd_synth,
    _cmd_evaluate,
    _cmd_predict,
    _cmd_compare,
    _cmd_crossval,
    _cmd_serve,  # issue 14 (serve)
    _cmd_pretrain,
    _cmd_embed,  # issue 14
    _cmd_export,  # issue 14
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="deam-mamba",
        description="Train and serve MambaVision models that predict music emotion (DEAM valence/arousal).",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in COMMANDS:
        add(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra:  # key=value overrides may come anywhere on the line, after options too
        if hasattr(args, "overrides") and all("=" in e and not e.startswith("-") for e in extra):
            args.overrides = list(args.overrides) + extra
        else:
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(levelname)s %(name)s: %(message)s",
    )
    if not sys.stderr.isatty():  # a log file, not a terminal: a progress line every 30 s, not 10 a second
        os.environ.setdefault("TQDM_MININTERVAL", str(PROGRESS_INTERVAL_NOT_A_TTY_S))
    tune_malloc()  # before any tensor work (see deam_mamba.core.runtime; DEAM_MAMBA_MALLOC_TUNE=0 turns it off)
    try:
        return int(args.func(args) or 0)
    except DeamError as exc:
        print(f"deam-mamba {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # a file-system fault no check foresaw: still one line naming the file, no traceback
        print(f"deam-mamba {args.command}: error: {describe_os_error(exc)}", file=sys.stderr)
        logging.getLogger(__name__).debug("OS error", exc_info=True)
        return 2
    except KeyboardInterrupt:
        print(f"deam-mamba {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # python -m deam_mamba.cli
    sys.exit(main())
