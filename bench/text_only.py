"""KEBR under the config's defaults against the text-only baseline, on a corpus whose audio and video
carry no sentiment (issue 15, item 6).

    python bench/text_only.py [--seeds 0 1 2] [--epochs N] [--videos 30] [--clips-per-video 4]
                              [--set model.dropout=0.1 ...] [--out bench/results/text_only.json]
    python bench/text_only.py --merge A.json B.json [--out C.json]   # other seeds' runs, compared as one

The corpus. Every clip shows ONE face video (the demo's photograph with the demo's head motion, one
fixed take; kebr/demo/corpus.py) and speaks one sentence with eSpeak NG (kebr/demo/tts.py, offline), one
voice, rate and pitch per video as in the demo. The sentences are "<opening> the <noun> was
<degree> <adjective>": the label is the adjective's VADER valence scaled to the MOSI range
(kebr.masking.lexicon_label) times the degree's factor ("a bit" 0.5, none 1, "extremely" 1.5), clipped
to [-3, 3]; adjectives outside VADER ("long", "quiet", ...) give 0. So the text holds all of the
label, the speech carries it only as words (TTS has no affect), and the video carries nothing:
every clip's frames are the same take, cut at the clip's length. Videos are split as MOSI's are
(disjoint by video: 20% test, 20% valid, the rest train), and a second set of videos, written the
same way, is the unlabelled pretraining corpus.

The features are the pipeline's own extractors, in process: the audio's librosa33 frames
(kebr.features.audio) of each clip's speech, and the mediapipe features (kebr.features.visual) of
the one face video, extracted once (a clip's frames are the take's first frames, and Face Mesh
restarts on each clip, so each clip's features are that extraction's first rows). The Snakemake path
(plan, ASR, features, assemble per clip) reads and decodes every clip again and did not fit the
10-minute budget on 2 cores; it builds the same shard rows.

The runs. Both variants take their recipe from config.yaml through kebr.variants.recipe, with the
settings config.yaml gives its small labelled demo corpus (``datasets.demo_labelled.finetune``:
the config's own values for tens of clips, not the paper's 200 epochs at 5e-6), ``--epochs`` (and
``t_max`` with it) for the time budget. ``full`` is KEBR as the config trains it: pretraining on
the unlabelled set with the demo pretraining settings (``datasets.demo_unlabelled.pretrain``),
then fine-tuning with TCMF and MCC; ``text_only`` the same LM and head with no TCMF, MCC or
pretraining. ``--set key=value`` changes a config key for both (the study of what makes KEBR lose).

Prints per variant the mean±std over seeds of MAE, Acc-7, Acc-2 and F1 (Has0/Non0) and Corr, the
ratio full / text_only of each, whether full ties or beats text_only on each (within one std), the
paired difference over the seeds both ran (mean ± standard error), and one final JSON line; writes
the same JSON to ``--out``. Each seed's runs depend on the seed alone, so runs of other seeds made
by separate invocations merge (``--merge``) into the comparison one invocation would have printed.
"""

from __future__ import annotations

import argparse
import json
import math
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import yaml

REPO = Path(__file__).resolve().parents[1]
METRICS = ("mae", "acc7", "acc2_has0", "acc2_non0", "f1_has0", "f1_non0", "corr")
LOWER_IS_BETTER = {"mae"}

OPENINGS = ("I thought", "Honestly,", "In my opinion", "To be fair,", "My friends said", "I have to say")
NOUNS = ("movie", "acting", "plot", "music", "ending", "script", "cast", "story", "soundtrack", "dialogue",
         "camera work", "second half")
ADJECTIVES = ("horrible", "bad", "terrible", "poor", "sad", "ugly", "stupid", "awful", "disappointing",
              "weak", "painful", "dreadful", "annoying", "dull", "boring", "strange",
              "long", "short", "quiet", "slow", "simple", "different", "predictable", "new",
              "fine", "okay", "nice", "good", "enjoyable", "funny", "clever", "pleasant", "fantastic",
              "excellent", "wonderful", "perfect", "happy", "amazing", "brilliant", "lovely", "charming",
              "beautiful", "great", "superb")
