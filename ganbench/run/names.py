"""A run's name: its directory under a sweep (the ``gb.dirname`` resolver of conf/config.yaml), which is also its
name in TensorBoard, built from Hydra's override string; and the keys a multirun sweeps, which lead that name.
Light: omegaconf only (a process that only submits jobs imports no torch).
"""
import hashlib
import os
import re
from typing import Any, List

from omegaconf import OmegaConf

SWEPT_ENV = "GANBENCH_SWEPT_KEYS"


def swept_keys(hydra_node: Any) -> List[str]:
    """The keys a multirun varies: the command line's sweep overrides (SWEPT_ENV, set by ``main``) and the
    preset's ``hydra.sweeper.params``; none outside a multirun. ``hydra_node`` is the config's hydra node."""
    if hydra_node is None or not str(OmegaConf.select(hydra_node, "mode", default="")).endswith("MULTIRUN"):
        return []
    keys = [k for k in os.environ.get(SWEPT_ENV, "").split(",") if k]
    keys += [str(k) for k in (OmegaConf.select(hydra_node, "sweeper.params", default=None) or {})]
    return list(dict.fromkeys(keys))


def override_items(override_dirname: str) -> List[str]:
    """Hydra's ``k=v,k=v`` as items. Values may hold commas (``metrics.names=[a,b]``): items are split only
    before a ``key=``."""
    return re.split(r",(?=[+~]*[\w.\-/@]+=)", override_dirname) if override_dirname else []


def override_key(item: str) -> str:
    return item.split("=", 1)[0].lstrip("+~")


# Keys that never name a run directory: train.replicas trains each seed into the directory its own run
# would use (ganbench/replicas.py), so the directory must not depend on how many seeds shared a process;
# search.* say what a hyperparameter search reads from the runs (its seeds train like replicas), not what
# is trained.
UNNAMED_KEYS = ("train.replicas", "search.metric", "search.value", "search.seeds")


def swept_first(override_dirname: str, swept: List[str]) -> str:
    """Hydra's ``k=v,k=v`` (sorted by key) with the swept keys moved to the front, in sweep order.

    In a sweep the keys that vary are what tells runs apart: they lead the run directory's name, and so
    the run's name in TensorBoard. Values may hold commas (``metrics.names=[a,b]``): items are split only
    before a ``key=``.
    """
    if not override_dirname or not swept:
        return override_dirname
    items = override_items(override_dirname)
    rank = {k: i for i, k in enumerate(dict.fromkeys(swept))}
    lead = sorted((i for i in items if override_key(i) in rank), key=lambda i: rank[override_key(i)])
    return ",".join(lead + [i for i in items if override_key(i) not in rank])


# The longest run directory name (and so the longest part of a run's TensorBoard name it contributes).
MAX_NAME = 120


def run_dirname(override_dirname: str, _root_: Any = None) -> str:
    """A safe, readable directory name from Hydra's ``k=v,k=v`` override string, swept keys first.

    Path separators in values (``dataset.path=../data/x.tar.gz``) must not create or escape directories: a
    path value keeps its file name plus ``@`` and 6 hex digits of the whole path. Keys that never name a run
    (``UNNAMED_KEYS``) are left out.

    A name longer than ``MAX_NAME`` (120) characters is cut at a key boundary, never inside a ``key=value``:
    it keeps the leading items that fit (swept keys first, then the rest sorted by key) and ends in
    ``,+N__<hash>``: how many items were left out and 10 hex digits of the whole override string, so two runs
    that differ only in the items left out still get different directories. Example:
    ``arm=dragan,eval.every=100,...,+7__f502843fba``. Names up to 120 characters are unchanged. The full
    overrides are in the run's results.json (``overrides``) and .hydra/overrides.yaml.
    """
    try:
        swept = swept_keys(OmegaConf.select(_root_, "hydra", default=None) if _root_ is not None else None)
    except Exception:  # noqa: BLE001 - outside a Hydra app there is no hydra node
        swept = []
    override_dirname = ",".join(i for i in override_items(override_dirname) if override_key(i) not in UNNAMED_KEYS)
    override_dirname = swept_first(override_dirname, swept)
    items = [safe_item(i) for i in override_items(override_dirname)] or ["default"]
    name = ",".join(items)
    if len(name) <= MAX_NAME:
        return name
    digest = hashlib.sha1(override_dirname.encode()).hexdigest()[:10]
    kept: List[str] = []
    for item in items:
        tail = f",+{len(items) - len(kept) - 1}__{digest}"
        if len(",".join(kept + [item])) + len(tail) > MAX_NAME:
            break
        kept.append(item)
    left = len(items) - len(kept)
    if not kept:  # a single item longer than the limit: its key alone
        return f"{override_key(items[0])[:MAX_NAME - 24]},+{left}__{digest}"
    return ",".join(kept) + f",+{left}__{digest}"


def safe_item(item: str) -> str:
    """One ``key=value`` as a file name's part: a path value as its file name plus a hash of the whole path,
    and no path separators or characters outside ``[\\w.,=+\\-\\[\\]:@%]``."""
    item = re.sub(
        r"=([^,=]*[/\\][^,=]*)",
        lambda m: "=" + re.split(r"[/\\]", m.group(1).rstrip("/\\"))[-1] + "@"
        + hashlib.sha1(m.group(1).encode()).hexdigest()[:6],
        item,
    )
    item = re.sub(r"[/\\]", "_", item).replace("..", "_")
    return re.sub(r"[^\w.,=+\-\[\]:@%]", "_", item)


def mark_swept_keys(argv: List[str]) -> None:
    """For ``-m``: tell the run-directory resolver which command-line keys are swept (``a=1,2``, ranges,
    choices). Launcher workers (joblib, SLURM) inherit the variable with the rest of the environment."""
    os.environ.pop(SWEPT_ENV, None)
    if not any(a in ("-m", "--multirun") for a in argv):
        return
    from hydra.core.override_parser.overrides_parser import OverridesParser

    try:
        parsed = OverridesParser.create().parse_overrides([a for a in argv if not a.startswith("-") and "=" in a])
    except Exception:  # noqa: BLE001 - Hydra reports the parse error itself, with its own message
        return
    keys = [o.key_or_group for o in parsed if o.is_sweep_override() and not o.key_or_group.startswith("hydra.")]
    os.environ[SWEPT_ENV] = ",".join(keys)
