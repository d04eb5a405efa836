"""A run's final models as MLflow models: a pyfunc flavour over the safetensors files
(``pyfunc_model.py``), with a signature, an input example and explicit pip requirements, each linked to the
validation metrics of its width as a logged model. ``mlflow.pyfunc.load_model(f"models:/{model_id}")``, or
the run page's "Logged models", give per-sequence nats/token, logits and samples (``params={"output": ...}``),
and for a projected P_s the generated small model (``.unwrap_python_model().generate(t)``); see
``pyfunc_model.py``. Why a pyfunc and not ``mlflow.pytorch``: the pytorch flavour pickles the module, which
ties a model to the class layout of the code that saved it, while the pyfunc reads the same safetensors files
``GPT.load`` / ``ProjectableGPT.load`` read, so a model logged today loads with tomorrow's code.

Loading needs no checkout of this repository: the ``projectable`` package is logged with the model as a code
path (``code/projectable``, put on ``sys.path`` by MLflow), and ``requirements.txt`` names only packages from
an index: the core's own dependency ranges (``torch>=2.4``: pip picks the platform's default build, CUDA on
Linux; install torch first from https://download.pytorch.org/whl/cpu for a CPU-only machine), pandas, and the
mlflow that logged it.

Logged-model names are ``<what>-<width>`` (``unconditional-s1_4``, ``conditional-s1_4``, ``source-s1``,
``projected-s1_4`` whatever its weight generator, which a ``generator`` tag names; a generator that reads no
source logs no ``source-*``): never a run artifact folder's name (``model``, ``samples``, ``eval``,
``config``), which MLflow 3 would resolve ``runs:/<id>/<name>`` to as well. Which model the weights hold is
the logged model's ``config`` artifact (not MLflow's ``model_config``, which it would log as run params).
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Mapping
from pathlib import Path

import mlflow
import pandas as pd
from mlflow.models import ModelSignature
from mlflow.types import ColSpec, DataType, ParamSchema, ParamSpec, Schema
from mlflow.types.schema import Array

PYFUNC_CODE = Path(__file__).with_name("pyfunc_model.py")
ROLE_NAMES = {"M_s": "unconditional", "M~_s": "conditional", "source": "source", "P_s": "projected"}


def signature() -> ModelSignature:
    inputs = Schema([ColSpec(Array(DataType.long), "tokens"), ColSpec(Array(DataType.double), "task", required=False)])
    params = ParamSchema([ParamSpec("output", DataType.string, "nats_per_token"), ParamSpec("n", DataType.long, 1),
                          ParamSpec("temperature", DataType.double, 1.0), ParamSpec("top_k", DataType.long, 0),
                          ParamSpec("seed", DataType.long, 0)])
    return ModelSignature(inputs=inputs, params=params)  # the output's columns depend on params["output"]


# The core's dependencies when its installed metadata cannot be read (the ranges of packages/core/pyproject.toml).
CORE_REQUIREMENTS = ("torch>=2.4", "safetensors>=0.4", "einops>=0.7", "numpy>=1.24")


def pip_requirements() -> list[str]:
    """What loading needs from a package index (``projectable`` itself travels as a code path): the core's
    dependency ranges, pandas and the mlflow that logged the model."""
    from importlib import metadata

    try:
        core = [r for r in metadata.requires("projectable-core") or () if "extra ==" not in r]
    except metadata.PackageNotFoundError:
        core = []
    return [*(core or CORE_REQUIREMENTS), f"pandas>={pd.__version__.split('.')[0]}", f"mlflow=={mlflow.__version__}"]


def code_paths() -> list[str]:
    """The ``projectable`` package's folder, logged with every model so that loading needs no checkout."""
    import projectable

    return [str(Path(projectable.__file__).parent)]


def input_example(tokens, tasks, conditional: bool) -> pd.DataFrame:
    """Two validation sequences (and their task vectors where the model takes them)."""
    frame = pd.DataFrame({"tokens": [row.tolist() for row in tokens[:2]]})
    if conditional:
        frame["task"] = [row.double().tolist() for row in tasks[:2]]
    return frame


def log_models(trainee, folder: Path, metrics: Mapping[str, float], step: int, example_batch,
               register: str | None = None) -> dict[str, str]:
    """Log every model of the run's final weights in ``folder``; link each to its width's final validation
    metrics. Returns {logged-model name: model id}. ``register`` names a registered model for the run's
    first projected model (or its only model)."""
    from experiments.run.trainees import MODEL_FILE, PROJECTABLE_FILE, ProjectedTrainee

    ids = {}
    roles = trainee.roles()
    registered = register
    with tempfile.TemporaryDirectory() as tmp:
        for key, role in roles.items():
            projected = role == "P_s"
            if projected:
                scale = next(s for s in trainee.model.config.scales if trainee.projected_key(s) == key)
                config, weights = {"kind": "projected", "scale": scale}, folder / PROJECTABLE_FILE
            else:
                kind = "conditional" if role == "M~_s" else "unconditional"
                config, weights = {"kind": kind}, folder / MODEL_FILE
            # an artifact, not ``model_config``: MLflow logs a model_config as run params, beside the config's
            config_file = Path(tmp) / f"{key}.json"
            config_file.write_text(json.dumps(config))
            conditional = projected or role == "M~_s"
            generator = {"generator": trainee.model.config.generator} if projected else {}
            take_registration = registered if (projected or not isinstance(trainee, ProjectedTrainee)) else None
            info = mlflow.pyfunc.log_model(
                name=f"{ROLE_NAMES[role]}-{key}", python_model=str(PYFUNC_CODE),
                artifacts={"weights": str(weights), "config": str(config_file)}, signature=signature(),
                input_example=input_example(example_batch.tokens, example_batch.task, conditional),
                pip_requirements=pip_requirements(), code_paths=code_paths(), registered_model_name=take_registration,
                tags={"model_role": role, "width": key, **generator}, step=step,
            )
            if take_registration:
                registered = None
            linked = {k: v for k, v in metrics.items() if k.split("/")[2:3] == [key]}
            mlflow.log_metrics(linked, step=step, model_id=info.model_id)
            ids[info.name] = info.model_id
    return ids
