"""``python -m experiments.reporting missing table1 figure4 ...``: one line ``<name>\\t<why>`` per report whose
sweep is not in the store the notebooks' parameters name (``PROJECTABLE_REPORT_*``), with the command that
makes its runs. ``nox -s reports`` skips those and lists them."""

from __future__ import annotations

import sys

from experiments import telemetry


def main(argv: list[str]) -> int:
    telemetry.apply()
    from experiments.reporting import toolkit

    if not argv or argv[0] != "missing":
        print("usage: python -m experiments.reporting missing <report> ...", file=sys.stderr)
        return 2
    params = toolkit.notebook_params(environ=None, quiet=True)
    for name in argv[1:] or toolkit.ARTEFACTS:
        if name not in toolkit.ARTEFACTS:
            print(f"{name}: no such report; choose from {', '.join(toolkit.ARTEFACTS)}", file=sys.stderr)
            return 2
        try:
            toolkit.newest_sweep(params, name)
        except toolkit.MissingRuns as missing:
            print(f"{name}\t{missing}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
