"""What differs between one run and N replicas, behind one object: ``Runs``.

``train.replicas=N`` trains N seeds as one batched game (ganbench/replicas.py); each seed is still a run of its
own, in its own directory, with its own record, checkpoint and TensorBoard writer (an ``Output``), and it can
diverge while the others go on. A single run is N = 1 of the same object: one ``Output``, the game's whole
state as its checkpoint, torch's global RNG as its stream. ganbench/run/loop.py drives a ``Runs`` and never
asks which of the two it has.
"""
import contextlib
import logging
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import torch
from hydra.core.hydra_config import HydraConfig
from torch import nn

from ..archs import describe as describe_arch, one_line as arch_line
from ..errors import GanbenchError, one_line_error
from ..packing import packed_shape
from ..replicas import Layout, replica_overrides, split_state
from . import board, checkpoint
from .names import swept_keys
from .record import RunRecord
from .start import CHECKPOINT, Member, Start

log = logging.getLogger("ganbench")


def job_swept_keys() -> List[str]:
    """The keys this job's sweep varies (for the HParams tab); none outside a Hydra multirun."""
    try:
        return swept_keys(HydraConfig.get())
    except ValueError:  # not inside a Hydra app
        return []


class Output:
    """What one run writes while it trains: its record (results.json, metrics.jsonl), its TensorBoard
    writer, its evaluator, its fixed sample latents; and how it ended. A single run has one; N replicas
    have one each, in their own directories."""

    def __init__(self, start: Start, member: Member, overrides: List[str], step: int,
                 first: Optional["Output"] = None):
        from ..metrics import build_evaluator
        from ..metrics.evaluator import EXTRACTOR_GROUPS

        cfg, data, device, tc = member.cfg, start.data, start.device, start.spec.train
        self.member, self.run_dir, self.cfg = member, member.run_dir, cfg
        # Replicas share one feature extractor (an Inception network per replica would be N copies of one).
        shared = getattr(first.evaluator, "extractor", None) if first is not None else None
        self.evaluator = build_evaluator(cfg, data, device, member.run_dir, extractor=shared)
        self.image_metrics = any(g in EXTRACTOR_GROUPS for g in self.evaluator.groups)
        self.record = RunRecord(member.run_dir, member.config, overrides, resume_step=step,
                                best_samples=self.evaluator.s.num_samples if self.image_metrics else None)
        self.record.protocol = self.evaluator.protocol()
        # The networks as built (BogoNet's drawn sides included), for results.json, train.log and TensorBoard.
        self.record.architecture = describe_arch(cfg.arch, data.shape, start.spec.penalty.gradient_penalty,
                                                 packed_shape(data.shape, start.spec.pack))
        self.writer = board.open_writer(member.run_dir, step)
        if step == 0:
            board.log_config(self.writer, cfg, 0)
            board.log_architecture(self.writer, self.record.architecture, 0)
        # Fixed latents for samples: their own generator, so they are identical across resumes.
        fixed = torch.Generator().manual_seed(cfg.seed + 1)
        n_vis = tc.sample_grid if data.kind == "image" else max(tc.sample_grid * 40, 1000)
        self.z_fixed = torch.randn(n_vis, start.game.G.z_dim, generator=fixed).to(device)
        self.real_vis = data.sample_eval(n_vis, fixed).to(device) if data.kind == "points" else None
        self.status, self.diverged_step = "running", None
        self.t_start = time.perf_counter()  # set again as training begins (``Runs.begin``)
        self.z_dim, self.g_average = start.game.G.z_dim, tc.g_average
        # A replica's own log lines (those logged inside ``self.logging()``) go to its train.log only.
        self.seed = cfg.seed if start.replicated else None
        with self.logging():
            log.info("%s%s", self.prefix, arch_line(self.record.architecture))

    def logging(self) -> contextlib.AbstractContextManager:
        from .rundir import log_seed

        return log_seed(self.seed)

    @property
    def prefix(self) -> str:
        """What a replica's log lines start with (``seed=<s>: ``); nothing for a single run."""
        return f"seed={self.seed}: " if self.seed is not None else ""

    @property
    def active(self) -> bool:
        return self.status == "running"

    def wall(self) -> float:
        """This run's training time: its earlier starts' plus this one's so far."""
        return self.member.wall_before + time.perf_counter() - self.t_start

    def evaluate(self, G: nn.Module, G_avg: Optional[nn.Module], step: int, seen: int, final: bool) -> None:
        """Evaluate this run's generator (and its averaged copy, as ``ema_``/``avg_`` metrics) at ``step``,
        after ``seen`` real samples; record, plot and log the values."""
        ev = self.evaluator
        values = ev.evaluate(G, step, final=final, z_dim=self.z_dim)
        if G_avg is not None:
            prefix = "ema_" if self.g_average == "ema" else "avg_"
            values.update(ev.evaluate(G_avg, step, final=final, z_dim=self.z_dim, prefix=prefix))
        samples = (ev.s.num_samples_final if final else ev.s.num_samples) if self.image_metrics else None
        self.record.add(step, seen, self.wall(), values, ev.higher_is_better, ev.reasons, eval_samples=samples)
        for name, value in values.items():
            if value is not None:
                self.writer.add_scalar(f"metrics/{name}", value, step)
        shown = {k: v for k, v in values.items() if v is not None}
        log.info("%sstep %d: %s", self.prefix, step, ", ".join(f"{k}={v:.4g}" for k, v in shown.items()) or "no metrics")


