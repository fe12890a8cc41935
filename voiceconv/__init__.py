"""voiceconv: one-shot voice conversion with the AdaIN-VC family of disentangling auto-encoders.

Public API::

    from voiceconv import VoiceConverter, Vocoder
    vc = VoiceConverter.from_pretrained()          # the shipped default model
    speaker = vc.embed_speaker(["ref1.wav", "ref2.wav"])
    wav = vc.convert("source.wav", speaker)         # (T,) float32 tensor at vc.sample_rate

Heavy modules are imported on first use, so ``import voiceconv`` stays cheap.
"""

__version__ = "0.1.0"

_LAZY = {
    "VoiceConverter": "voiceconv.convert.converter",
    "Speaker": "voiceconv.convert.converter",
    "Vocoder": "voiceconv.vocoder.model",
    "MelConfig": "voiceconv.features",
    "MelSpectrogram": "voiceconv.features",
    "load_audio": "voiceconv.audio",
    "save_audio": "voiceconv.audio",
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'voiceconv' has no attribute {name!r}")
