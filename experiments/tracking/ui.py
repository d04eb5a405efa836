"""The MLflow UI / tracking server on 127.0.0.1 (``nox -s mlflow_ui``, and the server a cluster sweep logs to).

One worker and no job execution: ready in ~10 s with ~400 MB instead of ~28 s, 15 processes and 2 GB; it
runs in its own process group so that stopping it leaves no orphans.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from urllib.parse import quote, urlencode

from experiments import telemetry
from experiments.base.paths import project_root


def server_command(backend_uri: str, artifacts: str | Path, host: str = "127.0.0.1", port: int = 5000) -> list[str]:
    """``mlflow server`` serving ``backend_uri`` and proxying artifacts stored under ``artifacts``."""
    if host != "127.0.0.1":
        raise ValueError(f"host={host}: the server binds 127.0.0.1 only; reach it from elsewhere by a tunnel")
    return [
        sys.executable, "-m", "mlflow", "server",
        "--backend-store-uri", backend_uri,
        "--artifacts-destination", str(Path(artifacts).resolve()),
        "--host", host, "--port", str(port), "--workers", "1",
    ]


def server_env() -> dict[str, str]:
    return {**os.environ, **telemetry.ENVIRONMENT, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}


def start_server(backend_uri: str, artifacts: str | Path, port: int = 5000, log: Path | None = None,
                 timeout: float = 60.0) -> subprocess.Popen:
    """Start the server in a new process group and wait until it answers; stop it with ``stop_server``."""
    out = open(log, "ab") if log is not None else subprocess.DEVNULL
    process = subprocess.Popen(server_command(backend_uri, artifacts, port=port), env=server_env(),
                               stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_ready(f"http://127.0.0.1:{port}", timeout, process)
    except BaseException:
        stop_server(process)
        raise
    return process


def wait_ready(url: str, timeout: float, process: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"mlflow server exited with {process.returncode} before answering at {url}")
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    raise TimeoutError(f"mlflow server did not answer at {url} within {timeout:.0f} s")


def stop_server(process: subprocess.Popen) -> None:
    """SIGTERM to the server's process group, SIGKILL if it lingers."""
    if process.poll() is not None:
        return
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def search_runs(url: str, experiment_ids: list[str], filter_string: str = "") -> list[dict]:
    """``POST /api/2.0/mlflow/runs/search`` (what the UI's runs table asks)."""
    body = json.dumps({"experiment_ids": experiment_ids, "filter": filter_string, "max_results": 1000}).encode()
    request = urllib.request.Request(f"{url}/api/2.0/mlflow/runs/search", data=body,
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read()).get("runs", [])


def chart_url(url: str, experiment_id: str, metric: str = "val/all/s1_4/nats_per_token",
              sweep_id: str | None = None) -> str:
    """The runs page in chart view holding every run that logged ``metric`` (e.g. M_1/4, M~_1/4 and P_1/4 for
    ``val/all/s1_4/nats_per_token``), optionally of one sweep, as top-level rows sorted by it.

    The sort is what keeps the trials flat: sorted by start time (the default) the UI also fetches each
    matching trial's parent run, the sweep's, and folds the trials under it, collapsed and so not charted.
    """
    key = f"metrics.`{metric}`"
    search = f"{key} > 0" + (f" and tags.sweep_id = '{sweep_id}'" if sweep_id else "")
    query = {"searchFilter": search, "orderByKey": key, "orderByAsc": "true", "compareRunsMode": "CHART",
             "workflowType": "machine_learning"}  # the classic runs view, not the GenAI one
    return f"{url}/#/experiments/{experiment_id}/runs?{urlencode(query, quote_via=quote)}"


def stop_with_parent() -> None:
    """On Linux, have the kernel send this process SIGTERM when its parent dies: ``kill <pid of nox -s
    mlflow_ui>`` ends nox at once, without passing the signal on to the session's command."""
    if not sys.platform.startswith("linux"):
        return
    import ctypes

    PR_SET_PDEATHSIG = 1
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def main(argv: list[str] | None = None) -> None:
    telemetry.apply()

    def stop(signum, frame):  # SIGTERM (e.g. `kill` of the session) stops the server as Ctrl-C does
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)
    parent = os.getppid()
    stop_with_parent()
    if os.getppid() != parent:  # the parent died before the kernel was told to signal us
        return
    root = project_root()
    parser = argparse.ArgumentParser(description="Serve the MLflow UI of this repository on 127.0.0.1")
    parser.add_argument("--backend-store-uri", default=f"sqlite:///{root}/mlflow.db")
    parser.add_argument("--artifacts", default=str(root / "mlartifacts"))
    parser.add_argument("--experiment", default="projectable")
    parser.add_argument("--port", type=int, default=5000)
    parser.add_argument("--chart", default="val/all/s1_4/nats_per_token",
                        help="the metric whose runs the printed chart link compares")
    args = parser.parse_args(argv)
    try:
        process = start_server(args.backend_store_uri, args.artifacts, args.port)  # stops it if interrupted
    except KeyboardInterrupt:
        return
    url = f"http://127.0.0.1:{args.port}"
    try:
        from mlflow.tracking import MlflowClient

        found = MlflowClient(args.backend_store_uri).get_experiment_by_name(args.experiment)
        runs = f"{url}/#/experiments/{found.experiment_id}/runs" if found else f"{url}/#/experiments"
        print(f"MLflow UI: {runs} (experiment {args.experiment}); Ctrl-C or SIGTERM stops it", flush=True)
        if found:
            print(f"{args.chart} of every model on one chart (type it in 'Search metric charts'): "
                  f"{chart_url(url, found.experiment_id, args.chart)}", flush=True)
        process.wait()
    except KeyboardInterrupt:
        pass
    finally:
        stop_server(process)


if __name__ == "__main__":
    main()
