"""voiceconv demo: start the Gradio web demo on this machine (127.0.0.1:7860 by default)."""

from __future__ import annotations

import argparse


def _megabytes(text: str) -> int:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of megabytes, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"the upload limit must be positive, got {text!r}")
    return int(value * 1_000_000)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from voiceconv.demo.config import DemoConfig

    defaults = DemoConfig()
    parser.add_argument("--model", action="append", metavar="DIR", default=[],
                        help="VC model directory; repeat to offer several model variants in a menu "
                        "(default: the shipped model in voiceconv/pretrained/vc)")
    parser.add_argument("--vocoder", metavar="DIR",
                        help="neural vocoder directory, or 'griffin-lim' (default: the one beside the model, else the "
                        "shipped one; without any, Griffin-Lim is used and the page says so)")
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to bind (default 127.0.0.1: this machine only; 0.0.0.0 opens it to the network)")
    parser.add_argument("--port", type=int, default=7860, help="port (default 7860)")
    parser.add_argument("--share", action="store_true",
                        help="also open a public *.gradio.live link (needs internet; off by default)")
    parser.add_argument("--device", help="torch device, e.g. cpu or cuda (default: CUDA if available, else CPU)")
    parser.add_argument("--max-file-size", type=_megabytes, default=defaults.max_file_size, metavar="MB",
                        help=f"largest upload in MB (default {defaults.max_file_size / 1e6:g})")
    parser.add_argument("--max-seconds", type=float, default=defaults.max_seconds,
                        help=f"longest source clip in seconds (default {defaults.max_seconds:g})")
    parser.add_argument("--concurrency", type=int, default=defaults.concurrency_limit,
                        help=f"conversions at once; others wait (default {defaults.concurrency_limit})")


def run(args) -> int:
    import os

    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    from voiceconv.demo.app import launch
    from voiceconv.demo.config import DemoConfig

    config = DemoConfig(models=list(args.model), vocoder=args.vocoder, device=args.device,
                        max_file_size=args.max_file_size, max_seconds=args.max_seconds,
                        concurrency_limit=args.concurrency)
    print(f"voiceconv demo: loading models; the page will be at http://{args.host}:{args.port}", flush=True)
    launch(config, host=args.host, port=args.port, share=args.share, block=True)
    return 0