DEGREES = (("a bit ", 0.5), ("", 1.0), ("extremely ", 1.5))
FPS = 25
VIDEO_SECONDS = 10.0  # the one face take; longer than any sentence


def sentence(rng: np.random.Generator, lexicon: dict[str, float]) -> tuple[str, float]:
    """One sentence and its label in [-3, 3] (the module docstring)."""
    from kebr.masking import lexicon_label

    adjective = str(rng.choice(ADJECTIVES))
    degree, factor = DEGREES[int(rng.integers(len(DEGREES)))]
    text = f"{rng.choice(OPENINGS)} the {rng.choice(NOUNS)} was {degree}{adjective}."
    label = float(np.clip(round(lexicon_label(lexicon.get(adjective, 0.0)) * factor, 2), -3.0, 3.0))
    return text, label


def face_video_features(folder: Path, config: dict[str, Any]) -> tuple[np.ndarray, list[str]]:
    """The one face take, written as a real MP4 and run through the config's visual extractor."""
    from skimage import data

    from kebr.clips import Clip
    from kebr.demo.corpus import _PHOTO_REGION, _frames, _new_speaker
    from kebr.features.visual import make_visual_extractor
    from kebr.media import write_clip

    rng = np.random.default_rng(1234)
    photo = data.astronaut()[_PHOTO_REGION].astype(np.float32)
    path = folder / "face.mp4"
    write_clip(path, _frames(int(VIDEO_SECONDS * FPS), _new_speaker(rng), photo, rng), FPS)
    visual = config["visual"]
    extractor = make_visual_extractor(visual["backend"], visual["fps"], visual["max_frames"], visual["require_face"],
                                      threads=1)
    return extractor.extract(Clip("face", video=str(path))), list(extractor.columns)


def build_shard(path: Path, n_videos: int, clips_per_video: int, seed: int, face: np.ndarray,
                visual_columns: list[str], config: dict[str, Any], labelled: bool) -> Path:
    """One shard of ``n_videos`` x ``clips_per_video`` clips (the module docstring)."""
    from kebr.demo.corpus import PAD_S, _new_speaker
    from kebr.features.audio import AudioFeatureExtractor
    from kebr.masking import SentimentMasker, load_tokenizer, load_vader_lexicon
    from kebr.shards import ShardRow, write_shard
    from kebr.demo.tts import synthesize

    import librosa

    rng = np.random.default_rng(seed)
    lexicon = load_vader_lexicon()
    text_config, audio_config, visual_config = config["text"], config["audio"], config["visual"]
    tokenizer = load_tokenizer(text_config["model"])
    masker = SentimentMasker(tokenizer, max_length=text_config["max_length"], window_before=text_config["window_before"],
                             window_after=text_config["window_after"], seed=config["seed"])
    audio = AudioFeatureExtractor(audio_config["feature_sets"], audio_config["sample_rate"], audio_config["hop_length"],
                                  audio_config["max_frames"])
    n_held_out = max(2, round(0.2 * n_videos))
    modes = ["test"] * n_held_out + ["valid"] * n_held_out + ["train"] * (n_videos - 2 * n_held_out)
    modes = [modes[i] for i in rng.permutation(n_videos)] if labelled else ["train"] * n_videos
    transcript = {"source": "gold", "avg_logprob": 0.0, "no_speech_prob": 0.0, "language_prob": 1.0,
                  "language": "en", "words": []}
    rows = []
    for v, mode in enumerate(modes):
        speaker = _new_speaker(rng)
        for c in range(clips_per_video):
            text, label = sentence(rng, lexicon)
            speech, rate = synthesize(text, speaker.voice, speaker.rate, speaker.pitch)
            pad = np.zeros(int(PAD_S * rate), dtype=np.float32)
            wave = librosa.resample(np.concatenate([pad, speech, pad]), orig_sr=rate,
                                    target_sr=audio_config["sample_rate"], res_type="soxr_hq")
            seconds = len(wave) / audio_config["sample_rate"]
            n_visual = min(len(face), max(1, math.ceil(seconds * visual_config["fps"])))
            clip_id = f"video{v:02d}__{c + 1}"
            rows.append(ShardRow(clip_id, mode, f"video{v:02d}", label if labelled else None, transcript,
                                 masker(text, clip_id), audio.from_waveform(wave.astype(np.float32)), face[:n_visual]))
    return write_shard(path, rows, audio_columns=audio.columns, visual_columns=visual_columns,
                       audio_frames=audio_config["max_frames"], visual_frames=visual_config["max_frames"],
                       text_length=text_config["max_length"], tokenizer=tokenizer,
                       attrs={"dataset": path.stem, "text_model": text_config["model"], "shard": "00000"})


