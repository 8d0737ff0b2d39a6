"""The ``brainorg`` command line.

Each sub-command lives in its own module of this package with two functions:
``add_parser(subparsers)`` (declares the options, with help for every one) and
``run(args) -> int``. Heavy imports happen inside ``run`` so ``brainorg --help``
stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from .. import __version__
from ..errors import BrainorgError, CancelledError, MissingDependencyError

#: sub-command name -> module (in this package) that implements it
COMMANDS = {
    "extract": "extract",
    "simulate": "simulate",
    "demo": "demo",
    "run": "run",
    "view": "view",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="brainorg",
        description=(
            "Find brain-like functional organization inside language models: record every "
            "artificial neuron's response to a story, learn sparse atoms over them, map the "
            "atoms onto fMRI and link them to functional brain networks."
        ),
    )
    parser.add_argument("--version", action="version", version=f"napari-brainorg {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name, module_name in COMMANDS.items():
        try:
            module = importlib.import_module(f"{__name__}.{module_name}")
        except ModuleNotFoundError as exc:  # a sub-command not installed in this build
            if exc.name != f"{__name__}.{module_name}":
                raise
            continue
        module.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``brainorg`` console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except CancelledError as exc:
        print(f"brainorg {args.command}: {exc}", file=sys.stderr)
        return 130
    except KeyboardInterrupt:
        print(f"brainorg {args.command}: interrupted", file=sys.stderr)
        return 130
    except MissingDependencyError as exc:
        print(f"brainorg {args.command}: {exc}", file=sys.stderr)
        return 2
    except (BrainorgError, FileNotFoundError, ValueError) as exc:
        print(f"brainorg {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
