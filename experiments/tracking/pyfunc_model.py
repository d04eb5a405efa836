"""An MLflow pyfunc model over a run's safetensors weights (MLflow's models-from-code: this file is copied into
every logged model; the ``projectable`` package travels with it as a code path, so loading needs only torch,
numpy, safetensors, einops, pandas and mlflow from an index, not this repository).

``model = mlflow.pyfunc.load_model(uri)``; ``model.predict(frame, params={"output": ...})`` takes a DataFrame
with a column ``tokens`` (one sequence of token ids per row) and, for a conditional model or a projected P_s,
``task`` (its task vector), and returns a DataFrame:

* ``output="nats_per_token"`` (default): each sequence's mean negative log-likelihood, the number the run
  logged per validation image.
* ``output="logits"``: column ``logits``, per row a (T, V) nested list: the next-token logits at every
  position (for P_s, of the model generated for that row's task vector).
* ``output="samples"``: column ``tokens``, ``n`` sampled sequences per row (params ``n``, ``temperature``,
  ``top_k`` (0: all tokens), ``seed``); the input's ``tokens`` are ignored, its ``task`` conditions them.

The generated small model itself (a ``projectable.GPT``, Sec. 2.2) comes from the Python object:
``model.unwrap_python_model().generate(task_vector)``; ``.model`` is the loaded ``GPT`` or ``ProjectableGPT``.
The model config says which model the weights hold: ``{"kind": "unconditional" | "conditional" |
"projected", "scale": s}`` (P_s of the projected weights for ``scale``), the artifact ``config`` (older
models: the model config).
"""

import json

import mlflow
import numpy as np
import pandas as pd
import torch

OUTPUTS = ("nats_per_token", "logits", "samples")


class ProjectableModel(mlflow.pyfunc.PythonModel):
    def load_context(self, context):
        from projectable import GPT, ProjectableGPT

        config = dict(context.model_config or {})  # models logged before the config became an artifact
        if "config" in context.artifacts:
            with open(context.artifacts["config"]) as file:
                config = json.load(file)
        self.kind, self.scale = config["kind"], config.get("scale")
        path = context.artifacts["weights"]
        self.model = (ProjectableGPT if self.projected else GPT).load(path).eval()

    @property
    def projected(self) -> bool:
        return self.kind == "projected" and bool(self.scale)

    def generate(self, task_vector):
        """The standalone small GPT P_s(t) for one task vector (t,) (``ProjectableGPT.generate``)."""
        if not self.projected:
            raise ValueError(f"this is a {self.kind} model, not a projected P_s: there is no small model to generate")
        return self.model.generate(torch.as_tensor(np.asarray(task_vector), dtype=torch.float32), float(self.scale))

    def _tasks(self, frame: pd.DataFrame) -> torch.Tensor | None:
        task = None
        if "task" in frame and frame["task"].notna().all():
            task = torch.as_tensor(np.stack([np.asarray(t) for t in frame["task"]]), dtype=torch.float32)  # (B, D)
        conditional = self.projected or self.model.config.conditional
        if conditional and task is None:
            what = "a projected model P_s" if self.projected else "a conditional model"
            raise ValueError(f"{what} needs a task vector per sequence (column 'task')")
        return task if conditional else None

    # The DataFrame hint tells MLflow the input is a frame (the logged signature validates its columns); without
    # a hint MLflow warns on every load.
    def predict(self, context, model_input: pd.DataFrame, params: dict | None = None) -> pd.DataFrame:
        from projectable import sample

        params = dict(params or {})
        output = params.get("output", "nats_per_token")
        if output not in OUTPUTS:
            raise ValueError(f"params output={output!r} is not one of {OUTPUTS}")
        frame = model_input if isinstance(model_input, pd.DataFrame) else pd.DataFrame(model_input)
        task = self._tasks(frame)
        with torch.no_grad():
            if output == "samples":
                generator = torch.Generator().manual_seed(int(params.get("seed", 0)))
                n, top_k = int(params.get("n", 1)), int(params.get("top_k", 0)) or None
                rows = []
                for i in range(len(frame)):
                    model, row_task = self._model_for(task, i)
                    drawn = sample(model, n=n, task=None if row_task is None else row_task.expand(n, -1),
                                   temperature=float(params.get("temperature", 1.0)), top_k=top_k, generator=generator)
                    rows.append(drawn.tolist())
                return pd.DataFrame({"tokens": rows})
            tokens = torch.as_tensor(np.stack([np.asarray(t) for t in frame["tokens"]]), dtype=torch.long)  # (B, T)
            if output == "logits":
                logits = []
                for i in range(len(frame)):
                    model, row_task = self._model_for(task, i)
                    logits.append(model(tokens[i : i + 1], row_task)[0].double().tolist())  # (T, V)
                return pd.DataFrame({"logits": logits})
            if self.projected:
                nll = self.model.sequence_nll(tokens, task, scale=float(self.scale))
            else:
                nll = self.model.sequence_nll(tokens, task)
        return pd.DataFrame({"nats_per_token": nll.double().numpy()})

    def _model_for(self, task: torch.Tensor | None, row: int):
        """(model, task of shape (1, D) or None) that scores or samples row ``row``: P_s(t_row) for a projected model."""
        if self.projected:
            return self.generate(task[row]), None
        return self.model, None if task is None else task[row : row + 1]


mlflow.models.set_model(ProjectableModel())
