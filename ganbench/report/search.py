"""ganbench-report on a hyperparameter search (a sweep directory holding optuna.db).

    ganbench-report outputs/sweeps/tune_dragan_grid25

For every study of the storage: each trial with its state, value, the spread of its seeds (mean ± sample std
``s = sqrt(Σ(v_s - mean)²/(n-1))`` over the n seeds it averaged) and its parameters; the best trial; each
parameter's importance; and figures: the value against the trial number (with the best so far) and
against each parameter. With several studies (``hydra.sweeper.studies``, e.g. equal_budget_toy) it adds the
comparison of Lucic et al. 2018 ("Are GANs Created Equal?", Table 2 and Figure 4): per study, its best
trial's value as mean ± std over that trial's seeds, and the expected best value of a budget of k trials,

    E[best of k] = Σ_{i=1}^{n-k+1} C(n-i, k-1) / C(n, k) · v_(i)      (v_(1) best of the n finished values)

the exact mean of the best of k trials drawn without replacement from the study's n completed ones (their
bootstrap estimate, without resampling noise; ganbench.sweep.search.expected_best).

Importances: Optuna's mean decrease in impurity of a random forest fitted to the completed trials
(``MeanDecreaseImpurityImportanceEvaluator``, seed 0), normalised to sum to 1. Optuna's default evaluator,
fANOVA, fails in Optuna 2.10 (the version hydra-optuna-sweeper allows) with scikit-learn >= 1.3, whose
trees hold their values in a shape that Optuna 2.10's fANOVA cannot store; both evaluators need
scikit-learn and at least two completed trials.

Writes ``search_report.md`` and ``figures/search_*.png`` into the sweep directory (or ``--out``); opens the
database read-only in effect (Optuna's storage reads it; nothing is told or changed).
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

from ganbench.errors import GanbenchError
from ganbench.report.tables import format_markdown_table, format_text_table
from ganbench.sweep.search import DB_NAME, FINGERPRINT, expected_best

FAILED_NOTE_CHARS = 160


def find_storage(dirs: Sequence[Path]) -> Optional[Path]:
    """The optuna.db of the first given directory that has one (or a .db file given directly)."""
    for d in dirs:
        d = Path(d)
        if d.is_file() and d.suffix == ".db":
            return d
        if (d / DB_NAME).is_file():
            return d / DB_NAME
    return None


def mean_std(values: Sequence[float]) -> Tuple[int, float, float]:
    """(n, mean, sample std); std is nan for n < 2."""
    n = len(values)
    if n == 0:
        return 0, math.nan, math.nan
    m = math.fsum(values) / n
    s = math.sqrt(math.fsum((v - m) ** 2 for v in values) / (n - 1)) if n > 1 else math.nan
    return n, m, s


def _fmt(x: Any, digits: int = 4) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "–"
    if isinstance(x, float):
        return f"{x:.{digits}g}"
    return str(x)


def _seed_values(trial: Any) -> list:
    """The trial's seed values as recorded; [] when the record is not a list (a damaged storage)."""
    given = trial.user_attrs.get("seed_values")
    return given if isinstance(given, list) else []


def _spread(trial: Any) -> str:
    """mean ± sample std of the trial's seeds (a failed trial: of the seeds that had a value, "k of n")."""
    given = _seed_values(trial)
    values = [v for v in given if isinstance(v, (int, float))]
    n, m, s = mean_std(values)
    of = f"{n} of {len(given)} seeds" if n < len(given) else f"{n} seed{'s' if n != 1 else ''}"
    if n == 0:
        return "–"
    if n == 1:
        return f"{_fmt(m)} ({of})"
    return f"{_fmt(m)} ± {_fmt(s, 2)} ({of})"


