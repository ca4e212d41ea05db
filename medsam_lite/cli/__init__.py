"""Command-line entry points: each module registers one subcommand and calls a typed function."""