class Runs:
    """The runs one loop trains: ``Output`` per run (``outs``, in replica order), and everything in which N
    replicas differ from one run.

    - players(k): run k's (G, D, averaged G) as plain networks: the game's own (N = 1) or replica k's slice.
    - probes(data, n): each run's probe batch of n real samples, from its own stream; ``[k]`` is run k's.
    - save(step): each live run's checkpoint: the game's whole state and the global RNGs (N = 1), or replica
      k's part of the stacked state (``split_state``) and its own generators (``replica_rng_state``).
    - diverge(first_bad, ...): runs whose losses became NaN/inf stop; a replica's record is final at once,
      while the others go on.
    - already(start, run_dir): the record to return without training (a completed single run, or replicas
      that have all ended), else None.
    """

    def __init__(self, start: Start, overrides: List[str], step: int):
        self.start, self.game, self.device = start, start.game, start.device
        self.replicated = start.replicated
        self.iterations = start.spec.train.iterations
        self.outs: List[Output] = []
        for m in start.members:
            own = replica_overrides(overrides, m.cfg.seed, start.cfg.seed) if self.replicated else overrides
            self.outs.append(Output(start, m, own, step, self.outs[0] if self.outs else None))
        self.label = start.cfg.objective.name + (f" ×{len(self.outs)}" if self.replicated else "")

    @staticmethod
    def already(start: Start, run_dir: Path) -> Optional[Dict[str, Any]]:
        """What ``run`` returns without training: a completed single run's record; for replicas, the job's
        result when every replica had already ended (each one left as it is, logged)."""
        if not start.replicated:
            previous = RunRecord.read(run_dir)
            if start.step >= start.spec.train.iterations and previous and previous.get("status") == "completed":
                log.info("run already completed (%d/%d generator steps): nothing to do", start.step,
                         start.spec.train.iterations)
                return previous
        for done in start.finished:
            log.info("%s: already %s, left as it is", done, (RunRecord.read(done) or {}).get("status", "finished"))
        return None if start.members else replicas_result(start, [])

    def __iter__(self):
        return iter(self.outs)

    def active(self) -> List[Output]:
        return [out for out in self.outs if out.active]

    def begin(self, step: int) -> float:
        """Each run's record says ``running`` at ``step``; wall times count from now (returned)."""
        for out in self.outs:
            out.record.write("running", step, self.iterations, out.member.wall_before, None)
        now = time.perf_counter()
        for out in self.outs:
            out.t_start = now
        return now

    def players(self, k: int):
        """Run k's (G, D, averaged G) as plain networks; a single run's are the game's own."""
        G, D, G_avg = self.game.G, self.game.D, self.game.players.G_avg
        if not self.replicated:
            return G, D, G_avg.module if G_avg is not None else None
        return G.replica(k), D.replica(k), G_avg.module.replica(k) if G_avg is not None else None

    def probes(self, data: Any, n: int) -> Sequence[torch.Tensor]:
        """Each run's probe batch of ``n`` real samples, from its own stream (call inside ``layout.fork``)."""
        if not self.replicated:
            return [data.sample(n)]
        return self.game.layout.draw(lambda g: data.sample(n, g), data.sample_device)

    def diverge(self, first_bad: torch.Tensor, step: int, it_per_s: Optional[float]) -> None:
        """Stop the runs whose losses became NaN/inf (``first_bad``: the first such generator step per run, -1
        for none; reading it is a host sync, so only at check steps). A replica's record is final now, as the
        others go on; a single run's is written as the loop ends."""
        for out, bad_step in zip(self.outs, first_bad.reshape(-1).tolist()):
            if bad_step >= 0 and out.active:
                out.status, out.diverged_step = "diverged", bad_step
                with out.logging():
                    log.error("%slosses became NaN/inf at generator step %d: stopping (status diverged)",
                              out.prefix, bad_step)
                    if self.replicated:
                        finish(out, step, self.start.spec.train, out.wall(), it_per_s)

    def save(self, step: int) -> None:
        """The checkpoint of each run still going (or preempted), in its own directory. A replica's keeps its
        previous one too: the replicas' checkpoints are N files, and a resume needs them all at one step."""
        state = self.game.state_dict()
        for out in self.outs:
            if not out.active and out.status != "preempted":
                continue
            k = out.member.index
            own = split_state(state, k) if self.replicated else state
            rng = replica_rng_state(self.game.layout, k, self.device) if self.replicated else checkpoint.rng_state()
            checkpoint.save(dict(own, step=step, wall_time_s=out.wall(), rng=rng, config=out.member.config),
                            out.run_dir / CHECKPOINT, keep_previous=self.replicated)

    def finish(self, step: int, it_per_s: Optional[float]) -> Dict[str, Any]:
        """Each run's final record (a diverged replica's was written when it diverged); the job's result: a
        single run's record, or the replicas' statuses. A failure to finish one run is re-raised once the
        others have finished."""
        results, failure = [], None
        for out in self.outs:
            if out.status == "running":
                out.status = "completed"
            if not (self.replicated and out.status == "diverged"):
                with out.logging():
                    try:
                        finish(out, step, self.start.spec.train, out.wall(), it_per_s)
                    except Exception as ex:  # noqa: BLE001 - recorded by finish; the others still finish
                        failure = failure or ex
            results.append(RunRecord.read(out.run_dir) or {})
        if failure is not None:
            raise failure
        return results[0] if not self.replicated else replicas_result(self.start, results)


