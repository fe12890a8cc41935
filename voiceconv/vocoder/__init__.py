"""Neural vocoders (log-mel -> waveform) and the Griffin-Lim fallback.

- :class:`~voiceconv.vocoder.model.Vocoder`: ``from_pretrained(dir)``, ``griffin_lim(mel_config)``,
  ``decode(mel)`` (chunked, bounded memory), ``save_pretrained(dir)``;
- generators: :mod:`~voiceconv.vocoder.generator` (ConvNeXt + inverse STFT, the default) and
  :mod:`~voiceconv.vocoder.hifigan` (V1/V2/V3, loads the public jik876 weights);
- training pieces: :mod:`~voiceconv.vocoder.discriminators`, :mod:`~voiceconv.vocoder.losses`;
  the loop is :mod:`voiceconv.training.vocoder_trainer`;
- :mod:`~voiceconv.vocoder.quality`: objective resynthesis metrics.
"""

from voiceconv.vocoder.model import Vocoder, VocoderConfig

__all__ = ["Vocoder", "VocoderConfig"]
