"""How the command lines of ``experiments`` deliver a refusal: one line ``error: ...`` on stderr naming the
key, file or value and the fix, and exit status 2, for every error the project raises on purpose (a
``ConfigError``, wherever it is raised), for Hydra's and OmegaConf's own (an unknown key, group option or
override syntax; a missing mandatory value) and for an output folder that cannot be written (read-only, full,
a file where a folder should be). Anything else is a bug and keeps its traceback.

``PROJECTABLE_TRACEBACK=1`` shows the traceback of a refusal too (to report a refusal that looks wrong).
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import sys
from collections.abc import Callable

from experiments.config import ConfigError, compose, register_resolvers

# OSErrors that are the machine's state, not the code's: said in one line with the path and what to do
OUTPUT_ERRORS = {
    errno.ENOSPC: "free space there, or point paths.* at another disk, and rerun the same command",
    errno.EDQUOT: "free space there, or point paths.* at another disk, and rerun the same command",
    errno.EROFS: "the file system is read-only: point paths.* (or $PROJECTABLE_ROOT) at a writable folder",
    errno.EACCES: "it is not writable by you: point paths.* (or $PROJECTABLE_ROOT) at a writable folder",
    errno.EPERM: "it is not writable by you: point paths.* (or $PROJECTABLE_ROOT) at a writable folder",
    errno.ENOTDIR: "a file stands where a folder is needed: move it away, or choose another path",
    errno.ENAMETOOLONG: "the path is too long: choose a shorter one",
}


@contextlib.contextmanager
def as_bad_input(what: str):
    """Errors the library raises on purpose while a run is set up (a ``ValueError``/``TypeError`` naming the
    argument: a damaged init_from file, validation subsets that keep no image, a train_fraction too small)
    are bad input to the command: a ``ConfigError``, delivered as ``error:`` and exit 2."""
    try:
        yield
    except ConfigError:
        raise
    except (ValueError, TypeError) as err:
        raise ConfigError(f"{what}: {err}") from err


def one_line(text: str) -> str:
    return " ".join(str(text).split())


def refusal(err: BaseException) -> str | None:
    """The one-line message of an error that is bad input or the machine's state, None for a bug."""
    from hydra.errors import HydraException
    from omegaconf.errors import MissingMandatoryValue, OmegaConfBaseException

    if isinstance(err, ConfigError):
        return one_line(err)
    if isinstance(err, MissingMandatoryValue):
        key = getattr(err, "full_key", None) or "?"
        return f"{key} has no value (??? in its config file) and must be given; set {key}=<value>"
    if isinstance(err, OmegaConfBaseException):  # interpolations that cannot resolve, wrong types
        return one_line(err)
    if isinstance(err, HydraException):
        return hydra_message(err)
    if isinstance(err, OSError) and err.errno in OUTPUT_ERRORS:
        where = f": {err.filename}" if err.filename else ""
        return f"{err.strerror}{where}; {OUTPUT_ERRORS[err.errno]}"
    return None


@contextlib.contextmanager
def refusing_bad_input():
    """An entry point's body: a ``ConfigError`` (and Hydra's, OmegaConf's and an unwritable output's errors,
    ``refusal``) ends the command with its message alone (which names the problem and the fix) on stderr and
    exit status 2, instead of a traceback."""
    try:
        yield
    except Exception as err:
        message = refusal(err)
        if message is None:
            raise
        if show_traceback():
            import traceback

            traceback.print_exc()
        print(f"error: {message}", file=sys.stderr)
        sys.exit(2)


def hydra_message(err: BaseException) -> str:
    """Hydra's message in one line; for an override of a key that does not exist, the valid keys beside it."""
    message = one_line(err)
    found = re.search(r"Could not override '([^']+)'", message)
    if found:
        key = found.group(1)
        valid = valid_keys(key.rpartition(".")[0])
        if valid:
            parent = key.rpartition(".")[0]
            message = (f"unknown key {key}: valid keys of '{parent or '<root>'}': {', '.join(valid)} "
                       f"(to add a key, +{key}=...)")
    return message


def valid_keys(parent: str) -> list[str]:
    """The keys of the default config at ``parent`` (the root for ""), [] if it is not a mapping."""
    from omegaconf import DictConfig, OmegaConf

    try:
        node = compose([])
        node = OmegaConf.select(node, parent) if parent else node
    except Exception:  # noqa: BLE001 - the keys are a hint; without them the message stays Hydra's
        return []
    return sorted(str(k) for k in node.keys()) if isinstance(node, DictConfig) else []


def check_overrides(overrides: list[str]) -> None:
    """Compose the command line's overrides as ``@hydra.main`` will, so that Hydra's errors are refused here
    (``error:`` and exit 2) instead of Hydra's own report (exit 1)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import OverrideParseException

    parser = OverridesParser.create()
    for override in overrides:  # Hydra's parse errors do not always say which override they are about
        try:
            parser.parse_overrides([override])
        except OverrideParseException as err:
            raise ConfigError(f"cannot parse the override {override!r}: {one_line(err)} (quote values that hold "
                              "'=', spaces or brackets: key='a=b')") from err
    compose(overrides)


def run_hydra_command(main: Callable[[], None]) -> None:
    """The body of ``if __name__ == "__main__"`` of a Hydra entry point: its overrides checked (unless Hydra's
    own flags are given: ``--help``, ``--cfg``, ``--multirun``...), then ``main()``; a refusal anywhere is
    ``error: ...`` and exit 2."""
    register_resolvers()
    arguments = sys.argv[1:]
    if not any(a.startswith("-") for a in arguments):
        with refusing_bad_input():
            check_overrides([a for a in arguments if not a.lstrip("+~").startswith(("hydra.", "hydra/"))])
    with refusing_bad_input():
        main()


def show_traceback() -> bool:
    return os.environ.get("PROJECTABLE_TRACEBACK", "") not in ("", "0")
