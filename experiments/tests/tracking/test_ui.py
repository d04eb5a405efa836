"""The UI entry point: it prints the runs table's URL and stops its server (a process group of its own) on
SIGTERM, as on Ctrl-C."""

from __future__ import annotations

import signal
import subprocess
import sys
import urllib.request

from experiments.tests.test_sweep import free_port


def test_sigterm_stops_the_server_it_started(tmp_path):
    port = free_port()
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
