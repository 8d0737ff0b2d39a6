"""The ``brainorg`` command line.

Each sub-command lives in its own module of this package with two functions:
``add_parser(subparsers)`` (declares the options, with help for every one) and
``run(args) -> int``. Heavy imports happen inside ``run`` so ``brainorg --help``
stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from .. import __version__
from ..errors import BrainorgError, CancelledError, MissingDependencyError

#: sub-command name -> module (in this package) that implements it
COMMANDS = {
    "extract": "extract",
    "simulate": "simulate",
    "demo": "demo",
    "run": "run",
    "merge": "merge",
    "view": "view",
    "report": "report",
    "config": "config",
}

#: the logger every module of the package logs under (``logging.getLogger(__name__)``)
LOGGER = "napari_brainorg"


def _add_logging_options(parser: argparse.ArgumentParser) -> None:
    """-v/--verbose and -q/--quiet on a sub-command (its own --quiet is kept and also silences logs)."""
    options = {s for a in parser._actions for s in a.option_strings}
    parser.add_argument("-v", "--verbose", action="count", default=0,
                        help="more messages: -v shows each step's details (debug log)")
    if "--quiet" in options:
        for action in parser._actions:
            if "--quiet" in action.option_strings:
                if "-q" not in options:
                    action.option_strings.append("-q")
                    parser._option_string_actions["-q"] = action
                action.help = (action.help or "").rstrip(".") + "; only warnings and errors are logged"
    else:
        parser.add_argument("-q", "--quiet", action="store_true",
                            help="only warnings and errors are logged")


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is at the time of each record."""

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value):  # StreamHandler.__init__ sets it; the current stderr is used instead
        pass


def configure_logging(verbose: int = 0, quiet: bool = False) -> logging.Logger:
    """Send the package's log records to stderr: INFO by default, DEBUG with -v, WARNING with -q."""
    logger = logging.getLogger(LOGGER)
    level = logging.WARNING if quiet else (logging.DEBUG if verbose else logging.INFO)
    logger.setLevel(level)
    if not any(isinstance(h, _StderrHandler) for h in logger.handlers):
        handler = _StderrHandler()
        handler.setFormatter(logging.Formatter("brainorg: %(message)s"))
        logger.addHandler(handler)
    return logger


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
    parser.add_argument("--debug", action="store_true",
                        help="show the Python traceback of an error (may also follow the sub-command)")
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
    for command in sub.choices.values():
        _add_logging_options(command)
    return parser


def describe_error(exc: BaseException) -> str:
    """One line for the user: what went wrong, with the file or option it concerns.

    ``OSError`` (permission, disk full, not a directory...) names its file; errors of
    readers of damaged files (truncated gzip/NIfTI/NumPy/zip, bad model weights) say
    which kind of damage and keep the reader's message.
    """
    if isinstance(exc, OSError) and not isinstance(exc, BrainorgError) and exc.strerror:
        where = f" {str(exc.filename)!r}" if exc.filename else ""
        also = f" -> {str(exc.filename2)!r}" if getattr(exc, "filename2", None) else ""
        hint = {13: "check the permissions or choose another folder",
                28: "free some space or choose another folder",
                30: "choose a writable folder", 20: "a file stands where a folder is expected",
                21: "a folder stands where a file is expected"}.get(exc.errno or 0, "")
        return f"{exc.strerror}:{where}{also}" + (f" ({hint})" if hint else "")
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text


#: exceptions that are a user's input or environment, not a bug: exit code 2
USER_ERRORS = (BrainorgError, OSError, ValueError, EOFError)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``brainorg`` console script.

    Exit codes: 0 success, 2 a bad input, file or environment (one line on stderr; the
    traceback with ``--debug``), 130 cancelled, 1 an unexpected error.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    argv = [a for a in argv if a != "--debug"]
    parser = build_parser()
    args = parser.parse_args(argv)
    configure_logging(getattr(args, "verbose", 0), getattr(args, "quiet", False))
    prefix = f"brainorg {args.command}"
    try:
        return int(args.func(args) or 0)
    except CancelledError as exc:
        print(f"{prefix}: {exc}", file=sys.stderr)
        return 130
    except KeyboardInterrupt:
        print(f"{prefix}: interrupted; the folder is incomplete until the same command runs again",
              file=sys.stderr)
        return 130
    except MissingDependencyError as exc:
        _debug(debug)
        print(f"{prefix}: {exc}", file=sys.stderr)
        return 2
    except USER_ERRORS as exc:
        _debug(debug)
        print(f"{prefix}: error: {describe_error(exc)}", file=sys.stderr)
        return 2
    except Exception as exc:  # a bug: still one line, the traceback on request
        _debug(debug)
        print(f"{prefix}: unexpected error: {type(exc).__name__}: {describe_error(exc)} "
              "(run again with --debug for the traceback)", file=sys.stderr)
        return 1


def _debug(on: bool) -> None:
    if on:
        import traceback

        traceback.print_exc()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
