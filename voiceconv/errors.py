"""Errors a user can fix. The CLI prints these as one line and exits non-zero."""


class VoiceconvError(ValueError):
    """Base class: bad input or configuration, with a message that says what to do."""


class AudioError(VoiceconvError):
    """An audio input is missing, unreadable, too short, non-finite or silent."""


class ConfigError(VoiceconvError):
    """A config file or override is malformed or names an unknown key."""


class CheckpointError(VoiceconvError):
    """A model directory is missing files, has the wrong version or kind, or fails its hash."""


class TrainingError(VoiceconvError):
    """Training cannot go on (diverged, nothing to resume, run directory in use); the message says what to do."""
