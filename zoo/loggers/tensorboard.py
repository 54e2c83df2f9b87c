"""``tensorboard``: event files in ``<run dir>/tensorboard`` (``tensorboard --logdir results/runs``).

Every numeric value of every record becomes a scalar under its tag (``eval/score``, ``train/critic_loss``,
``romi/weight_mean``, ``model/kstep_5``). A resumed run purges the events written after its checkpoint, as the
jsonl file drops those lines. Needs the ``tensorboard`` extra.
"""

from __future__ import annotations

from typing import Any

from zoo.registry import register, require_extra

INSTALL_HINT = "the tensorboard logger needs TensorBoard, an optional extra: pip install 'mbrl-zoo[tensorboard]'"


@register("logger", "tensorboard")
class TensorBoardLogger:
    """TensorBoard event files in the run directory (extra: tensorboard)."""

    @classmethod
    def check(cls) -> None:
        require_extra("tensorboard", INSTALL_HINT)

    def __init__(self, run: Any) -> None:
        self.check()
        from torch.utils.tensorboard import SummaryWriter

        self.log_dir = run.run_dir / "tensorboard"
        # A resumed run keeps the events up to its checkpoint's step (as metrics.jsonl keeps its lines) and drops
        # the later ones, which it writes again.
        purge = run.start_step + 1 if run.start_step > 0 else None
        self._writer = SummaryWriter(log_dir=str(self.log_dir), purge_step=purge)

    def log(self, record: dict[str, Any]) -> None:
        from zoo.loggers import scalars

        step = int(record.get("step", 0))
        for tag, value in scalars(record).items():
            self._writer.add_scalar(tag, value, step)
        if record.get("kind") in ("eval", "model", "rule"):
            self._writer.flush()  # visible to a running `tensorboard` at every evaluation

    def close(self) -> None:
        self._writer.close()
