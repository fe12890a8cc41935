"""Resynthesis quality of a neural vocoder versus 32-iteration Griffin-Lim (or another vocoder) on held-out utterances.

    python benchmarks/vocoder_quality.py --data prepared/ --vocoder runs/vocoder/best
    python benchmarks/vocoder_quality.py --data data/mini/prepared_unseen --every-utterance \
        --vocoder exp/mini/vocoder_gan/best --consistency-iters 0 --baseline voiceconv/pretrained/vocoder

Each held-out utterance's log-mel (from the prepared cache) is decoded by both vocoders and
compared with the recording with :func:`voiceconv.vocoder.quality.log_mel_l1` and
:func:`~voiceconv.vocoder.quality.multi_resolution_stft_distance` (lower is better) and, when the
``pesq`` package is installed, wide-band PESQ (:func:`~voiceconv.vocoder.quality.pesq_wideband`,
higher is better). It also prints the frame-rate "buzz" of each output and of the recording
(:func:`~voiceconv.vocoder.quality.frame_rate_modulation_db`, dB; the recording's level is normal). The held-out
utterances are the ones ``voiceconv train-vocoder`` validates on when ``--n-utterances`` and
``--seed`` equal the run's ``train.n_val_utterances`` and ``train.seed`` (defaults: 8 and 0);
``--every-utterance`` takes all of them instead (for a folder of unseen speakers, where nothing was trained).
``--baseline DIR`` compares against another trained vocoder (a candidate against the shipped one) instead of
Griffin-Lim, ``--consistency-iters N`` decodes the candidate with N phase-refinement iterations and
``--dtype`` in the given precision. ``--words`` also transcribes the recording and both outputs with the
evaluation's recogniser (pocketsphinx, the ``[eval]`` extra) and prints each vocoder's WER against the
recording's own transcript: the words that resynthesis alone loses, which ``voiceconv evaluate``'s
resynthesis row reports for the neural vocoder on its pairs.
"""

from __future__ import annotations

import argparse
import logging
import time

import numpy as np
import torch

from voiceconv.training.data import PreparedCorpus
from voiceconv.training.vocoder_trainer import split_validation
from voiceconv.vocoder.model import Vocoder
from voiceconv.vocoder.quality import (
    frame_rate_modulation_db,
    log_mel_l1,
    multi_resolution_stft_distance,
    pesq_wideband,
)


def pesq_available() -> bool:
    try:
        import pesq  # noqa: F401
    except ImportError:
        return False
    return True


def set_consistency_iters(vocoder: Vocoder, n_iter: int) -> None:
    """Decode an iSTFT vocoder with ``n_iter`` phase-refinement iterations (they have no weights)."""
    config = getattr(vocoder.generator, "config", None)
    if not hasattr(config, "consistency_iters"):
        raise SystemExit("--consistency-iters applies to an iSTFT vocoder only")
    config.consistency_iters = n_iter


def describe(vocoder: Vocoder) -> str:
    """``istft, 24 refinement iterations`` or the generator's name."""
    iters = getattr(getattr(vocoder.generator, "config", None), "consistency_iters", None)
    return vocoder.config.generator + (f", {iters} refinement iterations" if iters is not None else "")


