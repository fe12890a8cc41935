"""The voiceconv web demo as a stand-alone script: ``python demo/app.py [--model DIR] [--port 7860] ...``.

It takes the same options as ``voiceconv demo`` and runs the same app (voiceconv/demo/app.py), so
the installed package and this script never drift apart.
"""

from __future__ import annotations

import os
import sys

if __name__ == "__main__":
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    from voiceconv.cli import main

    sys.exit(main(["demo", *sys.argv[1:]]))
