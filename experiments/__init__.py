"""Orchestration of the Projectable Models experiments: Hydra configs, one ``train(cfg)``, Ray Tune sweeps,
MLflow tracking and the Table 1 report. Depends on the library packages, never the reverse."""
