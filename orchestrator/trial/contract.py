"""The trial's contract as plain, picklable data: what goes to a worker and what comes back.

The real trial (real.py) and the fake one (fake.py) both speak it; neither imports the other's code.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..study.spec import CacheSpec, FakeTrialSpec, FinetuneSpec, PruningSpec, QuantizeSpec, StudySpec


@dataclass(frozen=True)
class Workload:
    """What every trial of a study shares; also the key of the worker's cache.

    It carries the study's frozen sub-specs as they are, so a setting added to one reaches the trial without
    an edit here. Picklable (Ray sends it to every worker); not hashable (``finetune.overrides`` is a dict).
    """

    study: str
    kind: str  # "real" | "fake"
    model: str  # weights path or official name
    data: str  # data yaml path or official name
    base_dir: str  # folder of the study file (relative model/data paths start here)
    imgsz: int
    batch: int
    device: str  # auto | cpu | cuda | cuda:N
    seed: int
    pruning: PruningSpec  # method, granularity, importance, round_to, exclude, recover, calib_images
    finetune: FinetuneSpec  # hyp preset, its overrides, distill
    quantize: QuantizeSpec  # int8 calibration method and images
    save_checkpoint: bool  # return the pruned checkpoint's bytes
    threads: int  # torch threads in the worker
    fake: FakeTrialSpec | None = None  # for kind == "fake"
    test_data: str = ""  # data yaml of the held-out split when not the data's own test: (holdout.py)
    cache: CacheSpec | None = None  # decoded images: mode and RAM budget (None: auto within the default budget)
    # the study's base size when a trial runs at another (``imgsz: [320, 256]``): every speed-up is against the
    # unpruned model at this size; 0: ``imgsz`` is the base
    base_imgsz: int = 0
    # sampler.warm_start: latency: the structured warm start ranks cuts by the ONNX Runtime ms they save on this
    # machine (prune/latency.py) instead of the FLOPs: opt-in, as timings make it differ from machine to machine
    latency_objective: bool = False

    @property
    def speed_imgsz(self) -> int:
        """The size the unpruned model is timed at: the study's base size."""
        return self.base_imgsz or self.imgsz

    def at_size(self, imgsz: int) -> Workload:
        """The workload of a trial that runs at ``imgsz`` (itself when that is its size)."""
        from dataclasses import replace

        return self if imgsz == self.imgsz else replace(self, imgsz=imgsz, base_imgsz=self.speed_imgsz)

    @classmethod
    def from_spec(cls, spec: StudySpec) -> Workload:
        """The workload of a validated study file."""
        return cls(
            study=spec.name,
            kind=spec.trial,
            model=spec.model,
            data=spec.data,
            base_dir=str(spec.path.resolve().parent),
            imgsz=spec.imgsz,
            batch=spec.batch,
            device=spec.device,
            seed=spec.seed,
            pruning=spec.pruning,
            finetune=spec.finetune,
            quantize=spec.quantize,
            save_checkpoint=spec.tracking.artifacts != "none",
            threads=spec.resources.cpus_per_trial,
            fake=spec.fake if spec.trial == "fake" else None,
            test_data=spec.test_data or "",
            cache=spec.cache,
            latency_objective=spec.sampler.warm_start == "latency",
        )


@dataclass(frozen=True)
class Reference:
    """A complete trial as early stopping sees it: its costs (the study's cost objectives, known at the cut) and
    its best mAP50-95 so far after each of its epochs."""

    number: int
    costs: tuple[float, ...]
    best_by_epoch: tuple[float, ...]


@dataclass(frozen=True)
class EarlyStop:
    """The rule a sampler trial's fine-tune runs under (study.spec.EarlyStopSpec), with the complete trials it is
    judged against, as they stood when it was asked. ``costs``: (metric, direction) of each cost objective."""

    margin: float
    after: int
    costs: tuple[tuple[str, str], ...]
    references: tuple[Reference, ...]


@dataclass(frozen=True)
class TrialSpec:
    number: int
    workload: Workload
    ratios: dict[str, float]  # group -> fraction removed
    # every declared dimension's value, by name (dimensions.py): epochs, lr0, quantize (none: deploy the fp16
    # .pt; int8: deploy and validate an ONNX Runtime int8 file), and whatever is declared next
    values: dict[str, Any]
    attempt: int = 0  # 1 when retried after its worker died
    # the one-shot screen: (fraction, unpruned mAP50-95); the trial validates its cut before fine-tuning and stops
    # when it scores under fraction x mAP. None: not screened (the screen is off, or an enqueued baseline)
    screen: tuple[float, float] | None = None
    stop: EarlyStop | None = None  # per-epoch early stopping; None: the trial runs all its epochs


