"""The training loop: AdamW, warm-up + cosine, clipping, scheduled sampling, validation, checkpoints.

Determinism: batch order comes from (seed, epoch) and every step reseeds torch from
(seed, step), so N steps followed by a resume of N more equals 2N steps exactly.
"""

from __future__ import annotations

import math
import signal
import threading
import time
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from neurohorizon.config import RunConfig, SamplingConfig, to_dict
from neurohorizon.data.dataset import collate, fetch
from neurohorizon.data.progress import refresh_interval
from neurohorizon.evaluation.predict import pooled_bps, predict_dataset
from neurohorizon.losses import masked_nll_sum
from neurohorizon.model.feedback import FEEDBACK_MODES, feedback_counts
from neurohorizon.training import distributed as dist_utils
from neurohorizon.training.checkpoint import load_checkpoint, save_checkpoint
from neurohorizon.training.logger import RunLogger
from neurohorizon.training.schedules import ScheduleConfig, mix_inputs, teacher_forcing_prob


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite; the last good checkpoint is kept."""


@dataclass
class TrainState:
    step: int = 0
    epoch: int = 0
    batch_in_epoch: int = 0
    best_metric: float = -math.inf
    best_step: int = -1
    # the step the LR cosine and the sampling schedule follow; it advances schedule_rate per
    # step (1, or more when train.fit_to_time fits the schedules into train.max_minutes)
    schedule_step: float = 0.0
    schedule_rate: float = 1.0
    train_seconds: float = 0.0  # wall time spent training so far: a resume keeps what is left of max_minutes


PREDICTION_SOURCES = ("passes", "rollout")  # where scheduled sampling gets the model's own counts
PACE_STEPS = 100  # steps timed before checking that max_steps fits in max_minutes
EARLY_PACE_STEPS = 10  # a first, rougher check: a cap of a minute or less allows fewer than PACE_STEPS


def schedule_from(cfg: SamplingConfig) -> ScheduleConfig:
    """The ε schedule of `sampling.*`, after checking the keys that say how ε is used."""
    if cfg.predictions_from not in PREDICTION_SOURCES:
        raise ValueError(f"sampling.predictions_from must be one of {PREDICTION_SOURCES}, "
                         f"got {cfg.predictions_from!r}")
    if cfg.feedback not in FEEDBACK_MODES:
        raise ValueError(f"sampling.feedback must be one of {FEEDBACK_MODES}, got {cfg.feedback!r}")
    if isinstance(cfg.passes, bool) or not isinstance(cfg.passes, int) or cfg.passes < 2:
        # one pass makes no predictions to mix in: ε would decay in the log while training
        # stayed teacher-forced
        raise ValueError(f"sampling.passes must be an integer >= 2 (one no-grad pass makes the fed-back "
                         f"counts), got {cfg.passes!r}")
    return ScheduleConfig(
        kind=cfg.kind, unit=cfg.unit, warmup=cfg.warmup, floor=cfg.floor,
        value=cfg.value, n=cfg.n, k=cfg.k,
    )


def warmup_cosine(warmup: int, total: int):
    """LR multiplier: linear warm-up, then cosine decay to 10% at `total` steps."""

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / max(1, warmup)
        progress = min(1.0, (step - warmup) / max(1, total - warmup))
        return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress))

    return factor


def to_device(batch: dict, device) -> dict:
    return {k: v.to(device, non_blocking=True) if torch.is_tensor(v) else v for k, v in batch.items()}


def drop_units(batch: dict, fraction: float, generator: torch.Generator) -> dict:
    """Unit-dropout augmentation: remove a random subset of units from input and target."""
    if fraction <= 0:
        return batch
    mask = batch["unit_mask"]
    keep = torch.rand(mask.shape, generator=generator) >= fraction
    keep = keep.to(mask.device) & mask
    keep[keep.sum(1) == 0] = mask[keep.sum(1) == 0]  # never drop every unit of a window
    # a per-window table over unit ids (0 = padding, never dropped), gathered per spike: O(B*(V+S))
    # where comparing every spike with every unit cost O(B*S*N) and ~13 ms a step on a GPU host
    units, spike_units = batch["units"], batch["spike_units"]
    n_ids = int(max(units.max(), spike_units.max())) + 1
    dropped = torch.zeros(units.shape[0], n_ids, dtype=torch.bool, device=units.device)
    dropped.scatter_(1, units, mask & ~keep)
    dropped[:, 0] = False
    spike_dropped = dropped.gather(1, spike_units)
    out = dict(batch)
    out["unit_mask"] = keep
    out["spike_mask"] = batch["spike_mask"] & ~spike_dropped
    for key in ("context_counts", "target_counts"):
        out[key] = batch[key] * keep[:, None, :]
    return out


# (key, lowest allowed value, whether the value itself is allowed): a bad one fails before any work
_TRAIN_BOUNDS = (("batch_size", 1, True), ("max_steps", 1, True), ("eval_every", 1, True), ("checkpoint_every", 1, True),
                 ("log_every", 1, True), ("rollout_samples", 1, True), ("max_eval_windows", 1, True),
                 ("num_workers", 0, True), ("warmup_steps", 0, True), ("lr", 0, False), ("weight_decay", 0, True),
                 ("max_minutes", 0, True), ("grad_clip", 0, False))  # unit_dropout, ema_decay: in [0, 1), below


def check_train_config(tc) -> None:
    """A clear error naming the `train.` key whose value cannot work (a batch size of -1 used to
    hang the loop: no batch is ever drawn)."""
    for key, low, inclusive in _TRAIN_BOUNDS:
        value = getattr(tc, key)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or (
                value < low if inclusive else value <= low):
            raise ValueError(f"train.{key} must be {'>=' if inclusive else '>'} {low}, got {value!r}")
    if isinstance(tc.seed, bool) or not isinstance(tc.seed, int) or tc.seed < 0:
        raise ValueError(f"train.seed must be an integer >= 0, got {tc.seed!r}")
    for key in ("unit_dropout", "ema_decay"):
        value = getattr(tc, key)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value < 1.0:
            raise ValueError(f"train.{key} must be in [0, 1), got {value!r}")


class Trainer:
    """Trains a NeuroHorizon model on prepared data.

    Args:
        model: The forecaster (`NeuroHorizon`), already on `device`.
        likelihood: Count likelihood (`neurohorizon.losses`).
        data: `PreparedData` with train/valid datasets.
        cfg: The resolved run config (read by the loop, never passed to the model).
        run_dir: Run folder for logs and checkpoints.
        device: torch device.
    """

    def __init__(self, *, model, likelihood, data, cfg: RunConfig, run_dir: Path, device):
        self.cfg, self.data, self.device = cfg, data, device
        self.run_dir = Path(run_dir)
        self.likelihood = likelihood.to(device)
        self.rank, self.world = dist_utils.rank(), dist_utils.world_size()
        self.raw_model = model
        self.model = dist_utils.wrap(model, device)
        if cfg.train.compile:
            self.model = torch.compile(self.model)
        params = list(model.parameters()) + list(self.likelihood.parameters())
        self.optimizer = torch.optim.AdamW(params, lr=cfg.train.lr, weight_decay=cfg.train.weight_decay)
        check_train_config(cfg.train)
        if len(data.train) < cfg.train.batch_size:
            raise ValueError(f"the training split has {len(data.train)} windows, fewer than one batch of "
                             f"train.batch_size={cfg.train.batch_size}: lower it, or raise data.train_windows_per_epoch")
        self.ema = (AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(cfg.train.ema_decay), use_buffers=True)
                    if cfg.train.ema_decay > 0 else None)
        self.eval_model = self.ema.module if self.ema is not None else model  # validated, selected, shipped
        self.state = TrainState()
        lr_factor = warmup_cosine(cfg.train.warmup_steps, cfg.train.max_steps)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda _: lr_factor(self.state.schedule_step)
        )
        self.schedule = schedule_from(cfg.sampling)
        self.autoregressive = getattr(model, "decoder_kind", "autoregressive") == "autoregressive"
        self.amp = cfg.train.amp and device.type == "cuda"
        self.logger = RunLogger(self.run_dir, enabled=self.rank == 0)

    # ------------------------------------------------------------ batches
    def _batches(self):
        """Yield (epoch, index_in_epoch, batch) from the current state, deterministically."""
        train = self.data.train
        bs = self.cfg.train.batch_size
        while True:
            epoch = self.state.epoch
            if hasattr(train, "resample"):
                train.resample(self.cfg.train.seed * 100_003 + epoch)
            order = np.random.default_rng([self.cfg.train.seed, epoch]).permutation(len(train))
            n_batches = len(order) // bs
            if n_batches == 0:
                raise ValueError(f"training split has {len(order)} windows, fewer than one batch of {bs}")
            first = self.state.batch_in_epoch
            index_lists = [order[b * bs:(b + 1) * bs][self.rank::self.world].tolist() for b in range(first, n_batches)]
            yield from ((epoch, b, batch) for b, batch in enumerate(self._collated(index_lists), start=first))
            self.state.epoch += 1
            self.state.batch_in_epoch = 0

    def _collated(self, index_lists: list[list[int]]):
        """Batches of the given windows, built here or, with train.num_workers > 0, ahead of time by
        worker processes (the same items: with one thread the same losses to the bit; with more, the
        last float bit can differ. Made per epoch, after the windows are redrawn, so the workers see
        this epoch's windows)."""
        workers = self.cfg.train.num_workers
        if workers == 0:
            return (collate(fetch(self.data.train, idx)) for idx in index_lists)
        return iter(DataLoader(self.data.train, batch_sampler=index_lists, num_workers=workers,
                               collate_fn=collate, pin_memory=self.device.type == "cuda"))

    # --------------------------------------------------------------- step
    def teacher_forcing_prob(self) -> float:
        if not self.autoregressive:
            return 1.0
        st = self.state
        speed = st.schedule_step / st.step if st.step else 1.0
        return teacher_forcing_prob(self.schedule, step=st.schedule_step, epoch=st.epoch * speed)

    def model_inputs(self, batch, eps: float, generator: torch.Generator):
        """Scheduled sampling: the model's own counts (no-grad passes or a free-running rollout)
        mixed with the truth. The model makes them without dropout, as it does in rollout: fed
        back, they should be what the trained model feeds itself (on reach that lowered the
        teacher-forced/rollout gap, benchmarks/results/prior_rank_reach.json)."""
        truth = batch["target_counts"]
        if not self.autoregressive:
            return None
        inputs = truth
        if eps >= 1.0:
            return inputs
        sc = self.cfg.sampling
        if sc.predictions_from == "rollout":
            with self._autocast(), _eval_mode(self.model):
                own = self.raw_model.rollout(batch, self.likelihood, n_steps=truth.shape[1],
                                             feedback=sc.feedback, generator=generator)["counts"][0]
            return mix_inputs(truth, own.float().clone(), eps, generator)[0]  # clone: a normal tensor
        for _ in range(sc.passes - 1):
            with torch.no_grad(), self._autocast(), _eval_mode(self.model):
                params = self.model(batch, inputs).float()
            predicted = feedback_counts(self.likelihood, params, self.cfg.sampling.feedback, generator)
            inputs, _ = mix_inputs(truth, predicted, eps, generator)
        return inputs

    def loss(self, batch, params):
        nll = self.likelihood.nll(params.float(), batch["target_counts"])
        total, count = masked_nll_sum(nll, batch["unit_mask"])
        count = dist_utils.all_reduce_sum(count.detach())  # normalise by the GLOBAL batch
        return total / count.clamp_min(1.0) * self.world

    def _autocast(self):
        if self.amp:
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return nullcontext()

    def train_step(self, batch) -> dict:
        # each rank draws its own dropout, unit-dropout and scheduled-sampling randomness, as
        # the rows of one process do (a shared seed would repeat one rank's pattern on every rank)
        step_seed = self.cfg.train.seed * 1_000_003 + self.state.step + 7_919 * self.rank
        torch.manual_seed(step_seed)
        generator = torch.Generator(device=self.device).manual_seed(step_seed)
        cpu_gen = torch.Generator().manual_seed(step_seed)
        batch = drop_units(batch, self.cfg.train.unit_dropout, cpu_gen)
        batch = to_device(batch, self.device)
        self.model.train()
        eps = self.teacher_forcing_prob()
        inputs = self.model_inputs(batch, eps, generator)
        with self._autocast():
            params = self.model(batch, inputs, n_steps=batch["target_counts"].shape[1])
        loss = self.loss(batch, params)
        if not torch.isfinite(loss):
            raise TrainingDiverged(self._diverged(f"loss became {loss.item()}"))
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(self.optimizer.param_groups[0]["params"], self.cfg.train.grad_clip)
        if not torch.isfinite(grad_norm):
            raise TrainingDiverged(self._diverged(f"gradient norm became {grad_norm.item()}"))
        lr = self.optimizer.param_groups[0]["lr"]  # the rate this step uses (logged as such)
        self.optimizer.step()
        if self.ema is not None:
            self.ema.update_parameters(self.raw_model)
        self.state.schedule_step += self.state.schedule_rate  # before the LR of the next step is set
        self.scheduler.step()
        global_loss = dist_utils.all_reduce_sum(loss.detach()) / self.world  # the global-batch loss
        return {"loss": global_loss.item(), "eps": eps, "lr": lr,
                "grad_norm": grad_norm.item()}

    # ---------------------------------------------------------- validation
    @torch.no_grad()
    def validate(self) -> dict:
        preds = predict_dataset(
            self.eval_model, self.likelihood, self.data.valid, device=self.device,
            feedback=self.cfg.sampling.feedback, n_samples=self.cfg.train.rollout_samples,
            max_windows=self.cfg.train.max_eval_windows, seed=self.cfg.train.seed,
        )
        out = {"step": self.state.step}
        for kind in ("teacher_forced", "rollout"):
            out[f"val_{kind}_bps"] = pooled_bps(preds["groups"], kind)
        out["val_nll"] = float(preds["rollout_nll"])
        return out

    def _diverged(self, what: str) -> str:
        """The divergence message: which checkpoints are kept and what they hold, or that there are none."""
        last, best = self.run_dir / "last.pt", self.run_dir / "best.pt"
        restart = "lower train.lr or raise train.warmup_steps and start a new run"
        if not last.is_file():
            return (f"{what} at step {self.state.step + 1}; training stopped. No checkpoint had been saved yet, so "
                    f"{self.run_dir} holds only the settings and the log of the steps before; {restart}")
        saved = int(load_checkpoint(last)["step"])
        held = ("the weights that gave this" if saved == self.state.step else
                f"the last checkpoint before it (step {saved})")
        kept = f"{last} holds {held}"
        if best.is_file() and self.state.best_step >= 0:
            kept += f"; {best} the best validated model (step {self.state.best_step}), which `evaluate` uses"
        return (f"{what} at step {self.state.step + 1}; training stopped. {kept}. A resume replays the same "
                f"steps exactly, so it would diverge again: {restart}")

    # --------------------------------------------------------- checkpoints
    def checkpoint_state(self) -> dict:
        return {
            "model": self.raw_model.state_dict(),
            "likelihood": self.likelihood.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "step": self.state.step,
            "train_state": {**vars(self.state), "train_seconds": self.train_seconds()},
            "config": to_dict(self.cfg),
            "vocab": self.data.vocab.tokens,
            "model_kwargs": getattr(self.raw_model, "init_kwargs", {}),
            "rng": {"torch": torch.get_rng_state(), "numpy": np.random.get_state()},
            **({} if self.ema is None else {"ema_model": self.ema.module.state_dict(),
                                             "ema_n_averaged": int(self.ema.n_averaged)}),
        }

    def time_spent(self) -> bool:
        """train.max_minutes is used up (by this run's training over all its resumes)."""
        tc = self.cfg.train
        return tc.max_minutes > 0 and self.train_seconds() >= tc.max_minutes * 60

    def train_seconds(self) -> float:
        """Wall time spent training, over every call of `fit` (resumes included)."""
        clock = getattr(self, "_clock", None)
        return self.state.train_seconds if clock is None else clock[1] + time.monotonic() - clock[0]

    def save(self, name: str) -> Path | None:
        if self.rank != 0:
            return None
        return save_checkpoint(self.checkpoint_state(), self.run_dir / name)

    def resume(self, path: Path) -> None:
        # on the CPU: the RNG state must stay a CPU tensor; load_state_dict moves the rest
        state = load_checkpoint(path)
        self.raw_model.load_state_dict(state["model"])
        self.likelihood.load_state_dict(state["likelihood"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        if self.ema is not None:
            self.ema.module.load_state_dict(state["ema_model"])
            self.ema.n_averaged.fill_(state["ema_n_averaged"])
        train_state = {"schedule_step": float(state["step"]), **state["train_state"]}  # older checkpoints
        self.state = TrainState(**train_state)
        self._clock = None  # train_seconds comes from the checkpoint until `fit` starts its clock
        torch.set_rng_state(state["rng"]["torch"])
        np.random.set_state(state["rng"]["numpy"])
        self.logger.drop_rows_after(self.state.step)  # steps logged after this checkpoint are redone

    # ------------------------------------------------------------- the loop
    def fit(self, *, stop_after: int | None = None) -> TrainState:
        """Train until max_steps (or `stop_after` more steps, or max_minutes); returns the state."""
        tc = self.cfg.train
        end = tc.max_steps if stop_after is None else min(tc.max_steps, self.state.step + stop_after)
        self._clock = (time.monotonic(), self.state.train_seconds)  # train_seconds before this call
        deadline = self._clock[0] + tc.max_minutes * 60 - self.state.train_seconds if tc.max_minutes > 0 else math.inf
        if self.rank == 0 and self.state.step == 0:
            for warning in self.schedule_warnings():
                tqdm.write(f"warning: {warning}")
        bar = tqdm(total=end, initial=self.state.step, desc="train", disable=self.rank != 0,
                   dynamic_ncols=True, mininterval=refresh_interval())
        batches = self._batches()
        first = self.state.step
        with self._stop_on_interrupt():
            self._loop(batches, end, deadline, first, bar)
        bar.close()
        timed_out = self._time_up(deadline)  # on every rank: it is a collective under DDP
        if self.rank == 0 and timed_out and not self.schedules_done():
            tqdm.write(f"warning: train.max_minutes={tc.max_minutes:g} stopped the run at step {self.state.step}, "
                       f"{100 * self.state.schedule_step / tc.max_steps:.0f} % of the way through its learning-rate "
                       f"and sampling schedules (ε {self.teacher_forcing_prob():.2f}, lr "
                       f"{self.optimizer.param_groups[0]['lr']:.2g}): the model is not annealed; `neurohorizon train "
                       f"--resume {self.run_dir} train.max_minutes=M` continues it with a larger total budget")
        if self._paused(end, deadline):  # validating here would add a point the whole run never has
            self.save("last.pt")
        elif self.state.step % tc.eval_every != 0:
            self._evaluate_and_checkpoint()
        self.logger.close()
        self.state.train_seconds = self.train_seconds()
        return self.state

    def _paused(self, end: int, deadline: float) -> bool:
        """Stopped by `stop_after` before the run's own end (max_steps, the schedules, max_minutes)."""
        return end < self.cfg.train.max_steps and not self.schedules_done() and not self._time_up(deadline)

    def schedules_done(self) -> bool:
        """The LR cosine and the sampling schedule have run their course: max_steps steps, or
        fewer steps advanced faster to fit train.max_minutes (`_fit_schedules_to_time`)."""
        return self.state.schedule_step >= self.cfg.train.max_steps - 1e-6

    @contextmanager
    def _stop_on_interrupt(self):
        """Ctrl-C, or SIGTERM from a scheduler, lets the current step finish, saves last.pt and
        stops, so `train --resume` loses nothing. torchrun forwards either signal to every rank;
        the ranks agree each step (`_stop_requested`), so all stop after the same step. A second
        signal stops a single process at once; under torchrun, its --shutdown_timeout does."""
        self._interrupted = False
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        stop_signals = (signal.SIGINT, signal.SIGTERM)
        previous = {s: signal.getsignal(s) for s in stop_signals}

        def handler(signum, frame):
            self._interrupted = True
            if self.world == 1:
                for s in stop_signals:
                    signal.signal(s, previous[s])

        for s in stop_signals:
            signal.signal(s, handler)
        try:
            yield
        finally:
            for s in stop_signals:
                signal.signal(s, previous[s])

    def _stop_requested(self) -> bool:
        """Whether any rank was signalled (one tiny all-reduce per step under DDP)."""
        if self.world == 1:
            return self._interrupted
        return dist_utils.all_reduce_sum(torch.tensor([float(self._interrupted)], device=self.device)).item() > 0

    def _loop(self, batches, end: int, deadline: float, first: int, bar) -> None:
        tc = self.cfg.train
        while self.state.step < end and not self.schedules_done() and not self._time_up(deadline):
            epoch, b, batch = next(batches)
            row = self.train_step(batch)
            self.state.step += 1
            self.state.batch_in_epoch = b + 1
            bar.set_postfix(loss=f"{row['loss']:.4f}", eps=f"{row['eps']:.2f}", refresh=False)
            bar.update(1)  # redraws (with the postfix) at the bar's refresh interval, not every step
            if self.state.step % tc.log_every == 0 or self.state.step == 1:
                self.logger.log("train", {"step": self.state.step, "epoch": epoch, **row})
            if self.state.step == first + 1:  # timed from here: step 1 pays one-off (CUDA) costs
                pace = (time.monotonic(), self.state.step)
            elif self.state.step - first - 1 in (min(EARLY_PACE_STEPS, PACE_STEPS), PACE_STEPS):
                # the early pace is rough (one-off costs, a busy machine): used only for caps that
                # would stop the run before the regular check
                self._fit_schedules_to_time(pace, deadline, only_before=None if self.state.step - first - 1 ==
                                            PACE_STEPS else first + 1 + PACE_STEPS)
            if self.state.step % tc.eval_every == 0:
                self._evaluate_and_checkpoint()
                if self.state.step > first + 1 + PACE_STEPS:  # validation time counts too
                    self._fit_schedules_to_time(pace, deadline)
            elif self.state.step % tc.checkpoint_every == 0:
                self.save("last.pt")
            if self._stop_requested():
                self.save("last.pt")
                dist_utils.barrier()  # no rank exits (and so gets its peers killed) before the save
                bar.close()
                self.logger.close()
                launch = "neurohorizon" if self.world == 1 else f"torchrun --nproc_per_node={self.world} -m neurohorizon"
                raise KeyboardInterrupt(f"stopped at step {self.state.step}; last.pt saved, continue with "
                                        f"`{launch} train --resume {self.run_dir}`")

    def schedule_warnings(self) -> list[str]:
        """Schedules that cannot finish within train.max_steps: nothing fails, the run just never
        gets there (e.g. the demo config's 300-step sampling warm-up with train.max_steps=60)."""
        tc, sc, out = self.cfg.train, self.cfg.sampling, []
        if tc.warmup_steps >= tc.max_steps:
            out.append(f"train.warmup_steps={tc.warmup_steps} >= train.max_steps={tc.max_steps}: the learning "
                       "rate never leaves its warm-up (lower train.warmup_steps)")
        if self.autoregressive and sc.kind != "constant":
            steps_per_unit = 1 if sc.unit == "step" else max(1, len(self.data.train) // tc.batch_size)
            last = tc.max_steps - 1
            eps_end = teacher_forcing_prob(self.schedule, step=last, epoch=last // steps_per_unit)
            if sc.warmup * steps_per_unit >= tc.max_steps:
                out.append(f"sampling.warmup={sc.warmup} {sc.unit}s >= train.max_steps={tc.max_steps} steps: "
                           f"the {sc.kind} scheduled sampling never starts, the whole run is teacher forcing "
                           "(lower sampling.warmup)")
            elif eps_end > sc.floor + 0.1:
                out.append(f"the {sc.kind} schedule does not finish within train.max_steps={tc.max_steps}: ε is "
                           f"still {eps_end:.2f} at the last step, above its floor {sc.floor:g} (shorten "
                           "sampling.warmup / sampling.n, or raise train.max_steps)")
        return out

    def _time_up(self, deadline: float) -> bool:
        """Past train.max_minutes, by rank 0's clock on every rank."""
        if deadline == math.inf:
            return False
        return bool(dist_utils.broadcast_scalar(float(time.monotonic() >= deadline), self.device))

    def _fit_schedules_to_time(self, pace: tuple, deadline: float, only_before: int | None = None) -> None:
        """The LR cosine and the sampling schedule follow max_steps. If the clock will stop the
        run first, make them advance faster so they end at ~90 % of the steps it allows
        (train.fit_to_time), else warn. Re-checked after each validation, so a machine that gets
        faster or slower is followed; the schedules never run backwards or slower than 1 per step."""
        tc, st = self.cfg.train, self.state
        now = time.monotonic()
        reach = st.step + (deadline - now) * (st.step - pace[1]) / max(now - pace[0], 1e-9)
        reach = dist_utils.broadcast_scalar(reach, self.device)  # rank 0's clock decides for all
        if only_before is not None and reach >= only_before:
            return
        remaining = tc.max_steps - st.schedule_step
        rate = max(1.0, remaining / max(0.9 * (reach - st.step), 1.0))
        rate = dist_utils.broadcast_scalar(rate, self.device)  # rank 0's clock decides for all
        if rate <= 1.0:
            st.schedule_rate = 1.0
            return
        if not tc.fit_to_time:
            if self.rank == 0 and not getattr(self, "_warned", False):
                self._warned = True
                tqdm.write(f"warning: at this pace train.max_minutes={tc.max_minutes:g} stops the run near step "
                           f"{reach:.0f} of {tc.max_steps}; the learning-rate cosine and the scheduled-sampling "
                           f"schedule follow train.max_steps and will not finish (lower train.max_steps).")
            return
        if self.rank == 0 and abs(rate - st.schedule_rate) > 0.05 * st.schedule_rate:
            tqdm.write(f"train.max_minutes={tc.max_minutes:g} allows ~{reach:.0f} of {tc.max_steps} steps at this "
                       f"pace: the LR cosine and the scheduled-sampling schedule now advance {rate:.2f} steps "
                       f"per step, to end near step {st.step + remaining / rate:.0f} "
                       f"(train.fit_to_time=false keeps them)")
        st.schedule_rate = rate

    def _evaluate_and_checkpoint(self) -> None:
        metrics = self.validate()
        metrics["teacher_forcing_prob"] = self.teacher_forcing_prob()
        self.logger.log("valid", metrics)
        score = metrics.get("val_rollout_bps", -math.inf)
        best = score > self.state.best_metric
        if best:  # chosen by ROLLOUT bits/spike, never teacher-forced
            self.state.best_metric, self.state.best_step = score, self.state.step
            self.save("best.pt")
        self.save("last.pt")
        if self.rank == 0:
            tf = metrics.get("val_teacher_forced_bps", math.nan)  # none for the parallel decoder
            tqdm.write(f"step {self.state.step}: validation rollout {score:.4f} bits/spike"
                       + (f", teacher-forced {tf:.4f}" if math.isfinite(tf) else "")
                       + (" (best so far: best.pt)" if best else f" (best: step {self.state.best_step})"))


@contextmanager
def _eval_mode(model: torch.nn.Module):
    """Run `model` in eval mode (no dropout) inside the block, then restore its mode."""
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)
