"""``wandb``: Weights & Biases. Project, group and name come from the run id; the resolved config is the run's
config; offline mode (``WANDB_MODE=offline``) writes ``<run dir>/wandb/offline-run-*`` without a network, to be
synced later with ``wandb sync``. Needs the ``wandb`` extra.

- project: ``$WANDB_PROJECT``, else ``mbrl-zoo-<suite>``
- group: ``<task>/<algo>/<config hash>`` (the seeds of one configuration)
- name: ``<algo> <task> seed<k>``; id: a hash of the run id, so a resumed run continues the same W&B run.
"""

from __future__ import annotations

import hashlib
import os
from typing import Any

from zoo.registry import register, require_extra

INSTALL_HINT = "the wandb logger needs Weights & Biases, an optional extra: pip install 'mbrl-zoo[wandb]'"


def wandb_identity(run: Any) -> dict[str, str]:
    """project, group, name and id of a zoo run (see the module docstring)."""
    return {
        "project": os.environ.get("WANDB_PROJECT") or f"mbrl-zoo-{run.suite}",
        "group": f"{run.task}/{run.algo}/{run.config_hash}",
        "name": f"{run.algo} {run.task} seed{run.seed}",
        "id": hashlib.sha256(run.run_id.encode()).hexdigest()[:16],
    }


@register("logger", "wandb")
class WandbLogger:
    """Weights & Biases run named after the run id; offline mode works without a network (extra: wandb)."""

    @classmethod
    def check(cls) -> None:
        require_extra("wandb", INSTALL_HINT)

    def __init__(self, run: Any) -> None:
        self.check()
        import wandb

        self.identity = wandb_identity(run)
        self._run = wandb.init(
            dir=str(run.run_dir),
            config={**run.config, "suite": run.suite, "task": run.task, "algo": run.algo, "seed": run.seed},
            resume="allow",
            reinit="create_new",
            settings=wandb.Settings(silent=True, console="off"),
            **self.identity,
        )

    def log(self, record: dict[str, Any]) -> None:
        from zoo.loggers import finite, scalars

        values = finite(scalars(record))
        if values:
            self._run.log(values, step=int(record.get("step", 0)))

    def close(self) -> None:
        self._run.finish()
