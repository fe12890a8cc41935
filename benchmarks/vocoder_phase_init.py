"""Where does the iSTFT vocoder's phase come from, and how many refinement iterations does it need? (issue 13)

    python benchmarks/vocoder_phase_init.py --data data/mini/prepared_unseen --vocoder voiceconv/pretrained/vocoder

The shipped generator predicts a magnitude (projected onto the input mel) and a phase, and then runs
``consistency_iters`` fast Griffin-Lim iterations on the phase; the iterations were half of the conversion
time. This script keeps the generator's magnitude and starts the same iterations from three phases:

- ``network``: the phase the generator predicts (what decoding does);
- ``integrated``: a phase integrated along time from the magnitude alone, without a network: each bin
  advances by its instantaneous frequency, estimated from the slope of the log-magnitude across
  frequency as for a Gaussian window (the time-direction half of phase-gradient heap integration,
  Prusa et al. 2017, without the heap: a cumulative sum, so it costs almost nothing);
- ``zero``: every phase 0.

and prints log-mel L1 and multi-resolution STFT distance to the recordings (lower is better) after
0, 4, 8, 16 and 24 iterations, on every ``--every``-th utterance of ``--data``.
"""

from __future__ import annotations

import argparse
import math

import numpy as np
import torch

# The Hann window as a Gaussian exp(-pi t^2 / gamma): gamma = 0.25645 * L^2 (Prusa et al. 2017, table 1).
HANN_GAMMA = 0.25645


def integrated_phase(magnitude: torch.Tensor, n_fft: int, hop_length: int, win_length: int) -> torch.Tensor:
    """Unit-modulus angles ``(B, n_bins, T)`` from ``magnitude (B, n_bins, T)`` alone.

    On the mel grid (the DFT of each frame is taken from the frame's first sample) a sinusoid of
    frequency ``f`` (cycles per sample) advances by ``2 pi f hop`` per frame, and inside one frame
    neighbouring bins of its main lobe differ by ``pi`` (the window's centre is ``n_fft / 2`` samples in).
    For a Gaussian window ``f = m / n_fft + n_fft / (2 pi gamma) * d log|X| / dm``.
    """
    gamma = HANN_GAMMA * win_length**2
    log_magnitude = torch.log(magnitude.clamp(min=float(magnitude.max()) * 1e-5))
    slope = torch.zeros_like(log_magnitude)
    slope[:, 1:-1] = (log_magnitude[:, 2:] - log_magnitude[:, :-2]) / 2  # central difference over bins
    bins = torch.arange(magnitude.shape[1], dtype=magnitude.dtype)[None, :, None]
    advance = 2 * math.pi * hop_length * bins / n_fft + hop_length * n_fft / gamma * slope  # radians per frame
    steps = torch.zeros_like(advance)
    steps[..., 1:] = (advance[..., 1:] + advance[..., :-1]) / 2  # trapezoidal rule between frames
    phase = -math.pi * bins + torch.cumsum(steps, dim=-1)
    return torch.polar(torch.ones_like(magnitude), phase)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", required=True, help="prepared directory (voiceconv prepare)")
    parser.add_argument("--vocoder", required=True, help="an iSTFT vocoder directory")
    parser.add_argument("--every", type=int, default=4, help="use every N-th utterance (default 4)")
    parser.add_argument("--max-frames", type=int, default=1024)
    parser.add_argument("--iterations", type=int, nargs="+", default=[0, 4, 8, 16, 24])
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    from voiceconv.training.data import PreparedCorpus
    from voiceconv.vocoder.generator import CONSISTENCY_FLOOR, CONSISTENCY_MOMENTUM
    from voiceconv.vocoder.model import Vocoder
    from voiceconv.vocoder.quality import log_mel_l1, multi_resolution_stft_distance
    from voiceconv.vocoder.spectral import griffin_lim_phase, istft

    vocoder = Vocoder.from_pretrained(args.vocoder, device="cpu")
    generator = vocoder.generator
    if not hasattr(generator, "spectrum"):
        raise SystemExit(f"{args.vocoder} is not an iSTFT vocoder")
    corpus = PreparedCorpus(args.data)
    corpus.mel_config.check_compatible(vocoder.mel_config, "prepared data", "vocoder")
    mel_config = corpus.mel_config
    n_fft, hop, window = mel_config.n_fft, mel_config.hop_length, generator.window
    indices = list(range(0, len(corpus), args.every))
    trained_iters = generator.config.consistency_iters
    generator.config.consistency_iters = 0  # spectrum() then returns the network's own phase
    print(f"{len(indices)} utterances of {args.data}; vocoder {args.vocoder} (decodes with {trained_iters} iterations)")
    print(f"{'phase start':<12}{'iterations':>11}{'log-mel L1':>12}{'MR-STFT':>10}")
    pieces = []
    with torch.inference_mode():
        for index in indices:
            n_frames = min(corpus.utterances[index].n_frames, args.max_frames)
            spectrum = generator.spectrum(torch.from_numpy(corpus.mel(index, 0, n_frames))[None])  # (1, bins, T)
            magnitude = spectrum.abs()
            pieces.append((magnitude, spectrum / magnitude.clamp(min=CONSISTENCY_FLOOR),
                           corpus.audio(index, 0, n_frames)))
        for start in ("network", "integrated", "zero"):
            for n_iter in args.iterations:
                l1, mrstft = [], []
                for magnitude, network_angles, reference in pieces:
                    angles = {"network": network_angles, "zero": torch.ones_like(network_angles),
                              "integrated": integrated_phase(magnitude, n_fft, hop, mel_config.win_length)}[start]
                    if n_iter:
                        angles = griffin_lim_phase(magnitude, angles, n_iter, CONSISTENCY_MOMENTUM, n_fft, hop,
                                                   window, floor=CONSISTENCY_FLOOR)
                    audio = istft(magnitude * angles, n_fft, hop, window)[0].clamp(-1, 1)
                    l1.append(log_mel_l1(reference, audio, mel_config))
                    mrstft.append(multi_resolution_stft_distance(reference, audio))
                print(f"{start:<12}{n_iter:>11d}{np.mean(l1):>12.4f}{np.mean(mrstft):>10.4f}", flush=True)


if __name__ == "__main__":
    main()
