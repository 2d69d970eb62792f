"""The top layer: the `bench` command line, the leaderboard server and `bench perf`."""

from .main import build_parser, main

__all__ = ["build_parser", "main"]
