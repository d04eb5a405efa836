"""An MLflow pyfunc model over a run's safetensors weights (MLflow's models-from-code: this file is copied
into every logged model and needs only ``projectable``, torch, numpy and pandas to load).

``mlflow.pyfunc.load_model(uri).predict(frame)`` takes a DataFrame with a column ``tokens`` (one sequence of
token ids per row) and, for a conditional model or a projected P_s, ``task`` (its task vector), and returns a
DataFrame with ``nats_per_token``: each sequence's mean negative log-likelihood, the number the run logged
per validation image. The model config says which model the weights hold: ``{"kind": "unconditional" |
"conditional" | "projected", "scale": s}`` (P_s of the projected weights for ``scale``), the artifact
``config`` (older models: the model config).
"""

import json

import mlflow
import numpy as np
import pandas as pd
import torch


class ProjectableModel(mlflow.pyfunc.PythonModel):
    def load_context(self, context):
        from projectable import GPT, ProjectableGPT

        config = dict(context.model_config or {})  # models logged before the config became an artifact
        if "config" in context.artifacts:
            with open(context.artifacts["config"]) as file:
                config = json.load(file)
        self.kind, self.scale = config["kind"], config.get("scale")
        path = context.artifacts["weights"]
        self.model = (ProjectableGPT if self.kind == "projected" and self.scale else GPT).load(path).eval()

    # The DataFrame hint tells MLflow the input is a frame (the logged signature validates its columns); without
    # a hint MLflow warns on every load.
    def predict(self, context, model_input: pd.DataFrame, params: dict | None = None) -> pd.DataFrame:
        frame = model_input if isinstance(model_input, pd.DataFrame) else pd.DataFrame(model_input)
        tokens = torch.as_tensor(np.stack([np.asarray(t) for t in frame["tokens"]]), dtype=torch.long)  # (B, T)
        task = None
        if "task" in frame and frame["task"].notna().all():
            task = torch.as_tensor(np.stack([np.asarray(t) for t in frame["task"]]), dtype=torch.float32)  # (B, D)
        with torch.no_grad():
            if self.kind == "projected" and self.scale:
                if task is None:
                    raise ValueError("a projected model P_s needs a task vector per sequence (column 'task')")
                nll = self.model.sequence_nll(tokens, task, scale=float(self.scale))
            else:
                conditional = self.model.config.conditional
                if conditional and task is None:
                    raise ValueError("a conditional model needs a task vector per sequence (column 'task')")
                nll = self.model.sequence_nll(tokens, task if conditional else None)
        return pd.DataFrame({"nats_per_token": nll.double().numpy()})


mlflow.models.set_model(ProjectableModel())
