"""Orchestration of the Projectable Models experiments, in layers that import one way:

* entry points: ``train`` (one run), ``sweep`` (an experiment's grid on Ray Tune), ``sweep_source_size``
  (Table 3), ``prepare_data`` (data caches before a sweep); ``config`` (the Hydra tree -> typed configs, and
  what "the same config" means); ``telemetry`` (the environment every process runs with);
* ``base``: typed config sections, ``ConfigError`` and paths; every other layer imports it, it imports none;
* ``run``: what one run trains and evaluates (trainees, datasets, optimisation, evaluation, checkpoints);
* ``orchestration``: planning sweeps and running them on Ray Tune;
* ``tracking``: the MLflow store, sweeps and runs in it, the UI server;
* ``reporting``: one module per paper artefact on a shared toolkit; reads tracking, never the trainer.

Depends on the library packages (``projectable``, ``projectable_data``, ``projectable_vqvae``), never the
reverse."""
