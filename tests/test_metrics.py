"""Evaluation metrics on inputs with known answers (voiceconv.evaluation.metrics; WORLD-based ones need pyworld)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.signal import lfilter

from voiceconv.evaluation import metrics

SR = 16000
# Formants (Hz) of five vowels, from Peterson & Barney's adult male averages.
VOWELS = {"a": (730, 1090, 2440), "i": (270, 2290, 3010), "u": (300, 870, 2240), "e": (530, 1840, 2480),
          "o": (570, 840, 2410)}


def vowel_utterance(f0: float, formant_scale: float, vowels: str, seconds: list[float], seed: int = 0) -> np.ndarray:
    """A sequence of steady vowels (pulse train through three resonators), ``(T,)`` float32 at 16 kHz.

    ``formant_scale`` moves every formant, like a longer or shorter vocal tract; the same vowel
    string with longer ``seconds`` is a slower reading of the same "words".
    """
    rng = np.random.default_rng(seed)
    pieces = []
    for vowel, duration in zip(vowels, seconds):
        n = int(duration * SR)
        phase = np.cumsum(np.full(n, f0)) / SR
        pulses = (np.diff(np.floor(phase), prepend=0) > 0).astype(np.float64) + 0.002 * rng.standard_normal(n)
        signal = np.zeros(n)
        for formant in np.array(VOWELS[vowel]) * formant_scale:
            r = np.exp(-np.pi * (60 + 0.05 * formant) / SR)
            theta = 2 * np.pi * formant / SR
            signal += lfilter([1 - r], [1, -2 * r * np.cos(theta), r * r], pulses)
        ramp = np.minimum(1.0, np.minimum(np.arange(n), np.arange(n)[::-1]) / (0.015 * SR))  # 15 ms fades
        pieces.append(signal * ramp)
    audio = np.concatenate(pieces)
    return (0.5 * audio / np.abs(audio).max()).astype(np.float32)


# ---- word error rate -------------------------------------------------------------------------


def test_wer_of_a_hand_made_transcript_is_exact():
    # "the cat sat" -> "the bat sat on": one substitution + one insertion over 3 reference words.
    assert metrics.word_error_rate("the cat sat", "the bat sat on") == pytest.approx(2 / 3)
    assert metrics.word_errors("the cat sat", "the bat sat on") == (2, 3)


def test_wer_identical_and_normalised_text_is_zero():
    assert metrics.word_error_rate("the cat sat", "the cat sat") == 0.0
    # Case, punctuation and hyphens are normalised away on both sides; apostrophes inside words stay.
    assert metrics.word_error_rate("The cat -- it's well-known -- sat.", "the cat it's well known sat") == 0.0
    assert metrics.word_error_rate("don't", "dont") == 1.0


def test_wer_deletions_and_empty_cases():
    assert metrics.word_error_rate("one two three four", "one four") == 0.5
    assert metrics.word_error_rate("one two", "") == 1.0
    assert math.isnan(metrics.word_error_rate("", "anything"))
    assert metrics.edit_distance(list("kitten"), list("sitting")) == 3


# ---- DTW and mel-cepstral distortion ---------------------------------------------------------


def test_dtw_path_on_a_known_cost_matrix():
    # A zero-cost route exists only through (0,0) (1,0) (2,1) (2,2): x repeats its first frame.
    cost = np.ones((3, 3))
    cost[0, 0] = cost[1, 0] = cost[2, 1] = cost[2, 2] = 0.0
    path, total = metrics.dtw(cost)
    assert path.tolist() == [[0, 0], [1, 0], [2, 1], [2, 2]]
    assert total == 0.0
    with pytest.raises(ValueError):
        metrics.dtw(np.zeros((0, 3)))


def test_dtw_matches_a_plain_reference_implementation():
    rng = np.random.default_rng(1)
    cost = rng.random((7, 11))
    reference = np.full((8, 12), np.inf)
    reference[0, 0] = 0
    for i in range(1, 8):
        for j in range(1, 12):
            previous = min(reference[i - 1, j - 1], reference[i - 1, j], reference[i, j - 1])
            reference[i, j] = cost[i - 1, j - 1] + previous
    path, total = metrics.dtw(cost)
    assert total == pytest.approx(reference[7, 11])
    assert cost[path[:, 0], path[:, 1]].sum() == pytest.approx(total)
    steps = np.diff(path, axis=0)
    assert path[0].tolist() == [0, 0] and path[-1].tolist() == [6, 10]
    assert set(map(tuple, steps.tolist())) <= {(1, 1), (1, 0), (0, 1)}


def test_mcd_is_zero_for_identical_and_time_stretched_features():
    mcep = np.random.default_rng(0).standard_normal((50, 25))
    assert metrics.mel_cepstral_distortion(mcep, mcep) == 0.0
    assert metrics.mel_cepstral_distortion(mcep, mcep, align=False) == 0.0
    stretched = np.repeat(mcep, [1, 2, 3, 1, 2] * 10, axis=0)  # uneven slow-down of the same frames
    assert metrics.mel_cepstral_distortion(mcep, stretched) == pytest.approx(0.0, abs=1e-12)


def test_mcd_constant_and_c0_exclusion():
    a = np.zeros((4, 25))
    b = np.zeros((4, 25))
    b[:, 0] = 5.0  # energy only: excluded
    assert metrics.mel_cepstral_distortion(a, b) == 0.0
    b[:, 3] = 0.1  # one coefficient off by 0.1 everywhere
    expected = 10 / math.log(10) * math.sqrt(2 * 0.1**2)
    assert metrics.mel_cepstral_distortion(a, b, align=False) == pytest.approx(expected)
    assert metrics.mel_cepstral_distortion(a, b) == pytest.approx(expected)


def test_all_pass_alpha_matches_the_standard_values():
    assert metrics.all_pass_alpha(16000) == pytest.approx(0.41)
    assert metrics.all_pass_alpha(22050) == pytest.approx(0.455)
    assert metrics.all_pass_alpha(48000) == pytest.approx(0.554)
    omega = np.linspace(0, np.pi, 9)
    np.testing.assert_allclose(metrics.warp_frequency(metrics.warp_frequency(omega, 0.41), -0.41), omega, atol=1e-12)


def test_mel_cepstrum_without_warping_is_the_real_cepstrum():
    # |1 - a e^{-jw}|^2 is minimum phase with one-sided cepstrum c_n = -a^n / n (n >= 1), c_0 = 0.
    a, n_bins = 0.6, 513
    omega = np.linspace(0, np.pi, n_bins)
    power = np.abs(1 - a * np.exp(-1j * omega)) ** 2
    mcep = metrics.mel_cepstrum(power[None], order=10, alpha=0.0)[0]
    expected = [0.0] + [-(a**n) / n for n in range(1, 11)]
    np.testing.assert_allclose(mcep, expected, atol=1e-9)


def test_mel_cepstrum_recovers_coefficients_defined_on_the_warped_axis():
    # Build log|H| as a cosine series in the all-pass-warped frequency; the analysis must give it back.
    alpha, n_bins = 0.41, 1025
    coefficients = np.array([0.3, -1.2, 0.5, 0.25, -0.1, 0.05])
    warped = metrics.warp_frequency(np.linspace(0, np.pi, n_bins), alpha)
    log_amplitude = coefficients[0] + sum(c * np.cos(m * warped) for m, c in enumerate(coefficients) if m)
    mcep = metrics.mel_cepstrum(np.exp(2 * log_amplitude)[None], order=8, alpha=alpha)[0]
    np.testing.assert_allclose(mcep[:6], coefficients, atol=2e-3)
    np.testing.assert_allclose(mcep[6:], 0.0, atol=2e-3)


def _world_mcep(audio: np.ndarray) -> np.ndarray:
    pytest.importorskip("pyworld")
    from voiceconv.evaluation.judges import WorldJudge

    features = WorldJudge().analyze(audio)
    return metrics.mel_cepstrum(features.envelope, 24, metrics.all_pass_alpha(SR))


def test_world_mcd_zero_for_identical_audio_small_for_a_slower_reading_large_for_another_voice():
    durations = [0.25, 0.2, 0.3, 0.2, 0.25]
    voice = vowel_utterance(120, 1.0, "aiueo", durations)
    slower = vowel_utterance(120, 1.0, "aiueo", [1.6 * d for d in durations])
    other = vowel_utterance(120, 1.25, "aiueo", durations)  # same words, a shorter vocal tract
    reference = _world_mcep(voice)
    assert metrics.mel_cepstral_distortion(reference, _world_mcep(voice.copy())) == 0.0
    stretched = metrics.mel_cepstral_distortion(reference, _world_mcep(slower))
    different = metrics.mel_cepstral_distortion(reference, _world_mcep(other))
    assert stretched < 1.0, stretched  # only the vowel transitions differ
    assert different > 3.0, different
    assert different > 4 * stretched


# ---- pitch -----------------------------------------------------------------------------------


def test_semitone_gap_and_mean_log_f0():
    f0 = np.array([0, 110, 110, 0, 110.0])
    octave_up = np.array([220, 0, 220.0])
    assert metrics.semitone_gap(octave_up, f0) == pytest.approx(12.0)
    assert metrics.semitone_gap(f0, [octave_up, octave_up]) == pytest.approx(-12.0)
    assert metrics.mean_log2_f0(np.zeros(4)) != metrics.mean_log2_f0(np.zeros(4))  # NaN when nothing is voiced


def test_voicing_agreement():
    a = np.array([0, 100, 100, 0, 0, 100, 100, 0.0])
    assert metrics.voicing_agreement(a, a * 1.5) == 1.0  # pitch differs, voicing identical
    flipped = a.copy()
    flipped[:4] = 100 - flipped[:4]
    assert metrics.voicing_agreement(a, flipped) == 0.5
    # A twice-as-finely framed copy of the same track agrees everywhere.
    assert metrics.voicing_agreement(a, np.repeat(a, 2)) == 1.0


# ---- speaker verification --------------------------------------------------------------------


def test_eer_threshold_of_two_separated_score_sets():
    genuine = [0.80, 0.85, 0.90, 0.95]
    impostor = [0.10, 0.20, 0.30, 0.40]
    eer, threshold = metrics.equal_error_rate(genuine, impostor)
    assert eer == 0.0
    assert threshold == pytest.approx(0.60)  # midway between the highest impostor and the lowest genuine
    assert metrics.acceptance_rate(genuine, threshold) == 1.0
    assert metrics.acceptance_rate(impostor, threshold) == 0.0


def test_eer_of_overlapping_score_sets():
    # Thresholds in (0.5, 0.6] reject 0.4 (FRR 1/4) and accept 0.7 (FAR 1/4): the crossing point.
    eer, threshold = metrics.equal_error_rate([0.4, 0.6, 0.8, 0.9], [0.1, 0.3, 0.5, 0.7])
    assert eer == pytest.approx(0.25)
    assert threshold == pytest.approx(0.55)
    # Indistinguishable score sets: chance-level EER.
    scores = np.random.default_rng(0).random(400)
    eer, _ = metrics.equal_error_rate(scores[:200], scores[200:])
    assert 0.4 < eer < 0.6
    with pytest.raises(ValueError):
        metrics.equal_error_rate([], [0.1])


def test_cosine_mean_embedding_and_acceptance():
    assert metrics.cosine_similarity([1, 0], [0, 2]) == 0.0
    assert metrics.cosine_similarity([1, 1], [2, 2]) == pytest.approx(1.0)
    mean = metrics.mean_embedding([[3, 0], [0, 1]])  # normalised before averaging
    np.testing.assert_allclose(mean, [math.sqrt(0.5), math.sqrt(0.5)])
    assert metrics.acceptance_rate([0.1, 0.5, float("nan"), 0.9], 0.5) == pytest.approx(2 / 3)
    assert metrics.real_time_factor(1.0, 4.0) == 0.25
    with pytest.raises(ValueError):
        metrics.cosine_similarity([0, 0], [1, 0])
