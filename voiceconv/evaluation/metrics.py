"""Evaluation metrics as pure functions of arrays and strings (numpy only, no judge models).

Everything here is deterministic and has a known answer on hand-made input, so it is unit-tested
directly (tests/test_metrics.py). The judge models that produce the inputs (speaker embeddings,
ASR hypotheses, WORLD analysis) live in :mod:`voiceconv.evaluation.judges`.

Conventions:
- F0 tracks are ``(T,)`` in Hz with 0 for unvoiced frames (WORLD's convention).
- Mel-cepstra are ``(T, order + 1)`` with c0 (frame energy) in column 0; distortion excludes c0.
- Scores for speaker verification are cosine similarities, higher = more likely the same speaker.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence

import numpy as np

# 10 / ln(10) * sqrt(2): converts the Euclidean distance between mel-cepstra (natural-log units)
# into dB of log-spectral distance (Kubichek 1993; the constant every MCD paper uses).
MCD_CONSTANT = 10.0 / math.log(10.0) * math.sqrt(2.0)


# ---------------------------------------------------------------------------------------------
# Word error rate
# ---------------------------------------------------------------------------------------------


def normalize_words(text: str) -> list[str]:
    """Lower-case words with punctuation removed; apostrophes inside words are kept ("don't").

    ASR output (pocketsphinx) is lower-case without punctuation, while transcripts are written
    text, so both sides go through the same normalisation before they are compared.
    """
    text = text.lower().replace("-", " ")
    text = re.sub(r"[^a-z0-9' ]+", " ", text)
    return [word.strip("'") for word in text.split() if word.strip("'")]


def edit_distance(reference: Sequence[str], hypothesis: Sequence[str]) -> int:
    """Levenshtein distance between two token sequences (substitutions + deletions + insertions)."""
    previous = list(range(len(hypothesis) + 1))
    for i, ref_token in enumerate(reference, start=1):
        current = [i] + [0] * len(hypothesis)
        for j, hyp_token in enumerate(hypothesis, start=1):
            current[j] = min(
                previous[j] + 1,  # deletion of a reference word
                current[j - 1] + 1,  # insertion of a hypothesis word
                previous[j - 1] + (ref_token != hyp_token),  # substitution or match
            )
        previous = current
    return previous[-1]


def word_errors(reference: str, hypothesis: str) -> tuple[int, int]:
    """``(errors, reference word count)`` after :func:`normalize_words`; sum these for a corpus WER."""
    ref_words = normalize_words(reference)
    return edit_distance(ref_words, normalize_words(hypothesis)), len(ref_words)


def word_error_rate(reference: str, hypothesis: str) -> float:
    """Word error rate of ``hypothesis`` against ``reference``: errors / reference words.

    Can exceed 1 when the hypothesis has many insertions. NaN when the reference has no words
    (the rate is undefined; callers drop such pairs from averages).
    """
    errors, n_words = word_errors(reference, hypothesis)
    return errors / n_words if n_words else math.nan


# ---------------------------------------------------------------------------------------------
# Dynamic time warping and mel-cepstral distortion
# ---------------------------------------------------------------------------------------------


def dtw(cost: np.ndarray) -> tuple[np.ndarray, float]:
    """Exact DTW over a local cost matrix ``(N, M)`` with steps (1,1), (1,0), (0,1), unweighted.

    Returns ``(path (L, 2) int, total cost along the path)``; the path starts at (0, 0) and ends at
    (N-1, M-1). The accumulation runs one anti-diagonal at a time: every cell on the diagonal
    i + j = s depends only on diagonals s-1 and s-2, so each diagonal is one numpy operation and
    a 1000 x 1000 problem takes milliseconds without a compiled extension.
    """
    cost = np.asarray(cost, dtype=np.float64)
    if cost.ndim != 2 or 0 in cost.shape:
        raise ValueError(f"dtw needs a non-empty (N, M) cost matrix, got shape {cost.shape}")
    n, m = cost.shape
    acc = np.full((n + 1, m + 1), np.inf)  # 1-based accumulated cost with an infinite border
    acc[0, 0] = 0.0
    for s in range(2, n + m + 1):
        i = np.arange(max(1, s - m), min(n, s - 1) + 1)
        j = s - i
        best_previous = np.minimum(np.minimum(acc[i - 1, j - 1], acc[i - 1, j]), acc[i, j - 1])
        acc[i, j] = cost[i - 1, j - 1] + best_previous
    # Backtrack from the end; on ties prefer the diagonal step, which keeps the path shortest.
    i, j = n, m
    path = [(i - 1, j - 1)]
    while (i, j) != (1, 1):
        candidates = ((acc[i - 1, j - 1], i - 1, j - 1), (acc[i - 1, j], i - 1, j), (acc[i, j - 1], i, j - 1))
        _, i, j = min(candidates, key=lambda item: item[0])
        path.append((i - 1, j - 1))
    return np.array(path[::-1], dtype=np.int64), float(acc[n, m])


def all_pass_alpha(sample_rate: int) -> float:
    """Frequency-warping constant of the first-order all-pass filter that best fits the mel scale.

    Least-squares fit of the all-pass phase response to the mel scale over 0..Nyquist, on a 0.001
    grid; gives the standard values 0.41 at 16 kHz, 0.455 at 22.05 kHz, 0.554 at 48 kHz (the same
    search SPTK's ``mcepalpha`` does).
    """
    omega = np.linspace(0.0, np.pi, 1000)
    mel = np.log1p(omega / np.pi * (sample_rate / 2) / 1000.0)  # mel scale up to a constant factor
    target = mel / mel[-1] * np.pi
    alphas = np.arange(0.0, 1.0, 0.001)
    errors = [np.mean((warp_frequency(omega, alpha) - target) ** 2) for alpha in alphas]
    return round(float(alphas[int(np.argmin(errors))]), 3)


def warp_frequency(omega: np.ndarray, alpha: float) -> np.ndarray:
    """Phase response of the all-pass ``(z^-1 - alpha) / (1 - alpha z^-1)``: linear -> warped radians.

    ``warp_frequency(warp_frequency(w, a), -a) == w``, so ``-alpha`` gives the inverse warp.
    """
    return omega + 2.0 * np.arctan(alpha * np.sin(omega) / (1.0 - alpha * np.cos(omega)))


def mel_cepstrum(envelope: np.ndarray, order: int = 24, alpha: float = 0.41) -> np.ndarray:
    """Mel-cepstrum ``(T, order + 1)`` of a power spectral envelope ``(T, n_fft // 2 + 1)``.

    The mel-cepstrum c~ is defined by ``log |H(w)| = c~0 + sum_m c~m cos(m * b(w))`` where b is the
    all-pass warped frequency. We sample the log power envelope on a grid that is uniform in b
    (linear interpolation between FFT bins at the inverse-warped frequencies), then take its
    cosine series with an inverse real FFT. This is the frequency-warped cepstrum of SPTK's
    ``sp2mc`` (real cepstrum followed by ``freqt``) computed in the frequency domain instead, with
    the same scaling: log power -> c0 is the mean log amplitude, c1.. are one-sided coefficients.
    """
    envelope = np.asarray(envelope, dtype=np.float64)
    if envelope.ndim != 2 or envelope.shape[1] < 3:
        raise ValueError(f"mel_cepstrum needs a (T, n_bins) envelope, got shape {envelope.shape}")
    n_bins = envelope.shape[1]
    n_fft = 2 * (n_bins - 1)
    if order + 1 > n_bins:
        raise ValueError(f"order {order} needs an envelope with more than {order} bins, got {n_bins}")
    warped_grid = np.linspace(0.0, np.pi, n_bins)
    position = warp_frequency(warped_grid, -alpha) / np.pi * (n_bins - 1)  # fractional FFT bin
    position = np.clip(position, 0.0, n_bins - 1)
    low = np.minimum(np.floor(position).astype(np.int64), n_bins - 2)
    frac = position - low
    log_power = np.log(np.maximum(envelope, 1e-20))  # 1e-20 keeps digital silence finite (-460 nepers)
    warped_log_power = log_power[:, low] * (1.0 - frac) + log_power[:, low + 1] * frac  # (T, n_bins)
    cepstrum = np.fft.irfft(warped_log_power, n=n_fft, axis=1)[:, : order + 1]
    # irfft of log *power* gives twice the amplitude cepstrum: right for the one-sided c1.. of
    # SPTK's convention, while c0 must be halved to be the mean log amplitude.
    cepstrum[:, 0] *= 0.5
    return cepstrum


def mel_cepstral_distortion(mcep_a: np.ndarray, mcep_b: np.ndarray, align: bool = True) -> float:
    """MCD in dB between two mel-cepstrum sequences ``(Ta, order + 1)`` and ``(Tb, order + 1)``.

    Column 0 (c0, energy) is excluded, as is standard: it measures loudness, not timbre. With
    ``align`` the frames are paired by DTW on the Euclidean distance of c1..; the per-frame
    ``10 / ln10 * sqrt(2 * sum_d (a_d - b_d)^2)`` is averaged along the path. Without ``align``
    both sequences must have the same length and frames are compared one to one.
    """
    a = np.asarray(mcep_a, dtype=np.float64)[:, 1:]
    b = np.asarray(mcep_b, dtype=np.float64)[:, 1:]
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"mel-cepstra have different orders: {a.shape[1]} vs {b.shape[1]}")
    if not align:
        if a.shape != b.shape:
            raise ValueError(f"unaligned MCD needs equal lengths, got {a.shape[0]} and {b.shape[0]} frames")
        return float(MCD_CONSTANT * np.sqrt(((a - b) ** 2).sum(axis=1)).mean())
    # (Ta, Tb) Euclidean distances between every pair of frames.
    squared = (a**2).sum(1)[:, None] + (b**2).sum(1)[None, :] - 2.0 * a @ b.T
    distance = np.sqrt(np.maximum(squared, 0.0))
    path, _ = dtw(distance)
    # The expansion above loses ~1e-7 to rounding; distances along the path are recomputed exactly.
    aligned = np.sqrt(((a[path[:, 0]] - b[path[:, 1]]) ** 2).sum(axis=1))
    return float(MCD_CONSTANT * aligned.mean())


# ---------------------------------------------------------------------------------------------
# Pitch
# ---------------------------------------------------------------------------------------------


def mean_log2_f0(f0: np.ndarray | Sequence[np.ndarray]) -> float:
    """Mean of log2(F0) over voiced frames of one track ``(T,)`` or several; NaN if none is voiced."""
    tracks = [f0] if isinstance(f0, np.ndarray) else list(f0)
    voiced = np.concatenate([np.asarray(track, dtype=np.float64).reshape(-1) for track in tracks])
    voiced = voiced[voiced > 0]
    return float(np.log2(voiced).mean()) if voiced.size else math.nan


def semitone_gap(f0: np.ndarray, reference_f0: np.ndarray | Sequence[np.ndarray]) -> float:
    """Signed pitch gap in semitones: 12 * (mean voiced log2 F0 of ``f0`` - that of the reference).

    Positive means higher than the reference. Comparing mean log-F0 (not frame by frame) is what
    matters for speaker identity, since the words and their intonation differ between the clips.
    """
    return 12.0 * (mean_log2_f0(f0) - mean_log2_f0(reference_f0))


def _resample_track(track: np.ndarray, length: int) -> np.ndarray:
    """Nearest-frame resampling of a frame track to ``length`` frames (uniform time mapping)."""
    index = np.minimum((np.arange(length) * len(track) / length).astype(np.int64), len(track) - 1)
    return track[index]


def voicing_agreement(f0_a: np.ndarray, f0_b: np.ndarray) -> float:
    """Fraction of frames where both tracks agree on voiced (F0 > 0) vs unvoiced.

    Conversion keeps the source's timing, so source and output should voice the same frames.
    When their lengths differ slightly (vocoder padding, resampling) the shorter track is
    stretched onto the longer one's frames by a uniform time mapping.
    """
    a = np.asarray(f0_a).reshape(-1) > 0
    b = np.asarray(f0_b).reshape(-1) > 0
    if a.size == 0 or b.size == 0:
        return math.nan
    length = max(a.size, b.size)
    a, b = _resample_track(a, length), _resample_track(b, length)
    return float((a == b).mean())


# ---------------------------------------------------------------------------------------------
# Speaker similarity and verification
# ---------------------------------------------------------------------------------------------


def cosine_similarity(a: np.ndarray, b: np.ndarray) -> float:
    """Cosine of the angle between two vectors ``(D,)``."""
    a = np.asarray(a, dtype=np.float64).reshape(-1)
    b = np.asarray(b, dtype=np.float64).reshape(-1)
    denominator = np.linalg.norm(a) * np.linalg.norm(b)
    if denominator == 0:
        raise ValueError("cosine similarity of a zero vector is undefined")
    return float(a @ b / denominator)


def mean_embedding(embeddings: Sequence[np.ndarray] | np.ndarray) -> np.ndarray:
    """Unit-length mean of unit-normalised embeddings ``(N, D) -> (D,)``: one vector per speaker."""
    stack = np.asarray(embeddings, dtype=np.float64)
    if stack.ndim == 1:
        stack = stack[None]  # (1, D)
    stack = stack / np.linalg.norm(stack, axis=1, keepdims=True)
    mean = stack.mean(axis=0)
    return mean / np.linalg.norm(mean)


def equal_error_rate(genuine: Sequence[float], impostor: Sequence[float]) -> tuple[float, float]:
    """``(EER, threshold)`` of a verifier that accepts a trial when its score >= threshold.

    False rejection FRR(t) = fraction of genuine scores below t; false acceptance FAR(t) =
    fraction of impostor scores at or above t. Both are step functions that change only at score
    values, so we evaluate every interval between consecutive distinct scores, find those where
    max(FAR, FRR) is smallest (the EER operating point on a finite set, reported as the mean of
    FAR and FRR there), and return the middle of that threshold range. For two separated score
    sets this gives EER 0 and the midpoint between the highest impostor and the lowest genuine.
    """
    genuine = np.sort(np.asarray(genuine, dtype=np.float64))
    impostor = np.sort(np.asarray(impostor, dtype=np.float64))
    if genuine.size == 0 or impostor.size == 0:
        raise ValueError("the EER needs at least one genuine and one impostor score")
    scores = np.unique(np.concatenate([genuine, impostor]))
    # Interval k is (scores[k-1], scores[k]]; thresholds in it all give the same FAR/FRR, so we
    # evaluate at its right end. k = len(scores) is the interval above every score.
    right_ends = np.append(scores, np.inf)
    left_ends = np.insert(scores, 0, -np.inf)
    frr = np.searchsorted(genuine, right_ends, side="left") / genuine.size
    far = 1.0 - np.searchsorted(impostor, right_ends, side="left") / impostor.size
    worst = np.maximum(far, frr)
    best = np.flatnonzero(np.isclose(worst, worst.min()))
    # Among equally good intervals take the contiguous run around the balanced point and its middle.
    balance = np.abs(far - frr)[best]
    centre = best[int(np.argmin(balance))]
    run = [centre]
    while run[0] - 1 in best:
        run.insert(0, run[0] - 1)
    while run[-1] + 1 in best:
        run.append(run[-1] + 1)
    low, high = left_ends[run[0]], right_ends[run[-1]]
    # Open-ended ranges (every score accepted or rejected) get a threshold at the last score.
    if not np.isfinite(low):
        threshold = high
    elif not np.isfinite(high):
        threshold = low
    else:
        threshold = (low + high) / 2.0
    return float((far[centre] + frr[centre]) / 2.0), float(threshold)


def acceptance_rate(scores: Sequence[float], threshold: float) -> float:
    """Fraction of ``scores`` at or above ``threshold`` (NaN scores are ignored); NaN if none."""
    scores = np.asarray(scores, dtype=np.float64)
    scores = scores[np.isfinite(scores)]
    return float((scores >= threshold).mean()) if scores.size else math.nan


# ---------------------------------------------------------------------------------------------
# Speed
# ---------------------------------------------------------------------------------------------


def real_time_factor(compute_seconds: float, audio_seconds: float) -> float:
    """Compute time / audio duration: below 1 is faster than real time."""
    if audio_seconds <= 0:
        raise ValueError(f"audio duration must be positive, got {audio_seconds}")
    return compute_seconds / audio_seconds
