"""The environment every process of the toolkit runs with: no usage data leaves the machine (MLflow, Ray,
Hugging Face) and Ray trials keep the driver's working directory (they write absolute paths only).

Defined once, here. The entry points (``train``, ``sweep``, ``prepare_data``, the UI) call ``apply()``
before they import MLflow or Ray; the noxfile reads ``ENVIRONMENT`` from this file without importing the
package (it runs outside the project's virtualenv), and Ray trials get it through their runtime_env.
This module imports nothing, so that reading it has no other effect.
"""

ENVIRONMENT = {
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "DO_NOT_TRACK": "true",
    "RAY_USAGE_STATS_ENABLED": "0",
    "HF_HUB_OFFLINE": "1",
    "RAY_CHDIR_TO_TRIAL_DIR": "0",
    # MLflow draws a progress bar per artifact download (logging a model downloads its artifacts to check it):
    # a dozen bars per run that say nothing about the run
    "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
}


def apply() -> None:
    """Set every variable of ``ENVIRONMENT`` that the user has not set."""
    import os

    for key, value in ENVIRONMENT.items():
        os.environ.setdefault(key, value)
