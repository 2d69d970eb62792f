"""Option parsing shared by the commands: KEY=VALUE lists, and request dataclasses filled from parsed options."""

from __future__ import annotations

import argparse
import dataclasses
from typing import Any, TypeVar

R = TypeVar("R")


def add_hparam_option(parser: argparse.ArgumentParser, help: str, *, several: bool = True) -> None:
    """`--hparam KEY=VALUE`, repeatable. With `several`, one flag also takes a list (`--hparam lr=0.1 ways=5`);
    a command with a positional argument passes several=False, or the list would swallow it."""
    parser.add_argument(
        "--hparam",
        action="extend" if several else "append",
        nargs="+" if several else None,
        default=[],
        metavar="KEY=VALUE",
        help=help + (" (repeatable; one flag may take several)" if several else " (repeatable)"),
    )


def key_values(items: list[str] | None, option: str = "--hparam") -> dict[str, str]:
    """`["lr=0.1", "backbone=resnet12"]` as a dict; a malformed item stops the command and names itself."""
    out = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise SystemExit(f"bench: {option} expects KEY=VALUE, got {item!r}")
        out[key.strip()] = value.strip()
    return out


def request_from_args(cls: type[R], args: argparse.Namespace, **given: Any) -> R:
    """A request dataclass whose fields take the parsed option of the same name, unless `given` sets them."""
    names = [f.name for f in dataclasses.fields(cls)]  # type: ignore[arg-type]
    values = {n: getattr(args, n) for n in names if n not in given and hasattr(args, n)}
    return cls(**values, **given)
