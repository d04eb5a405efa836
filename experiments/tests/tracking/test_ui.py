"""The UI entry point: it prints the runs table's URL and stops its server (a process group of its own) on
SIGTERM, as on Ctrl-C."""

from __future__ import annotations

import signal
import subprocess
import sys
import urllib.request


def test_sigterm_stops_the_server_it_started(tmp_path, free_port):
    port = free_port
    process = subprocess.Popen(
        [sys.executable, "-m", "experiments.tracking.ui", "--backend-store-uri", f"sqlite:///{tmp_path}/mlflow.db",
         "--artifacts", str(tmp_path / "artifacts"), "--port", str(port)],
        stdout=subprocess.PIPE, text=True)
    try:
        line = process.stdout.readline()
        assert f"http://127.0.0.1:{port}/#/experiments" in line
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5) as response:
            assert response.status == 200
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0
    finally:
        process.kill()
    try:
        urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2)
        raise AssertionError("the server still answers after SIGTERM")
    except OSError:
        pass


def test_chart_url_lists_one_widths_runs_of_a_sweep_flat_sorted_by_the_loss(tmp_path):
    """The chart link's search selects the trials that logged the metric (never their sweep's parent run), and
    sorts by the metric: sorted by start time the UI would fetch the parent and fold the trials under it."""
    from urllib.parse import parse_qs, urlsplit

    from mlflow.tracking import MlflowClient

    from experiments.tracking.ui import chart_url

    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    exp_id = client.create_experiment("projectable", artifact_location=str(tmp_path / "artifacts"))
    parent = client.create_run(exp_id, run_name="sweep s", tags={"role": "sweep", "sweep_id": "s"}).info.run_id
    losses = {"M4-seed0": 2.8, "Mc4-seed0": 2.7, "P4-seed0": 2.6, "M2-seed0": None}
    for name, loss in losses.items():
        run = client.create_run(exp_id, run_name=name, tags={"sweep_id": "s", "mlflow.parentRunId": parent})
        if loss is not None:
            client.log_metric(run.info.run_id, "val/all/s1_4/nats_per_token", loss, step=10)
    other = client.create_run(exp_id, run_name="M4-other-sweep", tags={"sweep_id": "t"}).info.run_id
    client.log_metric(other, "val/all/s1_4/nats_per_token", 2.5)

    for sweep, expected in ((None, ["M4-other-sweep", "P4-seed0", "Mc4-seed0", "M4-seed0"]),
                            ("s", ["P4-seed0", "Mc4-seed0", "M4-seed0"])):
        url = chart_url("http://127.0.0.1:5000", exp_id, "val/all/s1_4/nats_per_token", sweep_id=sweep)
        route = urlsplit(url).fragment
        assert route.startswith(f"/experiments/{exp_id}/runs?")
        query = {k: v[0] for k, v in parse_qs(route.split("?", 1)[1]).items()}
        assert query["compareRunsMode"] == "CHART" and query["workflowType"] == "machine_learning"
        assert query["orderByKey"] != "attributes.start_time"  # the sort under which the UI folds trials
        order = f"{query['orderByKey']} {'ASC' if query['orderByAsc'] == 'true' else 'DESC'}"
        found = client.search_runs([exp_id], query["searchFilter"], order_by=[order])
        assert [r.info.run_name for r in found] == expected


def test_a_run_prints_its_ui_link_only_when_a_server_answers(tmp_path, monkeypatch, free_port):
    from experiments.tracking import store

    monkeypatch.setattr(store, "experiment_id", lambda config: "7")
    config = store.TrackingConfig(uri=f"sqlite:///{tmp_path}/mlflow.db", artifacts=str(tmp_path / "a"))
    up = store.where(config, "abc", answers=lambda url: True)
    assert up.endswith("http://127.0.0.1:5000/#/experiments/7/runs/abc")
    down = store.where(config, "abc", answers=lambda url: False)
    assert "no MLflow UI answers at http://127.0.0.1:5000: start one with `nox -s mlflow_ui`" in down
    assert store.server_answers(f"http://127.0.0.1:{free_port}") is False  # nothing listens there

