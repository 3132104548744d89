"""PNG plots of a study: each objective against mAP (front highlighted, uniform baselines marked), hypervolume.

Figures are built with matplotlib's object API and the Agg canvas: no pyplot state, no display needed.
"""

from __future__ import annotations

from pathlib import Path

from ..search import ATTR_BASELINE, ATTR_METRICS, ATTR_WARM_START, held_out_points, is_screened
from ..study.metrics import QUALITY
from ..study.spec import StudySpec


def _figure():
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.4, 4.8), dpi=100)
    FigureCanvasAgg(fig)
    return fig, fig.add_subplot(1, 1, 1)


def front_plots(trials: list, front: list, spec: StudySpec, baseline: dict[str, float], out: Path) -> list[Path]:
    """One PNG per objective (other than mAP50-95) with mAP50-95 on the y axis."""
    done = [t for t in trials if t.state.name == "COMPLETE" and t.user_attrs.get(ATTR_METRICS) and not is_screened(t)]
    on_front = {t.number for t in front}
    paths = []
    for obj in spec.objectives:
        if obj.metric == QUALITY:
            continue
        fig, ax = _figure()

        def xy(ts, metric=obj.metric):
            pts = [(t.user_attrs[ATTR_METRICS].get(metric), t.user_attrs[ATTR_METRICS].get(QUALITY)) for t in ts]
            return [p[0] for p in pts if None not in p], [p[1] for p in pts if None not in p]

        ax.scatter(*xy(done), c="0.7", s=18, label="trials")
        fr = sorted(
            (t for t in done if t.number in on_front), key=lambda t: t.user_attrs[ATTR_METRICS].get(obj.metric, 0)
        )
        ax.plot(*xy(fr), "-o", c="tab:red", ms=6, label="Pareto front")
        held = held_out_points(trials, spec.directions, obj.metric)  # val and held-out test side by side
        if held:
            ax.scatter(*zip(*held), marker="x", c="tab:purple", s=40, label="held-out test (front, uniform)")
        uni = [t for t in done if t.user_attrs.get(ATTR_BASELINE) is not None]
        ax.scatter(*xy(uni), marker="s", facecolors="none", edgecolors="tab:blue", s=60, label="uniform ratio")
        warm = [t for t in done if t.user_attrs.get(ATTR_WARM_START) is not None]
        if warm:
            ax.scatter(*xy(warm), marker="^", facecolors="none", edgecolors="tab:green", s=60, label="warm start")
        for ts, attr, color in ((uni, ATTR_BASELINE, "tab:blue"), (warm, ATTR_WARM_START, "tab:green")):
            for t in ts:
                m = t.user_attrs[ATTR_METRICS]
                if obj.metric in m and QUALITY in m:
                    ax.annotate(
                        f"{t.user_attrs[attr]:g}",
                        (m[obj.metric], m[QUALITY]),
                        fontsize=7,
                        xytext=(4, 4),
                        textcoords="offset points",
                        color=color,
                    )
        if obj.metric in baseline and QUALITY in baseline:
            ax.scatter([baseline[obj.metric]], [baseline[QUALITY]], marker="*", c="k", s=120, label="unpruned")
        ax.set_xlabel(f"{obj.metric} ({'lower' if obj.direction == 'minimize' else 'higher'} is better)")
        ax.set_ylabel("mAP50-95")
        ax.set_title(f"{spec.name}: {obj.metric} vs mAP50-95")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        path = out / f"{obj.metric}_vs_{QUALITY}.png"
        fig.savefig(path)
        paths.append(path)
    return paths


def hypervolume_plot(history: list[tuple[int, float]], path: Path) -> Path:
    fig, ax = _figure()
    if history:
        ax.step([n for n, _ in history], [h for _, h in history], where="post", c="tab:red")
    ax.set_xlabel("trial number")
    ax.set_ylabel("hypervolume (fractions of the unpruned model)")
    ax.set_title("Pareto front hypervolume")
    ax.grid(alpha=0.3)
    fig.savefig(path)
    return path
