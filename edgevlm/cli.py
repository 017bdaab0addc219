"""The `edgevlm` command.

Subcommands live in edgevlm/commands/, one module each, defining ``NAME``,
``HELP``, ``add_arguments(parser)`` and ``run(args) -> int``; adding a command
is adding a file.  Errors a user can fix (EdgeVLMError) print one line on
stderr and exit with status 2.
"""
import argparse
import importlib
import pkgutil
import sys
import warnings

from edgevlm import __version__
from edgevlm.errors import EdgeVLMError

EXIT_USAGE = 2


def _commands():
    import edgevlm.commands as pkg

    mods = [importlib.import_module(f"{pkg.__name__}.{m.name}") for m in pkgutil.iter_modules(pkg.__path__)]
    return sorted((m for m in mods if hasattr(m, "NAME")), key=lambda m: (getattr(m, "ORDER", 100), m.NAME))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="edgevlm", description="Compile and run small vision-language models on edge NPUs.")
    parser.add_argument("--version", action="version", version=f"edgevlm {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for mod in _commands():
        p = sub.add_parser(mod.NAME, help=mod.HELP, description=mod.HELP)
        mod.add_arguments(p)
        p.set_defaults(_run=mod.run)
    return parser


def error_line(exc: EdgeVLMError) -> str:
    """The one line printed for a user error: cause, then fix."""
    return f"edgevlm: error: {exc.cause}" + (f"; fix: {exc.fix}" if exc.fix else "")


def main(argv=None) -> int:
    # Library deprecation chatter (torch, onnxscript, coremltools) is not the user's business.
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "_run", None):
        parser.print_help()
        return EXIT_USAGE
    try:
        return int(args._run(args) or 0)
    except EdgeVLMError as exc:
        print(error_line(exc), file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("edgevlm: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # output piped into e.g. `head`, which closed it: not an error
        sys.stdout = None  # keep the interpreter from flushing into the closed pipe at exit
        return 0


if __name__ == "__main__":
    sys.exit(main())