class StudyReport:
    """One study's trials, best trial, importances and figures."""

    def __init__(self, study: Any):
        from optuna.trial import TrialState

        self.study = study
        self.name = study.study_name
        fingerprint = study.user_attrs.get(FINGERPRINT)
        self.fingerprint = fingerprint if isinstance(fingerprint, dict) else {}   # damaged: the plain "value"
        self.metric = self.fingerprint.get("metric", "value")
        self.kind = self.fingerprint.get("value", "")
        self.trials = study.get_trials(deepcopy=False)
        self.complete = [t for t in self.trials if t.state == TrialState.COMPLETE]
        self.failed = [t for t in self.trials if t.state == TrialState.FAIL]
        self.running = [t for t in self.trials if t.state == TrialState.RUNNING]
        self.higher = study.direction.name == "MAXIMIZE"
        self.params = sorted({k for t in self.trials for k in t.params})
        self.best = study.best_trial if self.complete else None
        self.importances, self.importance_note = self._importances()

    def _importances(self) -> Tuple[Dict[str, float], str]:
        if len(self.complete) < 2:
            return {}, f"needs 2 completed trials (has {len(self.complete)})"
        try:
            from optuna.importance import MeanDecreaseImpurityImportanceEvaluator, get_param_importances
        except ImportError as ex:  # pragma: no cover - optuna is a dependency
            return {}, f"unavailable: {ex}"
        try:
            return dict(get_param_importances(self.study, evaluator=MeanDecreaseImpurityImportanceEvaluator(seed=0))), ""
        except ImportError as ex:
            return {}, f"unavailable ({str(ex).splitlines()[0]}): pip install scikit-learn"
        except (RuntimeError, ValueError) as ex:
            return {}, f"not computed: {str(ex).splitlines()[0]}"

    def best_so_far(self) -> List[Tuple[int, float]]:
        out, best = [], None
        for t in sorted(self.complete, key=lambda t: t.number):
            if best is None or (t.value > best if self.higher else t.value < best):
                best = t.value
            out.append((t.number, best))
        return out

    def trial_rows(self) -> List[List[str]]:
        rows = [["trial", "state", f"{self.metric} ({self.kind})", "seeds: mean ± std", *self.params]]
        for t in self.trials:
            mark = " *" if self.best is not None and t.number == self.best.number else ""
            rows.append([f"{t.number}{mark}", t.state.name.lower(), _fmt(t.value), _spread(t),
                         *[_fmt(t.params.get(p)) for p in self.params]])
        return rows

    def notes(self) -> List[str]:
        out = []
        for t in self.failed:
            why = str(t.user_attrs.get("failure") or "no reason recorded")
            out.append(f"failed: trial {t.number}: {why[:FAILED_NOTE_CHARS]}")
        for t in self.running:
            out.append(f"running: trial {t.number} (or left by a search that stopped; the same command resumes it)")
        return out

    def lines(self) -> List[str]:

        direction = "higher" if self.higher else "lower"
        out = [f"study {self.name}: {len(self.trials)} trials ({len(self.complete)} complete, {len(self.failed)} "
               f"failed, {len(self.running)} running); {self.kind} {self.metric}, {direction} is better",
               format_text_table(self.trial_rows())]
        if self.best is not None:
            out.append(f"best: trial {self.best.number}, {self.metric} = {_fmt(self.best.value, 6)} "
                       f"(seeds: {_spread(self.best)}): "
                       + ", ".join(f"{k}={_fmt(v, 6)}" for k, v in self.best.params.items()))
        else:
            out.append("best: none (no trial completed)")
        if self.importances:
            out.append("importance (mean decrease in impurity): "
                       + ", ".join(f"{k} {v:.3f}" for k, v in self.importances.items()))
        else:
            out.append(f"importance: {self.importance_note}")
        return out + self.notes()


def _slug(name: str) -> str:
    return re.sub(r"[^\w.=-]+", "_", name).strip("_") or "study"


def plot_study(out_dir: Path, rep: StudyReport) -> List[Path]:
    """value vs trial number (completed trials, failed ones marked at the bottom, the best so far as a step
    line), and value vs each parameter (log axis for log-uniform parameters)."""
    import matplotlib  # noqa: PLC0415 - figures are optional and matplotlib is slow to import

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    ylabel = f"{rep.metric} ({rep.kind})"
    fig, ax = plt.subplots(figsize=(7, 4.5))
    spreads = [mean_std([v for v in _seed_values(t) if isinstance(v, (int, float))])[2] for t in rep.complete]
    ax.errorbar([t.number for t in rep.complete], [t.value for t in rep.complete],
                yerr=[0.0 if math.isnan(s) else s for s in spreads], fmt="o", ms=4, capsize=2,
                label="completed trial (bar: ±1 sample std over its seeds)")
    best = rep.best_so_far()
    if best:
        ax.step([n for n, _ in best], [v for _, v in best], where="post", color="C3", label="best so far")
    if rep.failed:
        values = [t.value for t in rep.complete]
        worst = (min(values) if rep.higher else max(values)) if values else 0.0
        ax.scatter([t.number for t in rep.failed], [worst] * len(rep.failed), marker="x", color="grey",
                   label=f"failed ({len(rep.failed)}, no value), drawn at the worst value")
    ax.set_xlabel("trial number")
    ax.set_ylabel(ylabel)
    ax.set_title(f"{rep.name}: {'higher' if rep.higher else 'lower'} is better")
    ax.legend(fontsize=8)
    path = out_dir / f"search_{_slug(rep.name)}_history.png"
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    written.append(path)
    for p in rep.params:
        xs = [(t.params[p], t.value) for t in rep.complete if p in t.params]
        if not xs:
            continue
        fig, ax = plt.subplots(figsize=(5.5, 4.2))
        numeric = all(isinstance(x, (int, float)) and not isinstance(x, bool) for x, _ in xs)
        if numeric:
            ax.scatter([x for x, _ in xs], [y for _, y in xs], s=18)
            dist = next((t.distributions.get(p) for t in rep.complete if p in t.distributions), None)
            if dist is not None and "Log" in type(dist).__name__:
                ax.set_xscale("log")
        else:
            labels = sorted({str(x) for x, _ in xs})
            ax.scatter([labels.index(str(x)) for x, _ in xs], [y for _, y in xs], s=18)
            ax.set_xticks(range(len(labels)), labels)
        if rep.best is not None and p in rep.best.params and numeric:
            ax.scatter([rep.best.params[p]], [rep.best.value], s=60, facecolors="none", edgecolors="C3",
                       label=f"best (trial {rep.best.number})")
            ax.legend(fontsize=8)
        ax.set_xlabel(p)
        ax.set_ylabel(ylabel)
        ax.set_title(rep.name, fontsize=9)
        path = out_dir / f"search_{_slug(rep.name)}_{_slug(p)}.png"
        fig.tight_layout()
        fig.savefig(path, dpi=100)
        plt.close(fig)
        written.append(path)
    return written


