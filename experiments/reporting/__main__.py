"""The reports' command line, with the notebooks' parameters (``PROJECTABLE_REPORT_*``):

* ``python -m experiments.reporting missing table1 figure4 ...``: one line ``<name>\\t<why>`` per report whose
  runs are neither in the store nor in an evidence file, with the command that makes them. ``nox -s reports``
  skips those and lists them.
* ``python -m experiments.reporting backfill <sweep id> ...``: write the evidence file
  (``reports/<scale>/evidence/<sweep id>.parquet``) of each finished sweep of the store, with what its reports
  compute from the final weights (``experiments.reporting.evidence.EXTRAS``).
* ``python -m experiments.reporting extras <sweep id> ...``: append to that file the extra records its runs lack
  (an extra added after the sweep ran), from the store that still holds their weights; the rest of the file is
  kept as it is.
"""

from __future__ import annotations

import sys

from experiments import telemetry

USAGE = "usage: python -m experiments.reporting {missing <report> ... | backfill <sweep id> ... | extras <sweep id> ...}"


def missing(params, names: list[str]) -> int:
    from experiments.reporting import toolkit

    for name in names or toolkit.ARTEFACTS:
        try:
            toolkit.check_runs(params, name)
        except toolkit.MissingRuns as why:
            print(f"{name}\t{why}")
    return 0


def backfill(params, sweep_ids: list[str]) -> int:
    import os

    from experiments.reporting.evidence import EXTRAS
    from experiments.tracking.evidence import backfill as write

    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # one bar per downloaded run is noise

    for sweep_id in sweep_ids:
        path = write(params.tracking_uri, params.experiment, sweep_id, params.out_dir.parent, params.cache, EXTRAS)
        print(f"{sweep_id}: {path} ({path.stat().st_size / 1e6:.2f} MB)")
    return 0


def extras(params, sweep_ids: list[str]) -> int:
    """Append the extra evidence a sweep's committed file lacks (``tracking.evidence.add_missing_extras``)."""
    import os

    from experiments.reporting.evidence import EXTRAS
    from experiments.tracking.evidence import add_missing_extras, evidence_path, load_evidence

    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    for sweep_id in sweep_ids:
        path = evidence_path(params.out_dir.parent, params.scale, sweep_id)
        experiment = load_evidence(path).sweeps[0]["tags"].get("experiment")
        written = add_missing_extras(params.tracking_uri, path, params.cache, EXTRAS.get(experiment, ()))
        print(f"{sweep_id}: {path} ({path.stat().st_size / 1e6:.2f} MB); added {', '.join(written) or 'nothing'}")
    return 0


def main(argv: list[str]) -> int:
    telemetry.apply()
    from experiments.config import ConfigError
    from experiments.reporting import toolkit
    from experiments.tracking.store import check_reachable

    commands = {"missing": missing, "backfill": backfill, "extras": extras}
    if not argv or argv[0] not in commands:
        raise ConfigError(f"unknown command {' '.join(argv) or '(none)'}; {USAGE}")
    if argv[0] == "missing":
        unknown = [name for name in argv[1:] if name not in toolkit.ARTEFACTS]
        if unknown:
            raise ConfigError(f"no report named {', '.join(unknown)}; choose from {', '.join(toolkit.ARTEFACTS)}")
    elif not argv[1:]:
        raise ConfigError(f"{argv[0]} needs the id of a finished sweep; {USAGE}")
    params = toolkit.notebook_params(environ=None, quiet=True)
    if argv[0] in ("backfill", "extras"):
        check_reachable(params.tracking_uri)  # a garbage, locked or unreachable store, named
    return commands[argv[0]](params, argv[1:])


if __name__ == "__main__":
    from experiments.run.commands import refusing_bad_input

    with refusing_bad_input():
        sys.exit(main(sys.argv[1:]))