def set_key(config: dict[str, Any], dotted: str, value: Any) -> None:
    *parents, last = dotted.split(".")
    node = config
    for part in parents:
        node = node.setdefault(part, {})
    node[last] = value


def run_variant(config: dict[str, Any], variant: str, labelled: Path, unlabelled: Path, seeds: list[int],
                work: Path, epochs: int | None) -> list[dict[str, Any]]:
    from kebr.variants import recipe
    from kebr.model import KEBRConfig
    from kebr.shards import read_attrs
    from kebr.train.finetune import finetune
    from kebr.train.pretrain import pretrain
    from kebr.train.settings import FinetuneSettings, PretrainSettings

    attrs = read_attrs(labelled)
    widths = {"d_audio": len(attrs["audio_columns"]), "d_video": len(attrs["visual_columns"])}
    plan = recipe(config, variant, "demo_labelled")
    state = None
    if plan["uses_pretraining"]:
        settings = PretrainSettings.from_config(recipe(config, variant, "demo_unlabelled")["pretrain"])
        model = KEBRConfig(**widths, freeze_text=settings.freeze_text, **plan["model"])
        state = pretrain([unlabelled], work / f"{variant}-pretrain", model_config=model,
                         settings=replace(settings, device="cpu", save_epochs=()), seed=config["seed"],
                         lm_cache_dir=work / "lm_cache")
    tuning = replace(FinetuneSettings.from_config(plan["finetune"]), device="cpu")
    if epochs is not None:
        tuning = replace(tuning, epochs=epochs, t_max=min(tuning.t_max, epochs))
    model = KEBRConfig(**widths, freeze_text=False, **plan["model"])
    return [finetune([labelled], work / f"{variant}-seed{seed}", model_config=model, pretrained=state,
                     settings=tuning, seed=seed)
            for seed in seeds]


def summary(runs: list[dict[str, Any]]) -> dict[str, list[float]]:
    return {k: [float(np.mean([r[k] for r in runs])), float(np.std([r[k] for r in runs]))] for k in METRICS}


