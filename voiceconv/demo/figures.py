"""The demo's figure: the source, reference and result mel spectrograms side by side."""

from __future__ import annotations

import numpy as np


def mel_figure(mels: list[np.ndarray], titles: list[str], sample_rate: int, hop_length: int):
    """One matplotlib figure: a row per log-mel ``(n_mels, T)``, one shared colour scale and colour bar.

    A shared scale makes loudness and spectral tilt comparable across source, reference and result.
    Uses ``matplotlib.figure.Figure`` directly (not pyplot), so figures made in parallel request
    threads share no global state and are freed with the object.
    """
    from matplotlib.figure import Figure

    low = min(float(m.min()) for m in mels)
    high = max(float(m.max()) for m in mels)
    figure = Figure(figsize=(10, 0.4 + 2.0 * len(mels)), layout="constrained")
    figure.suptitle("Log-mel spectrograms (one colour scale for all)", fontsize=11)
    axes = figure.subplots(len(mels), 1, squeeze=False)[:, 0]
    image = None
    for ax, mel, title in zip(axes, mels, titles):
        seconds = mel.shape[1] * hop_length / sample_rate
        image = ax.imshow(mel, origin="lower", aspect="auto", vmin=low, vmax=high, cmap="magma",
                          extent=(0.0, seconds, 0, mel.shape[0]), interpolation="nearest")
        ax.set_title(title, fontsize=10, loc="left")
        ax.set_ylabel("mel band")
    axes[-1].set_xlabel("time (s)")
    figure.colorbar(image, ax=list(axes), label="log magnitude (ln)", shrink=0.9)
    return figure
