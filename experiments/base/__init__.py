"""The bottom layer of ``experiments``: what every other layer (``run``, ``tracking``, ``orchestration``,
``reporting``, the entry points) may import at the top of its modules, and which imports none of them.

* ``sections``: typed, validated config sections (``build_section``) and the ``ConfigError`` that names the
  bad key and its fix;
* ``paths``: where the code and the runs live.

The aggregate config of one run (``RunConfig``, ``parse_run``) and what "the same config" means stay in
``experiments.config``, which builds on these."""