def compare(runs: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    """Per variant the mean±std of each metric over its seeds (``summary``); against text_only, the
    verdict (``wins``: the better mean; ``ties``: the worse mean within the larger std; else ``loses``)
    and the paired difference over the seeds both ran (variant minus text_only, mean and its standard
    error): the seed fixes the split-independent draws both share, so the pairs are the finer test.
    Prints the same."""
    stats = {v: summary(rs) for v, rs in runs.items()}
    for variant, s in stats.items():
        print(f"{variant:>10}: " + " ".join(f"{k} {m:.3f}±{sd:.3f}" for k, (m, sd) in s.items()))
    base = stats.get("text_only")
    verdicts: dict[str, dict[str, str]] = {}
    paired: dict[str, dict[str, list[float]]] = {}
    for variant, s in stats.items():
        if base is None or variant == "text_only":
            continue
        verdicts[variant] = {}
        for k in METRICS:
            better = s[k][0] < base[k][0] if k in LOWER_IS_BETTER else s[k][0] > base[k][0]
            tie = abs(s[k][0] - base[k][0]) <= max(s[k][1], base[k][1])
            verdicts[variant][k] = "wins" if better else "ties" if tie else "loses"
        by_seed = {r["seed"]: r for r in runs["text_only"]}
        pairs = [(r, by_seed[r["seed"]]) for r in runs[variant] if r["seed"] in by_seed]
        if len(pairs) > 1:
            diffs = {k: np.array([a[k] - b[k] for a, b in pairs]) for k in METRICS}
            paired[variant] = {k: [float(d.mean()), float(d.std(ddof=1) / np.sqrt(len(d)))] for k, d in diffs.items()}
        ratio = {k: s[k][0] / base[k][0] if base[k][0] else float("nan") for k in METRICS}
        print(f"{'ratio':>10}: " + " ".join(f"{k} {r:.3f}" for k, r in ratio.items()) + f"  ({variant} / text_only)")
        print(f"{'verdict':>10}: " + " ".join(f"{k} {v}" for k, v in verdicts[variant].items()))
        if variant in paired:
            print(f"{'paired':>10}: " + " ".join(f"{k} {m:+.3f}±{se:.3f}" for k, (m, se) in paired[variant].items())
                  + f"  ({variant} - text_only over {len(pairs)} seeds, ± its standard error)")
    return {"summary": stats, "verdicts": verdicts, "paired": paired}


def merge(files: list[Path]) -> dict[str, Any]:
    """One record of the runs of several earlier ``--out`` files (other seeds of the same corpus and
    changes), compared as one run would be."""
    records = [json.loads(f.read_text()) for f in files]
    keys = ("epochs", "videos", "clips_per_video", "changes")
    if any(tuple(r[k] for k in keys) != tuple(records[0][k] for k in keys) for r in records):
        raise SystemExit(f"--merge: the files differ in {', '.join(keys)}; only other seeds of one setting merge")
    runs: dict[str, list[dict[str, Any]]] = {}
    for r in records:
        for variant, rs in r["runs"].items():
            seen = {x["seed"] for x in runs.get(variant, [])}
            if seen & {x["seed"] for x in rs}:
                raise SystemExit(f"--merge: {variant} has seed(s) {sorted(seen & {x['seed'] for x in rs})} twice")
            runs.setdefault(variant, []).extend(rs)
    seeds = sorted({x["seed"] for rs in runs.values() for x in rs})
    print(f"merged {len(files)} files: seeds {seeds}; changes {records[0]['changes'] or 'none'}")
    return {"seeds": seeds, **{k: records[0][k] for k in keys}, **compare(runs), "runs": runs,
            "merged_from": [str(f) for f in files]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=None, help="fine-tuning epochs (default: the demo's)")
    parser.add_argument("--videos", type=int, default=30)
    parser.add_argument("--clips-per-video", type=int, default=4)
    parser.add_argument("--unlabelled-videos", type=int, default=10)
    parser.add_argument("--variants", nargs="+", default=["full", "text_only"])
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="a config key for every variant, dotted, the value as YAML (model.dropout=0.1)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "text_only.json")
    parser.add_argument("--merge", type=Path, nargs="+", metavar="JSON",
                        help="train nothing: compare the runs of these earlier --out files (other seeds) as one")
    args = parser.parse_args()
    if args.merge:
        record = merge(args.merge)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(record, indent=1) + "\n")
        print(json.dumps(record))
        return

    import torch

    from kebr.config import load_config

    torch.set_num_threads(args.threads)
    config = load_config(REPO / "config.yaml")
    for item in args.set:
        key, _, value = item.partition("=")
        set_key(config, key, yaml.safe_load(value))
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="kebr-text-only-") as tmp:
        work = Path(tmp)
        face, visual_columns = face_video_features(work, config)
        labelled = build_shard(work / "labelled.h5", args.videos, args.clips_per_video, 0, face, visual_columns,
                               config, labelled=True)
        unlabelled = build_shard(work / "unlabelled.h5", args.unlabelled_videos, args.clips_per_video, 1, face,
                                 visual_columns, config, labelled=False)
        corpus_s = time.perf_counter() - start
        results = {v: run_variant(config, v, labelled, unlabelled, args.seeds, work, args.epochs)
                   for v in args.variants}
    print(f"corpus: {args.videos} videos x {args.clips_per_video} clips (one face take, TTS speech), "
          f"built in {corpus_s:.0f} s; seeds {args.seeds}; changes {args.set or 'none'}")
    runs = {v: [{k: r[k] for k in (*METRICS, "best_epoch", "seed", "n_test")} for r in rs] for v, rs in results.items()}
    record = {"seeds": args.seeds, "epochs": args.epochs, "videos": args.videos, "clips_per_video": args.clips_per_video,
              "changes": args.set, **compare(runs), "runs": runs, "seconds": round(time.perf_counter() - start, 1)}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(record, indent=1) + "\n")
    print(json.dumps(record))


if __name__ == "__main__":
    main()
