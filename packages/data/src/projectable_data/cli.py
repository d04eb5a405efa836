"""`projectable-data` console script: `figure3 ...` (see figures.py) and `download-mnist [--root DIR]`."""

from __future__ import annotations

import argparse
import sys


def main(argv=None) -> None:
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or argv[0] in ("-h", "--help"):
        print("usage: projectable-data {figure3,download-mnist} [options]  (each takes --help)")
        return
    command, rest = argv[0], argv[1:]
    if command == "figure3":
        from .figures import main as figure3_main

        figure3_main(rest, prog="projectable-data figure3")
    elif command == "download-mnist":
        from .download import download_mnist

        parser = argparse.ArgumentParser(prog="projectable-data download-mnist")
        parser.add_argument("--root", default=None, help="target folder (default: the user cache)")
        print(download_mnist(parser.parse_args(rest).root))
    else:
        raise SystemExit(f"unknown command {command!r}; use figure3 or download-mnist")


if __name__ == "__main__":
    main()