def word_counter():
    """``(reference, output, rate) -> (errors, words)``: pocketsphinx on both at its 16 kHz, the recording's
    transcript as the reference (so a perfect resynthesis scores 0 errors)."""
    import librosa

    from voiceconv.evaluation.judges import EVAL_RATE, AsrJudge
    from voiceconv.evaluation.metrics import word_errors

    judge = AsrJudge()  # raises a clear error naming the [eval] extra when pocketsphinx is missing

    def count(reference: np.ndarray, output: np.ndarray, rate: int) -> tuple[int, int]:
        heard = [judge.transcribe(librosa.resample(torch.as_tensor(x).float().reshape(-1).numpy(), orig_sr=rate,
                                                   target_sr=EVAL_RATE)) for x in (reference, output)]
        return word_errors(*heard)

    return count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", required=True, help="prepared directory (voiceconv prepare)")
    parser.add_argument("--vocoder", required=True, help="neural vocoder directory (model.safetensors + config.json)")
    parser.add_argument("--n-utterances", type=int, default=8, help="held-out utterances (train.n_val_utterances)")
    parser.add_argument("--seed", type=int, default=0, help="split seed (train.seed)")
    parser.add_argument("--max-frames", type=int, default=1024, help="cut each utterance to this many frames")
    parser.add_argument("--griffin-lim-iters", type=int, default=32, help="Griffin-Lim iterations of the baseline")
    parser.add_argument("--baseline", default="griffin-lim",
                        help="griffin-lim, or a trained vocoder directory to compare against (default: griffin-lim)")
    parser.add_argument("--consistency-iters", type=int, default=None, metavar="N",
                        help="decode the (iSTFT) candidate with N phase-refinement iterations (default: its own)")
    parser.add_argument("--dtype", choices=["default", "float32", "bfloat16"], default="default",
                        help="the candidate's decoding dtype (default: its config's inference_dtype where native)")
    parser.add_argument("--every-utterance", action="store_true",
                        help="every utterance of --data, not a held-out split (a folder of unseen speakers)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--words", action="store_true",
                        help="also the WER of each output against the recording's own pocketsphinx transcript")
    args = parser.parse_args()
    logging.getLogger("voiceconv").setLevel(logging.ERROR)  # the Griffin-Lim warning is expected here
    if args.threads:
        torch.set_num_threads(args.threads)

    corpus = PreparedCorpus(args.data)
    neural = Vocoder.from_pretrained(args.vocoder, device="cpu")
    corpus.mel_config.check_compatible(neural.mel_config, "prepared data", "vocoder")
    if args.consistency_iters is not None:
        set_consistency_iters(neural, args.consistency_iters)
    dtype = {"default": None, "float32": torch.float32, "bfloat16": torch.bfloat16}[args.dtype]
    if args.baseline == "griffin-lim":
        baseline = Vocoder.griffin_lim(corpus.mel_config, n_iter=args.griffin_lim_iters, device="cpu")
        baseline_name = f"Griffin-Lim, {args.griffin_lim_iters} iterations"
    else:
        baseline = Vocoder.from_pretrained(args.baseline, device="cpu")
        corpus.mel_config.check_compatible(baseline.mel_config, "prepared data", "baseline vocoder")
        baseline_name = f"{args.baseline} ({describe(baseline)})"
    if args.every_utterance:
        held_out = list(range(len(corpus)))
    else:
        _, held_out = split_validation(corpus, args.n_utterances, args.seed)
    print(f"{len(held_out)} held-out utterances from {args.data}; neural: {args.vocoder} "
          f"({describe(neural)}, {neural.n_parameters() / 1e6:.2f} M parameters); "
          f"baseline: {baseline_name}")
    recognizer = word_counter() if args.words else None
    word_totals = {"neural": [0, 0], "baseline": [0, 0]}  # errors, reference words
    with_pesq = pesq_available()
    if not with_pesq:
        print("pesq is not installed (pip install -e '.[eval]'): PESQ columns left out")
    rows = {"neural": [], "baseline": []}
    seconds = {"neural": 0.0, "baseline": 0.0}
    buzz = {"recording": [], "neural": [], "baseline": []}
    sample_rate, hop_length = corpus.mel_config.sample_rate, corpus.mel_config.hop_length
    audio_seconds = 0.0
    print(f"{'utterance':<40}{'mel L1 neural':>15}{'mel L1 base':>12}{'MR-STFT neural':>16}{'MR-STFT base':>13}"
          + (f"{'PESQ neural':>13}{'PESQ base':>10}" if with_pesq else ""))
    for index in held_out:
        n_frames = min(corpus.utterances[index].n_frames, args.max_frames)
        mel = torch.from_numpy(corpus.mel(index, 0, n_frames))  # (n_mels, T)
        reference = corpus.audio(index, 0, n_frames)  # (T * hop,)
        audio_seconds += len(reference) / corpus.mel_config.sample_rate
        scores = {}
        for name, vocoder in (("neural", neural), ("baseline", baseline)):
            start = time.perf_counter()
            output = vocoder.decode(mel, dtype=dtype if name == "neural" else None)
            seconds[name] += time.perf_counter() - start
            scores[name] = (log_mel_l1(reference, output, corpus.mel_config),
                            multi_resolution_stft_distance(reference, output))
            if with_pesq:
                scores[name] += (pesq_wideband(reference, output, corpus.mel_config.sample_rate),)
            rows[name].append(scores[name])
            buzz[name].append(frame_rate_modulation_db(output, sample_rate, hop_length))
            if recognizer is not None:
                errors, words = recognizer(reference, output, sample_rate)
                word_totals[name][0] += errors
                word_totals[name][1] += words
        buzz["recording"].append(frame_rate_modulation_db(reference, sample_rate, hop_length))
        print(f"{corpus.utterances[index].utterance_id[:39]:<40}{scores['neural'][0]:>15.4f}"
              f"{scores['baseline'][0]:>12.4f}{scores['neural'][1]:>16.4f}{scores['baseline'][1]:>13.4f}"
              + (f"{scores['neural'][2]:>13.3f}{scores['baseline'][2]:>10.3f}" if with_pesq else ""))
    means = {name: np.mean(values, axis=0) for name, values in rows.items()}
    print(f"{'mean':<40}{means['neural'][0]:>15.4f}{means['baseline'][0]:>12.4f}"
          f"{means['neural'][1]:>16.4f}{means['baseline'][1]:>13.4f}"
          + (f"{means['neural'][2]:>13.3f}{means['baseline'][2]:>10.3f}" if with_pesq else ""))
    print("frame-rate buzz (dB over 50-130 Hz, mean): " + ", ".join(
        f"{name} {np.mean(values):.1f}" for name, values in buzz.items()))
    if recognizer is not None:
        print("WER against the recording's own pocketsphinx transcript: " + ", ".join(
            f"{name} {errors / max(words, 1):.3f} ({errors} of {words} words)"
            for name, (errors, words) in word_totals.items()))
    print(f"RTF: neural {seconds['neural'] / audio_seconds:.4f}, "
          f"baseline {seconds['baseline'] / audio_seconds:.4f}")
    better = means["neural"] < means["baseline"]
    neural_rows, baseline_rows = np.array(rows["neural"]), np.array(rows["baseline"])  # (utterances, measures)
    wins = (neural_rows < baseline_rows).sum(axis=0)  # log-mel L1 and MR-STFT: lower is better
    pesq_wins = f", PESQ {(neural_rows[:, 2] > baseline_rows[:, 2]).sum()}" if with_pesq else ""
    print(f"utterances where the neural vocoder is better: log-mel L1 {wins[0]}, MR-STFT {wins[1]}{pesq_wins} "
          f"of {len(held_out)}")
    print(f"neural vocoder beats the baseline on log-mel L1: {'yes' if better[0] else 'NO'}, "
          f"on multi-resolution STFT distance: {'yes' if better[1] else 'NO'}"
          + (f", on PESQ: {'yes' if means['neural'][2] > means['baseline'][2] else 'NO'}" if with_pesq else ""))


if __name__ == "__main__":
    main()
