"""torch and Ignite below the handlers: engines (build_trainer, build_evaluator), ignite.distributed
helpers, and reading checkpoint files (load, verify, find, fit)."""
