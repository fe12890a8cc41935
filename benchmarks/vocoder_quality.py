"""Resynthesis quality of a neural vocoder versus 32-iteration Griffin-Lim on held-out utterances.

    python benchmarks/vocoder_quality.py --data prepared/ --vocoder runs/vocoder/best

Each held-out utterance's log-mel (from the prepared cache) is decoded by both vocoders and
compared with the recording with :func:`voiceconv.vocoder.quality.log_mel_l1` and
:func:`~voiceconv.vocoder.quality.multi_resolution_stft_distance` (lower is better) and, when the
``pesq`` package is installed, wide-band PESQ (:func:`~voiceconv.vocoder.quality.pesq_wideband`,
higher is better). It also prints the frame-rate "buzz" of each output and of the recording
(:func:`~voiceconv.vocoder.quality.frame_rate_modulation_db`, dB; the recording's level is normal). The held-out
utterances are the ones ``voiceconv train-vocoder`` validates on when ``--n-utterances`` and
``--seed`` equal the run's ``train.n_val_utterances`` and ``train.seed`` (defaults: 8 and 0).
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", required=True, help="prepared directory (voiceconv prepare)")
    parser.add_argument("--vocoder", required=True, help="neural vocoder directory (model.safetensors + config.json)")
    parser.add_argument("--n-utterances", type=int, default=8, help="held-out utterances (train.n_val_utterances)")
    parser.add_argument("--seed", type=int, default=0, help="split seed (train.seed)")
    parser.add_argument("--max-frames", type=int, default=1024, help="cut each utterance to this many frames")
    parser.add_argument("--griffin-lim-iters", type=int, default=32, help="Griffin-Lim iterations of the baseline")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    args = parser.parse_args()
    logging.getLogger("voiceconv").setLevel(logging.ERROR)  # the Griffin-Lim warning is expected here
    if args.threads:
        torch.set_num_threads(args.threads)

    corpus = PreparedCorpus(args.data)
    neural = Vocoder.from_pretrained(args.vocoder, device="cpu")
    corpus.mel_config.check_compatible(neural.mel_config, "prepared data", "vocoder")
    baseline = Vocoder.griffin_lim(corpus.mel_config, n_iter=args.griffin_lim_iters, device="cpu")
    _, held_out = split_validation(corpus, args.n_utterances, args.seed)
    print(f"{len(held_out)} held-out utterances from {args.data}; neural: {args.vocoder} "
          f"({neural.config.generator}, {neural.n_parameters() / 1e6:.2f} M parameters); "
          f"baseline: Griffin-Lim, {args.griffin_lim_iters} iterations")
    with_pesq = pesq_available()
    if not with_pesq:
        print("pesq is not installed (pip install -e '.[eval]'): PESQ columns left out")
    rows = {"neural": [], "griffin_lim": []}
    seconds = {"neural": 0.0, "griffin_lim": 0.0}
    buzz = {"recording": [], "neural": [], "griffin_lim": []}
    sample_rate, hop_length = corpus.mel_config.sample_rate, corpus.mel_config.hop_length
    audio_seconds = 0.0
    print(f"{'utterance':<40}{'mel L1 neural':>15}{'mel L1 G-L':>12}{'MR-STFT neural':>16}{'MR-STFT G-L':>13}"
          + (f"{'PESQ neural':>13}{'PESQ G-L':>10}" if with_pesq else ""))
    for index in held_out:
        n_frames = min(corpus.utterances[index].n_frames, args.max_frames)
        mel = torch.from_numpy(corpus.mel(index, 0, n_frames))  # (n_mels, T)
        reference = corpus.audio(index, 0, n_frames)  # (T * hop,)
        audio_seconds += len(reference) / corpus.mel_config.sample_rate
        scores = {}
        for name, vocoder in (("neural", neural), ("griffin_lim", baseline)):
            start = time.perf_counter()
            output = vocoder.decode(mel)
            seconds[name] += time.perf_counter() - start
            scores[name] = (log_mel_l1(reference, output, corpus.mel_config),
                            multi_resolution_stft_distance(reference, output))
            if with_pesq:
                scores[name] += (pesq_wideband(reference, output, corpus.mel_config.sample_rate),)
            rows[name].append(scores[name])
            buzz[name].append(frame_rate_modulation_db(output, sample_rate, hop_length))
        buzz["recording"].append(frame_rate_modulation_db(reference, sample_rate, hop_length))
        print(f"{corpus.utterances[index].utterance_id[:39]:<40}{scores['neural'][0]:>15.4f}"
              f"{scores['griffin_lim'][0]:>12.4f}{scores['neural'][1]:>16.4f}{scores['griffin_lim'][1]:>13.4f}"
              + (f"{scores['neural'][2]:>13.3f}{scores['griffin_lim'][2]:>10.3f}" if with_pesq else ""))
    means = {name: np.mean(values, axis=0) for name, values in rows.items()}
    print(f"{'mean':<40}{means['neural'][0]:>15.4f}{means['griffin_lim'][0]:>12.4f}"
          f"{means['neural'][1]:>16.4f}{means['griffin_lim'][1]:>13.4f}"
          + (f"{means['neural'][2]:>13.3f}{means['griffin_lim'][2]:>10.3f}" if with_pesq else ""))
    print("frame-rate buzz (dB over 50-130 Hz, mean): " + ", ".join(
        f"{name} {np.mean(values):.1f}" for name, values in buzz.items()))
    print(f"RTF: neural {seconds['neural'] / audio_seconds:.4f}, "
          f"Griffin-Lim {seconds['griffin_lim'] / audio_seconds:.4f}")
    better = means["neural"] < means["griffin_lim"]
    print(f"neural vocoder beats Griffin-Lim on log-mel L1: {'yes' if better[0] else 'NO'}, "
          f"on multi-resolution STFT distance: {'yes' if better[1] else 'NO'}"
          + (f", on PESQ: {'yes' if means['neural'][2] > means['griffin_lim'][2] else 'NO'}" if with_pesq else ""))


if __name__ == "__main__":
    main()
