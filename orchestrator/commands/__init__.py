"""CLI subcommands: each module has ``add_parser(subparsers)`` and ``run(args) -> int``.

May import: anything in the package (commands are the top layer); heavy imports inside ``run()``.
"""
