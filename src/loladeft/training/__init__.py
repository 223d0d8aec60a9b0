"""Real cooperative fine-tuning on GLUE on a simulated edge clock (Algorithm 1).

- :mod:`loladeft.training.data`: GLUE tasks (TSV files offline, Hugging Face ``datasets``
  online), tokenizing with dynamic padding, i.i.d. partition over the devices.
- :mod:`loladeft.training.metrics`: the official metric of each task (scikit-learn / scipy).
- :mod:`loladeft.training.blocks`: LoRA parameters per block depth; truncated backward (the
  model itself comes from the registry, :mod:`loladeft.models`).
- :mod:`loladeft.training.clock`: per-round device states and schedules, the simulated clock.
- :mod:`loladeft.training.engine`: the DEFT round and the centralized step, non-finite
  checks, the run's state.
- :mod:`loladeft.training.checkpoint`: that state as safetensors + JSON, read without
  unpickling and checked against the run.
- :mod:`loladeft.training.run`: a run with its files (``loladeft train``).

Table I and Fig. 7 are made from these runs by :mod:`loladeft.experiments.table1`.

Importing this package loads neither torch nor transformers; they are imported by the
functions that need them.
"""
