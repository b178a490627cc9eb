"""``python -m services.registry``: read, write, export and promote registry values.

User errors (a missing key, an unknown backend, a bad file) print one line
to stderr and exit with status 2; nothing here prints a traceback for them.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

from services.registry import exports, factory
from services.registry.backend import Parameter
from services.registry.errors import RegistryError
from services.registry.promotion import promote
from services.registry.registry import Registry
from services.registry.seeds import load_seed_file

EXIT_OK = 0
EXIT_USER_ERROR = 2


def main(argv: Sequence[str] | None = None, *, environ: Mapping[str, str] | None = None) -> int:
    """Run the registry CLI and return its exit status.

    ``environ`` defaults to ``os.environ``, read now rather than at import time;
    ``--env``, ``--backend`` and ``--file`` override its ``TINYLLAMA_*`` values.
    """
    environ = os.environ if environ is None else environ
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exit_:
        # argparse exits on --help (0) and usage errors (2); a caller such as
        # ``tinyllama registry`` wants the status back, not its process ended.
        return exit_.code if isinstance(exit_.code, int) else EXIT_USER_ERROR
    try:
        registry = factory.open_registry(environ=_bootstrap_environ(args, environ))
        return _run(args, registry, environ=environ)
    except RegistryError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_USER_ERROR


def build_parser() -> argparse.ArgumentParser:
    """Return the argument parser (global options work before or after the command)."""
    common = argparse.ArgumentParser(add_help=False)
    # SUPPRESS keeps a subcommand's unset option from hiding the one given before it.
    common.add_argument("--env", default=argparse.SUPPRESS, help="environment (TINYLLAMA_ENV)")
    common.add_argument(
        "--backend",
        choices=factory.BACKENDS,
        default=argparse.SUPPRESS,
        help="registry backend (TINYLLAMA_REGISTRY)",
    )
    common.add_argument(
        "--file", default=argparse.SUPPRESS, help="file backend path (TINYLLAMA_REGISTRY_FILE)"
    )
    parser = argparse.ArgumentParser(
        prog="python -m services.registry",
        description="Read and write /tinyllama/<env>/<key> parameters.",
        parents=[common],
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    get = commands.add_parser("get", parents=[common], help="print one value")
    get.add_argument("key")
    get.add_argument("--reveal", action="store_true", help="print a SecureString in clear")

    put = commands.add_parser("put", parents=[common], help="create or overwrite a value")
    put.add_argument("key")
    put.add_argument(
        "value", help="the value, or - to read it from stdin (keeps it out of history)"
    )
    put.add_argument("--secure", action="store_true", help="store as a SecureString")

    listing = commands.add_parser("list", parents=[common], help="list keys and values")
    listing.add_argument("prefix", nargs="?", default="")
    listing.add_argument("--reveal", action="store_true", help="show SecureStrings in clear")

    delete = commands.add_parser("delete", parents=[common], help="remove a value")
    delete.add_argument("key")

    export = commands.add_parser("export", parents=[common], help="print values for other tools")
    export.add_argument("--format", choices=exports.FORMATS, required=True, dest="fmt")
    export.add_argument("--prefix", default="", help="only keys under this prefix")

    promotion = commands.add_parser(
        "promote", parents=[common], help="copy values from one environment to another"
    )
    promotion.add_argument("--from", dest="source", required=True, help="source environment")
    promotion.add_argument("--to", dest="target", required=True, help="target environment")
    promotion.add_argument("--prefix", default="", help="only keys under this prefix")
    promotion.add_argument("--dry-run", action="store_true", help="show the diff, write nothing")

    bootstrap = commands.add_parser(
        "bootstrap", parents=[common], help="seed an environment from a JSON/TOML file"
    )
    bootstrap.add_argument("--from-file", dest="seed_file", required=True, type=Path)
    return parser


def _bootstrap_environ(args: argparse.Namespace, environ: Mapping[str, str]) -> dict[str, str]:
    overrides = {
        factory.ENV_VAR: getattr(args, "env", None),
        factory.BACKEND_VAR: getattr(args, "backend", None),
        factory.FILE_VAR: getattr(args, "file", None),
    }
    return {**environ, **{name: value for name, value in overrides.items() if value is not None}}


def _run(args: argparse.Namespace, registry: Registry, *, environ: Mapping[str, str]) -> int:
    match args.command:
        case "get":
            return show_value(registry, args.key, reveal=args.reveal)
        case "put":
            value = sys.stdin.read().removesuffix("\n") if args.value == "-" else args.value
            return put_value(registry, args.key, value, secure=args.secure)
        case "list":
            return list_values(registry, args.prefix, reveal=args.reveal)
        case "delete":
            registry.delete(args.key)
            print(f"deleted {registry.path(args.key)}")
            return EXIT_OK
        case "export":
            return export_values(registry, args.fmt, prefix=args.prefix, environ=environ)
        case "promote":
            return promote_values(
                registry, args.source, args.target, prefix=args.prefix, dry_run=args.dry_run
            )
        case "bootstrap":
            return seed_values(registry, args.seed_file)
    raise AssertionError(f"unhandled command {args.command!r}")


def show_value(registry: Registry, key: str, *, reveal: bool) -> int:
    """Print one value; a SecureString is masked unless ``reveal``."""
    parameter = registry.parameter(key)
    print(parameter.value if reveal else parameter.shown)
    if parameter.secure and not reveal:
        print(f"note: {key} is a SecureString; pass --reveal to print it", file=sys.stderr)
    return EXIT_OK


def put_value(registry: Registry, key: str, value: str, *, secure: bool) -> int:
    """Store one value and say where it went."""
    registry.put(key, value, secure=secure)
    print(f"wrote {registry.path(key)} ({'SecureString' if secure else 'String'})")
    return EXIT_OK


def list_values(registry: Registry, prefix: str, *, reveal: bool) -> int:
    """Print ``key<TAB>type<TAB>value`` lines; SecureStrings masked unless ``reveal``."""
    for parameter in registry.parameters(prefix):
        value = parameter.value if reveal else parameter.shown
        print(f"{parameter.key}\t{parameter.type_name}\t{value}")
    return EXIT_OK


def export_values(registry: Registry, fmt: str, *, prefix: str, environ: Mapping[str, str]) -> int:
    """Print the environment in ``fmt``; ``github`` appends to the file named by GITHUB_ENV."""
    parameters = registry.parameters(prefix)
    if fmt != "github":
        sys.stdout.write(exports.render(parameters, fmt=fmt))
        return EXIT_OK
    target = environ.get("GITHUB_ENV")
    if not target:
        raise RegistryError("export --format github needs GITHUB_ENV (set by GitHub Actions)")
    _append(Path(target), exports.render_github_env(parameters))
    # The runner reads these commands from stdout and masks the values in its logs.
    sys.stdout.write(exports.render_github_masks(parameters))
    print(f"exported {len(parameters)} variables to {target}", file=sys.stderr)
    return EXIT_OK


def promote_values(
    registry: Registry, source: str, target: str, *, prefix: str, dry_run: bool
) -> int:
    """Print the diff from ``source`` to ``target``, then copy unless ``dry_run``."""
    plan = promote(
        registry.for_env(source), registry.for_env(target), prefix=prefix, dry_run=dry_run
    )
    for line in plan.describe():
        print(line)
    print("dry run: nothing written" if dry_run else f"promoted to {target}")
    return EXIT_OK


def seed_values(registry: Registry, seed_file: Path) -> int:
    """Write every value of a seed file into the registry's environment."""
    parameters = load_seed_file(seed_file)
    for parameter in parameters:
        registry.put(parameter.key, parameter.value, secure=parameter.secure)
        print(f"wrote {registry.path(parameter.key)} ({parameter.type_name})")
    _warn_unknown(parameters)
    return EXIT_OK


def _warn_unknown(parameters: Sequence[Parameter]) -> None:
    from services.registry.keys import ALL_KEYS

    for parameter in parameters:
        if parameter.key not in ALL_KEYS:
            # Likely a typo; written anyway, because new keys are added this way too.
            print(f"warning: {parameter.key} is not in services.registry.keys", file=sys.stderr)


def _append(path: Path, text: str) -> None:
    try:
        with path.open("a", encoding="utf-8") as stream:
            stream.write(text)
    except OSError as error:
        raise RegistryError(f"cannot append to {path}: {error.strerror}") from None
