"""Where the HF trainers' log dicts go: to the `sidrec.train` logger when logging is set up (the pipeline writes it to
RUN/log.txt), printed under the progress bar as transformers does otherwise (`sidrec sft`, `sidrec rl`)."""

from __future__ import annotations

import logging

from transformers.trainer_callback import ProgressCallback

logger = logging.getLogger("sidrec.train")


class LoggedProgress(ProgressCallback):
    def on_log(self, args, state, control, logs=None, **kwargs):
        if not logger.hasHandlers():
            return super().on_log(args, state, control, logs=logs, **kwargs)
        if state.is_world_process_zero and logs:
            logger.info("step %s: %s", state.global_step, {k: v for k, v in logs.items() if k != "total_flos"})


def log_progress(trainer) -> None:
    """Swap the trainer's progress callback for `LoggedProgress` (same bar, log dicts to the logger)."""
    trainer.remove_callback(ProgressCallback)
    trainer.add_callback(LoggedProgress)
