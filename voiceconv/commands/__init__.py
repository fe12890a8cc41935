"""One module per ``voiceconv`` subcommand, each with ``add_arguments(parser)`` and ``run(args) -> int``.

They are thin: parse arguments, call the library, print a summary.
"""