def replica_rng_state(layout: Layout, k: int, device: torch.device) -> Dict[str, Any]:
    """Replica k's RNG states in a run's checkpoint format: its generators as the run's global RNGs."""
    state = checkpoint.rng_state()
    state["torch"] = layout.generators["cpu"][k].get_state()
    if device.type == "cuda":
        cuda = list(state["cuda"])
        cuda[device.index or 0] = layout.generators["cuda"][k].get_state()
        state["cuda"] = cuda
    return state



def finish(out: Output, step: int, tc: Any, wall_s: float, it_per_s: Optional[float]) -> None:
    """Write a run's final record and, for a run that ended (completed or diverged), its HParams entry."""
    from ..metrics import flatten, log_hparams
    from ..metrics.hparams import varied_keys

    record, writer, config = out.record, out.writer, out.member.config
    # Reference statistics are loaded lazily: the protocol knows their size and cache key only now.
    record.protocol = out.evaluator.protocol()
    try:
        if out.status in ("completed", "diverged"):
            final = {k: v["final"] for k, v in record.metrics.items()}
            # The groups a sweep varies, as ``group.key`` scalars for TensorBoard's HParams tab.
            groups = {k: config.get(k) for k in ("seed", "dataset", "arch", "objective", "penalty", "optimizer",
                                                 "dynamics", "train")}
            flat = dict(flatten(groups), status=out.status)
            log_hparams(writer, flat, final, step, varied=varied_keys(job_swept_keys(), list(flat)))
        writer.close()
    except Exception as ex:  # noqa: BLE001 - e.g. a full disk after the final checkpoint: recorded, re-raised
        out.status = "failed"
        board.close_writer(writer)
        record_failure(out, step, tc, wall_s, it_per_s, failure_line(ex))
        raise
    record.write(out.status, step, tc.iterations, wall_s, it_per_s, diverged_step=out.diverged_step)
    log.info("%s%s at generator step %d/%d (%.1f s); results: %s", out.prefix, out.status, step, tc.iterations,
             wall_s, out.run_dir / "results.json")


def failure_line(ex: BaseException) -> str:
    """What results.json's ``error`` says of ``ex``: a ganbench error's one line, as the CLI prints it (a full
    disk names the file and the free space); any other error's type and message."""
    if isinstance(ex, GanbenchError):
        return one_line_error(ex)
    return f"{type(ex).__name__}: {str(ex).strip()[:500]}"


def record_failure(out: Output, step: int, tc: Any, wall_s: float, it_per_s: Optional[float], error: str) -> None:
    """Write ``status: failed`` with ``error`` at ``step``. When even that write fails (a full disk), the
    previous record stays (the one written at the last checkpoint) and the run's own error is reported."""
    try:
        out.record.write("failed", step, tc.iterations, wall_s, it_per_s, error=error)
    except GanbenchError as ex:
        log.error("%sresults.json was kept as it was: %s", out.prefix, ex)


def replicas_result(start: Start, results: List[Dict[str, Any]]) -> Dict[str, Any]:
    """The job's return value for N replicas: each seed's status and directory (the sweep summary counts
    them one by one), with the worst status first."""
    rows = [{"status": r.get("status"), "run_dir": str(m.run_dir), "error": r.get("error")}
            for m, r in zip(start.members, results)]
    rows += [{"status": (RunRecord.read(d) or {}).get("status"), "run_dir": str(d), "error": None} for d in start.finished]
    order = ("failed", "preempted", "diverged", "completed")
    worst = min((r["status"] for r in rows), key=lambda s: order.index(s) if s in order else 0, default="completed")
    return {"status": worst, "replicas": rows}
