"""Independent evaluation of voice conversion: speaker similarity and verification (Resemblyzer),
intelligibility (pocketsphinx WER), spectral distortion (WORLD mel-cepstrum MCD-DTW), pitch (WORLD
F0) and speed, written as a report.

Training code never imports this package: the judges must stay independent of what the model
learns from. ``metrics`` needs only numpy; the judges are optional packages (the ``[eval]``
extra), imported on first use.

    from voiceconv.evaluation import evaluate
    summary = evaluate("pairs.csv", "report/", converted_dir="converted/")
"""

from voiceconv.evaluation.evaluator import evaluate
from voiceconv.evaluation.pairs import Pair, read_pairs

__all__ = ["Pair", "evaluate", "read_pairs"]