def screen_reason(spec: TrialSpec, oneshot_map: float) -> str:
    """Why the trial stops at the screen ("" when it goes on to fine-tune): one line, the figures in it.

    Shared by the real and the fake trial so both stop on the same rule.
    """
    if spec.screen is None:
        return ""
    fraction, base = spec.screen
    if oneshot_map >= fraction * base:
        return ""
    return f"screened: one-shot mAP50-95 {oneshot_map:.3f} < {fraction:g} x {base:.4f}"


def stop_reason(spec: TrialSpec, epoch: int, best: float, costs: dict[str, float]) -> tuple[str, float]:
    """Why the trial stops after ``epoch`` ("" to go on) and by how much it trails (the stop's constraint value).

    It stops when a reference at no more cost (each cost no worse) had, by its own ``epoch``, a best mAP50-95
    above ``best`` + margin; never after its last epoch (nothing left to save). Shared by the real and the fake
    trial so both stop on the same rule.
    """
    rule, epochs = spec.stop, spec.values["epochs"]
    if rule is None or epoch < rule.after or epoch >= epochs:
        return "", 0.0
    mine = [costs[m] for m, _ in rule.costs]
    beaten = [
        (ref.best_by_epoch[epoch - 1] - rule.margin - best, ref)
        for ref in rule.references
        if len(ref.best_by_epoch) >= epoch
        and all(c <= m if d == "minimize" else c >= m for c, m, (_, d) in zip(ref.costs, mine, rule.costs))
    ]
    gap, ref = max(beaten, key=lambda x: x[0], default=(0.0, None))
    if ref is None or gap <= 0:
        return "", 0.0
    return (
        f"stopped after epoch {epoch} of {epochs}: mAP50-95 {best:.3f}, trial {ref.number} at no more cost had "
        f"{ref.best_by_epoch[epoch - 1]:.3f} by then (margin {rule.margin:g})",
        gap,
    )


@dataclass(frozen=True)
class BaselineResult:
    """The unpruned model, measured once per study: the groups the search runs over and its metrics."""

    groups: dict[str, list[str]]  # group -> conv layer names
    metrics: dict[str, float]
    device: str
    wall_s: float


@dataclass(frozen=True)
class AllocationRequest:
    """Ask a worker for warm-start ratio maps: one per target sparsity, on the search space's grid."""

    targets: tuple[float, ...]
    groups: dict[str, list[str]]  # group -> conv names, as the baseline reported them
    bounds: dict[str, tuple[float, float]]  # group -> (low, high), as the search space has them
    step: float | None


@dataclass(frozen=True)
class TrialResult:
    number: int
    ok: bool
    metrics: dict[str, float] = field(default_factory=dict)
    history: list[dict[str, float]] = field(default_factory=list)  # one record per fine-tune epoch
    files: dict[str, bytes] = field(default_factory=dict)  # artifact name -> content (checkpoint, ratio map)
    device: str = ""
    worker: str = ""  # host:pid
    failure: str = ""  # one line: why it failed
    wall_s: float = 0.0
    attempt: int = 0
    test: dict[str, float] = field(default_factory=dict)  # held-out split, sealed: see holdout.py
    # stopped by the one-shot screen before fine-tuning: ``metrics`` are the cut model's one-shot figures (val
    # scores and weight counts, no latency), ``reason`` the one line saying why (contract.screen_reason)
    screened: bool = False
    reason: str = ""
    # stopped early after this fine-tune epoch (contract.stop_reason): ``metrics`` are its best val scores by then
    # and its cut's costs, ``screened`` is set too (never on the front, not counted), ``stop_gap`` how far it trailed
    stopped_epoch: int = 0
    stop_gap: float = 0.0


class WorkerCache:
    """Objects a worker loads once and reuses for every trial of the same workload.

    One set per input size of a study (``imgsz: [320, 256]``): a worker alternating sizes keeps each size's val
    set and train images instead of decoding them again; another study's workload drops them all.
    """

    def __init__(self) -> None:
        self.key: Workload | None = None
        self.items: dict[str, Any] = {}  # the last workload's
        self._sizes: dict[int, dict[str, Any]] = {}

    def for_workload(self, workload: Workload) -> dict[str, Any]:
        from dataclasses import replace

        family = replace(workload, imgsz=workload.speed_imgsz, base_imgsz=0)
        if self.key != family:
            self.key, self._sizes = family, {}
        self.items = self._sizes.setdefault(workload.imgsz, {})
        return self.items
