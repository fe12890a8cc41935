"""The AdaIN-VC family of voice-conversion models (content/speaker encoders, AdaIN decoder, VQ, adversary)."""

from voiceconv.models.vc_model import VCConfig, VCModel

__all__ = ["VCConfig", "VCModel"]
