"""``python -m experiments.reporting missing table1 figure4 ...``: one line ``<name>\\t<why>`` per report whose
sweep is not in the store the notebooks' parameters name (``PROJECTABLE_REPORT_*``), with the command that
makes its runs. ``nox -s reports`` skips those and lists them."""

from __future__ import annotations

import sys

from experiments import telemetry


def main(argv: list[str]) -> int:
    telemetry.apply()
    from experiments.config import ConfigError
    from experiments.reporting import toolkit
    from experiments.tracking.store import check_reachable

    if not argv or argv[0] != "missing":
        raise ConfigError(f"unknown command {' '.join(argv) or '(none)'}; usage: python -m experiments.reporting "
                          "missing <report> ...")
    unknown = [name for name in argv[1:] if name not in toolkit.ARTEFACTS]
    if unknown:
        raise ConfigError(f"no report named {', '.join(unknown)}; choose from {', '.join(toolkit.ARTEFACTS)}")
    params = toolkit.notebook_params(environ=None, quiet=True)
    check_reachable(params.tracking_uri)  # a garbage, locked or unreachable store, named
    for name in argv[1:] or toolkit.ARTEFACTS:
        try:
            toolkit.newest_sweep(params, name)
        except toolkit.MissingRuns as missing:
            print(f"{name}\t{missing}")
    return 0


if __name__ == "__main__":
    from experiments.config import refusing_bad_input

    with refusing_bad_input():
        sys.exit(main(sys.argv[1:]))
