"""Linear probe of pretraining checkpoints on the 4Q artist folds: what a frozen backbone knows, against pretraining.

For each checkpoint (a ``deam-mamba pretrain`` checkpoint file, a run folder, or ``random`` = a fresh
initialisation with the same seed) the backbone of ``--model`` is loaded (backbone tensors only, as ``model.init``
does), frozen, and embeds every 4Q clip: the clip's log-mel from the project's feature cache (``--cache``,
``deam-mamba prepare``), normalised per band with the statistics of all clips (audio only, labels unused), cut
into ``--chunk-seconds`` chunks every ``--hop-seconds``; ``forward_features`` per chunk, then mean and std over the
clip's chunks -> ``[2 * num_features]``. A logistic regression (StandardScaler, class_weight balanced, C by
artist-grouped inner folds, macro-F1) is fitted on each fold's training clips and scored on its test clips: the
same artist-disjoint 5 folds as ``bench_real_4q.py`` (imported from it), so the numbers line up with its table.

``--distill-outputs NAME=RUN`` probes a ``pretrain.objective=distill`` network through its distillation head (its
per-chunk predictions of the teacher's embedding + tags, pooled the same way); ``--reference musicnn_msd`` probes the
teacher's own features (``bench_real_4q.py``'s cache) on the same clips and folds, the ceiling distillation aims at.
``--combine NAME=A+B`` probes the concatenation of the features of jobs ``A`` and ``B`` of this run (checkpoint or
distill names, ``ref:FEATURE_SET``), e.g. a distilled backbone beside handcrafted features or a second teacher.

The F1 of a linear probe is a cheap stand-in for the curve "F1 against pretraining time": fine-tuning every
checkpoint on 5 folds costs ~70 CPU minutes each. Results: ``--out`` (JSON, merged by checkpoint name) + ``.md``.

    .venv/bin/python bench/bench_pretrain_probe.py --cache /work/cache/4q \\
        --checkpoint random=random --checkpoint step400=RUN/checkpoints/step00000400.safetensors --checkpoint final=RUN
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "bench"))

import bench_real_4q as b4  # noqa: E402
import torch  # noqa: E402
from sklearn.exceptions import ConvergenceWarning  # noqa: E402
from sklearn.linear_model import LogisticRegression  # noqa: E402
from sklearn.model_selection import GridSearchCV, StratifiedGroupKFold  # noqa: E402
from sklearn.pipeline import Pipeline  # noqa: E402
from sklearn.preprocessing import StandardScaler  # noqa: E402

from deam_mamba.config.load import config_from_dict  # noqa: E402
from deam_mamba.core.io import atomic_write_json  # noqa: E402
from deam_mamba.evaluation.quadrants import axis_scores  # noqa: E402
from deam_mamba.features.cache import FeatureCache  # noqa: E402
from deam_mamba.features.chunks import make_chunks  # noqa: E402
from deam_mamba.features.logmel import compute_norm_stats  # noqa: E402
from deam_mamba.models.finetune import load_backbone_tensors  # noqa: E402
from deam_mamba.models.pretrain import build_pretrain_model  # noqa: E402
from deam_mamba.models.registry import create_model  # noqa: E402
from deam_mamba.runs import checkpoint as ck  # noqa: E402
from deam_mamba.train.finetune import resolve_init  # noqa: E402

C_GRID = [0.001, 0.01, 0.1, 1.0]


class DistillOutputs(torch.nn.Module):
    """A distillation-pretrained network whose ``forward_features`` is its predicted teacher vector per chunk."""

    def __init__(self, net: torch.nn.Module):
        super().__init__()
        self.net = net

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:  # [B, 1, M, T] -> [B, teacher dim]
        return self.net.distill(x)


def load_distill_outputs(source: str) -> tuple[torch.nn.Module, dict[str, Any]]:
    """The whole pretraining network of a ``pretrain.objective=distill`` run or checkpoint, frozen, as a
    :class:`DistillOutputs` (its predictions of the teacher's embedding + tags)."""
    weights, cfg_data = resolve_init(source)
    tensors, meta = ck.read_weights(weights)
    heads = sorted(k for k in tensors if k.startswith("distill_head.") and k.endswith(".weight"))
    if not heads or cfg_data is None:
        raise SystemExit(f"{weights}: not a distillation checkpoint with its config (needs distill_head.* tensors)")
    net = build_pretrain_model(config_from_dict(cfg_data), distill_dim=tensors[heads[-1]].shape[0])
    net.load_state_dict(tensors)
    return DistillOutputs(net).eval(), {"source": source, "file": str(weights), "outputs": "distill head",
                                        "step": int(meta["step"]) if meta.get("step") else None}


def load_backbone(model_name: str, source: str, seed: int) -> tuple[torch.nn.Module, dict[str, Any]]:
    """A frozen ``model_name`` backbone (no head) with the weights of ``source`` (``random``: fresh, seeded)."""
    torch.manual_seed(seed)
    model = create_model(model_name, num_classes=0, drop_path_rate=0.0)
    info: dict[str, Any] = {"source": source}
    if source != "random":
        weights, _ = resolve_init(source)
        tensors, meta = ck.read_weights(weights)
        rep = load_backbone_tensors(model, tensors, source=str(weights))
        info.update(file=str(weights), step=int(meta.get("step", -1)) if meta.get("step") else None,
                    loaded=len(rep.loaded), kept_new=len(rep.kept_new))
        if rep.kept_new:
            raise SystemExit(f"{weights}: {len(rep.kept_new)} backbone tensors did not load ({rep.kept_new[:3]}): "
                             "not a checkpoint of this model")
    return model.eval(), info


@torch.no_grad()
def embed_clips(model: torch.nn.Module, cache: FeatureCache, ids: list[int], chunk_s: float, hop_s: float,
                batch: int = 64) -> np.ndarray:
    """``[N, 2 * D]``: mean and std over each clip's chunks of ``forward_features`` (normalised log-mel chunks)."""
    fps = cache.frames_per_second
    cf, hf = int(round(chunk_s * fps)), int(round(hop_s * fps))
    norm = compute_norm_stats(cache.features(i) for i in ids)
    out = []
    for sid in ids:
        x = torch.from_numpy(np.asarray(norm.apply(cache.features(sid)), dtype=np.float32))
        chunks = make_chunks(x, cf, hf)[0]  # [n, 1, n_mels, cf]
        f = torch.cat([model.forward_features(chunks[i:i + batch]) for i in range(0, len(chunks), batch)])
        out.append(torch.cat([f.mean(0), f.std(0, unbiased=False)]).numpy())
    return np.stack(out)


def run_probe(d: b4.FoldData, key: str) -> b4.FoldOutput:
    """Logistic regression on the embeddings of one fold (C on artist-grouped inner folds)."""
    X, y = d.features[key], d.quadrants
    lr = LogisticRegression(class_weight="balanced", max_iter=3000)
    inner = StratifiedGroupKFold(b4.INNER_FOLDS, shuffle=True, random_state=d.seed)
    grid = GridSearchCV(Pipeline([("scale", StandardScaler()), ("lr", lr)]), {"lr__C": C_GRID}, scoring="f1_macro",
                        cv=inner, n_jobs=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        grid.fit(X[d.train_idx], y[d.train_idx], groups=d.inner_groups)
    proba = grid.predict_proba(X[d.test_idx])
    v, a = axis_scores(proba, grid.classes_)
    return b4.FoldOutput(grid.predict(X[d.test_idx]).astype(np.int64), v, a,
                         {"C": float(grid.best_params_["lr__C"])})


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--root", type=Path, default=b4.DEFAULT_ROOT, help="4Q dataset folder")
    ap.add_argument("--cache", type=Path, required=True, help="deam-mamba feature cache of the 4Q clips "
                    "(deam-mamba prepare --data ROOT --cache DIR; 128 mels as the pretraining config)")
    ap.add_argument("--checkpoint", action="append", default=[], metavar="NAME=SOURCE",
                    help="pretraining checkpoint file or run folder, or 'random' (repeatable)")
    ap.add_argument("--distill-outputs", action="append", default=[], metavar="NAME=SOURCE",
                    help="a distillation checkpoint or run probed through its distillation head: the predicted "
                         "teacher vectors instead of the backbone features (repeatable)")
    ap.add_argument("--reference", action="append", default=[], metavar="FEATURE_SET",
                    help=f"also probe a bench_real_4q feature set on the same clips ({', '.join(b4.FEATURE_SETS)}; "
                         "from its --work cache), e.g. musicnn_msd = the teacher itself (repeatable)")
    ap.add_argument("--combine", action="append", default=[], metavar="NAME=A+B[+...]",
                    help="also probe the concatenated features of jobs of this run, by name (ref:SET for a "
                         "--reference), e.g. both=straight24+ref:handcrafted (repeatable)")
    ap.add_argument("--work", type=Path, default=ROOT / "bench" / "_work", help="bench_real_4q's feature caches")
    ap.add_argument("--model", default="mambavision_audio")
    ap.add_argument("--chunk-seconds", type=float, default=4.0)
    ap.add_argument("--hop-seconds", type=float, default=2.0)
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--limit", type=int, default=0, help="smoke run: only the first N clips of each quadrant")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "pretrain_probe.json")
    args = ap.parse_args()
    if unknown := [r for r in args.reference if r not in b4.FEATURE_SETS]:
        ap.error(f"unknown --reference {unknown}; known: {', '.join(b4.FEATURE_SETS)}")
    if not (args.checkpoint or args.distill_outputs or args.reference):
        ap.error("nothing to probe: give --checkpoint, --distill-outputs or --reference")
    jobs = [("backbone", p) for p in args.checkpoint] + [("distill", p) for p in args.distill_outputs] + \
        [("reference", f"ref:{r}={r}") for r in args.reference]
    job_names = [pair.partition("=")[0] for _, pair in jobs]
    combos = []
    for c in args.combine:
        name, _, joined = c.partition("=")
        parts = joined.split("+")
        bad = [x for x in parts if x not in job_names]
        if not name or len(parts) < 2 or bad:
            ap.error(f"--combine {c!r}: expected NAME=A+B with A, B among this run's jobs {job_names}"
                     + (f" (unknown: {bad})" if bad else ""))
        combos.append((name, parts))
    if args.threads:
        torch.set_num_threads(args.threads)
    if not args.root.is_dir():
        print(f"4Q dataset not found at {args.root}: nothing to benchmark (see --root)")
        return 0
    songs = b4.load_songs(args.root.resolve(), args.limit)
    proto = b4.make_protocol(songs, "artist", args.folds, args.seed)
    cache = FeatureCache(args.cache)
    ids = [int(i) for i in songs.ids]
    missing = [i for i in ids if i not in cache]
    if missing:
        raise SystemExit(f"{args.cache}: {len(missing)} of the {len(ids)} clips are not in the cache (e.g. "
                         f"{missing[:3]}): run deam-mamba prepare --data {args.root} --cache {args.cache}")
    load = os.getloadavg()
    started = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    results: dict[str, Any] = {}
    embeddings: dict[str, np.ndarray] = {}
    for kind, pair in jobs + [("combine", f"{n}={'+'.join(parts)}") for n, parts in combos]:
        name, _, source = pair.partition("=")
        t0 = time.perf_counter()
        if kind == "reference":  # a feature set as bench_real_4q computes it (NaN rows: clips it failed on)
            emb = b4.load_features(source, songs, args.work.resolve(), workers=2)["X"]
            info: dict[str, Any] = {"source": f"bench_real_4q {source}: {b4.FEATURE_SETS[source].description}"}
        elif kind == "combine":  # the features of earlier jobs side by side (each block standardised by the probe)
            emb = np.concatenate([embeddings[p] for p in source.split("+")], axis=1)
            info = {"source": f"concatenation of {source.replace('+', ' + ')}"}
        else:
            model, info = (load_distill_outputs(source) if kind == "distill"
                           else load_backbone(args.model, source, args.seed))
            emb = embed_clips(model, cache, ids, args.chunk_seconds, args.hop_seconds)
        embed_s = time.perf_counter() - t0
        embeddings[name] = emb
        keep = ~np.isnan(emb).any(axis=1)
        key = f"emb_{name}"
        probe = b4.Model((key,), lambda d, k=key: run_probe(d, k), "linear probe")
        r = b4.run_protocol(probe, proto, songs, {key: emb}, keep, args.seed, ROOT / "bench" / "_work", name)
        s = r["summary"]
        print(f"{name}: macro-F1 {s['macro_f1']['mean']:.3f} +- {s['macro_f1']['std']:.3f}, valence AUC "
              f"{s['valence_auc']['mean']:.3f}, arousal AUC {s['arousal_auc']['mean']:.3f} (embed {embed_s:.0f} s)",
              flush=True)
        results[name] = {**info, "embed_s": embed_s, "dim": int(emb.shape[1]), "summary": s,
                         "per_fold": r["per_fold"], "pooled_out_of_fold": r["pooled_out_of_fold"],
                         "folds_sha1": r["folds_sha1"]}
    old = json.loads(args.out.read_text()) if args.out.is_file() else {}
    merged = {"benchmark": "linear probe of frozen backbones on the 4Q artist-disjoint folds", "model": args.model,
              "chunk_seconds": args.chunk_seconds, "hop_seconds": args.hop_seconds,
              "probe": f"StandardScaler + LogisticRegression(class_weight=balanced), C in {C_GRID} by "
                       f"{b4.INNER_FOLDS} artist-grouped inner folds (macro-F1)",
              "checkpoints": {**old.get("checkpoints", {}), **results},
              "last_run": {"date": started, "load_average_start": list(load), "load_average_end": list(os.getloadavg()),
                           "torch_threads": torch.get_num_threads(), "command": " ".join(sys.argv)}}
    atomic_write_json(args.out, merged)
    print(b4.write_score_table(args.out.with_suffix(".md"), ["checkpoint", "step"],
                               [([name, str(r.get("step") or "-")], r["summary"])
                                for name, r in merged["checkpoints"].items()]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
