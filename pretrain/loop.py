"""The loop every trainer runs (self-supervised pretraining and the supervised control).

One update at a time to ``recipe["steps"]`` behind a progress bar: the update's loss and time go
into the metrics window, logged every ``log_every`` steps; the state is saved every
``ckpt_every`` steps and at the end; a loss that is no longer finite stops the run with the last
good state named; SIGTERM or Ctrl-C finishes the update in flight, saves the state and returns
"stopped" (under DDP every rank stops at the same step), so the same command resumes. A trainer
says what one update, a log record, a save and the end of the run are.
"""
from __future__ import annotations

import contextlib
import math
import signal
import time
from pathlib import Path
from typing import Any

from tqdm import tqdm

from pretrain.metrics_log import Window
from pretrain.state import diverged


class TrainingLoop:
    """``fit`` over the hooks a trainer implements: ``train_step`` (one update, advancing ``step``:
    its loss and any other values to log), ``log_window`` (a log record from ``window``), ``save``
    and ``finish``; ``stop_agreed`` and ``is_main`` for runs over several processes."""

    name: str
    step: int
    recipe: dict[str, Any]  # steps, lr, log_every, ckpt_every (throttle_s: optional)
    state_path: Path
    saved_step: int | None  # the step of the state this run last saved or resumed from
    window: Window
    stopped_by: int = 0  # the signal the run stopped on (fit returned "stopped")
    _stop_requested: int = 0  # the signal that asked the loop to stop (SIGTERM, SIGINT), 0: none

    def train_step(self) -> tuple[float, dict[str, float]]:
        raise NotImplementedError

    def log_window(self, index: int) -> None:
        raise NotImplementedError

    def save(self) -> None:
        raise NotImplementedError

    def finish(self) -> Any:
        raise NotImplementedError

    def postfix(self) -> dict[str, Any]:
        """What the progress bar shows besides the loss."""
        return {}

    def stop_agreed(self, requested: bool) -> bool:
        """Whether the run stops after this update (one process: its own request)."""
        return requested

    @property
    def is_main(self) -> bool:
        return True

    def fit(self) -> str:
        """Train to ``recipe["steps"]``; returns "done" (the run finished and exported) or "stopped"."""
        r, previous = self.recipe, {}
        with contextlib.suppress(ValueError):  # only the main thread may set signal handlers
            previous = {sig: signal.signal(sig, self._on_stop) for sig in (signal.SIGTERM, signal.SIGINT)}
        bar = tqdm(total=r["steps"], initial=self.step, disable=not self.is_main, dynamic_ncols=True,
                   desc=self.name, mininterval=1.0)
        try:
            status = self.run(bar)
        finally:
            bar.close()
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        if status == "done":
            self.finish()
        return status

    def run(self, bar: tqdm) -> str:
        r, total = self.recipe, self.recipe["steps"]
        while self.step < total:
            index, start = self.step, time.perf_counter()
            loss, values = self.train_step()
            if r.get("throttle_s"):
                time.sleep(r["throttle_s"])
            if not math.isfinite(loss):
                raise diverged(self.name, f"the loss became {loss}", index, r["lr"], self.state_path, self.saved_step)
            for key, value in {"loss": loss, **values, "step_time": time.perf_counter() - start}.items():
                self.window.setdefault(key, []).append(value)
            bar.update(1)
            bar.set_postfix(loss=f"{loss:.4f}", **self.postfix(), refresh=False)
            if self.step % r["log_every"] == 0 or self.step == total:
                self.log_window(index)
            if self.step % r["ckpt_every"] == 0 or self.step == total:
                self.save()
            if self.stop_agreed(bool(self._stop_requested)) and self.step < total:
                self.stopped_by = self._stop_requested or signal.SIGTERM  # another rank's signal: SIGTERM
                if self.step % r["ckpt_every"]:
                    self.save()
                return "stopped"
        return "done"

    def _on_stop(self, signum: int, frame: Any) -> None:
        self._stop_requested = signum