def comparison_rows(reports: Sequence[StudyReport]) -> List[List[str]]:
    """Lucic et al. 2018's form: per study, the trials it had and its best trial's value over its seeds."""
    rows = [["study", "trials", "complete", "failed", "best trial", "best: mean ± std over seeds", "best parameters"]]
    for r in reports:
        best = r.best
        rows.append([r.name, str(len(r.trials)), str(len(r.complete)), str(len(r.failed)),
                     "–" if best is None else str(best.number), "–" if best is None else _spread(best),
                     "–" if best is None else ", ".join(f"{k}={_fmt(v, 3)}" for k, v in best.params.items())])
    return rows


def plot_budget(out_dir: Path, reports: Sequence[StudyReport]) -> Optional[Path]:
    """E[best of k trials] against k for each study (Lucic et al. 2018, Figure 4's form)."""
    import matplotlib  # noqa: PLC0415

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    drawn = [r for r in reports if r.complete]
    if not drawn:
        return None
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for r in drawn:
        values = [t.value for t in r.complete]
        ks = list(range(1, len(values) + 1))
        ax.plot(ks, [expected_best(values, k, r.higher) for k in ks], marker=".", label=r.name)
    ax.set_xlabel("budget: completed trials k")
    ax.set_ylabel(f"expected best {drawn[0].metric} of k trials")
    ax.set_title("best value for a budget (exact mean over draws of k of the completed trials)", fontsize=9)
    ax.legend(fontsize=8)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "search_budget.png"
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def load_reports(db: Path) -> List[StudyReport]:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    from ganbench.sweep.search import read_studies

    read_studies(db)  # read-only first: Optuna's storage would add its tables to a file that lacks them
    url = f"sqlite:///{db.absolute()}"
    try:
        summaries = optuna.get_all_study_summaries(storage=url)
    except Exception as ex:  # noqa: BLE001 - a file that is not an Optuna database: one line
        raise GanbenchError(f"{db}: cannot be read as an Optuna database ({str(ex).splitlines()[0]})") from None
    if not summaries:
        raise GanbenchError(f"{db}: holds no study")
    return [StudyReport(optuna.load_study(study_name=s.study_name, storage=url))
            for s in sorted(summaries, key=lambda s: s.study_name)]


def run_search_report(args: Any, db: Path) -> str:
    """The report of the search stored in ``db``; writes search_report.md and the figures."""

    for flag, attr in (("--by", "by"), ("--sort", "sort"), ("--metrics", "metrics"), ("--at-step", "at_step")):
        if getattr(args, attr, None) is not None:
            raise GanbenchError(f"{flag}: not used by the report of a search ({db}); for the table of its runs, give "
                                f"their folders: ganbench-report {db.parent}/*/")
    reports = load_reports(db)
    out = Path(args.out) if getattr(args, "out", None) else db.parent
    out.mkdir(parents=True, exist_ok=True)
    figures: List[Path] = []
    if not getattr(args, "no_figures", False):
        for r in reports:
            figures += plot_study(out / "figures", r)
        if len(reports) > 1:
            budget = plot_budget(out / "figures", reports)
            if budget is not None:
                figures.append(budget)
    lines: List[str] = []
    md = [f"# Hyperparameter search: {db}", ""]
    if len(reports) > 1:
        rows = comparison_rows(reports)
        lines += ["every study's best trial (mean ± sample std over its seeds), as Lucic et al. 2018 compare",
                  format_text_table(rows), ""]
        md += ["## Comparison", "", "Each study's best trial, its value as mean ± sample std over the trial's "
               "seeds; `search_budget.png`: the expected best value of k trials.", "",
               format_markdown_table(rows), ""]
    for r in reports:
        lines += r.lines() + [""]
        md += [f"## {r.name}", "", r.lines()[0], "", format_markdown_table(r.trial_rows()), "",
               *[f"- {line}" for line in r.lines()[2:]], ""]
    md += ["## Figures", ""] + [f"![{p.name}](figures/{p.name})" for p in figures if p.parent == out / "figures"]
    (out / "search_report.md").write_text("\n".join(md) + "\n")
    lines.append(f"wrote {out / 'search_report.md'}" + (f", {len(figures)} figures in {out / 'figures'}" if figures else ""))
    return "\n".join(lines)
