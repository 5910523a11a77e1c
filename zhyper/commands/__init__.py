"""One module per ``zhyper`` subcommand: ``configure(parser)`` and ``run(args) -> int``."""
