"""The run's record: ``metrics.jsonl`` (one line per evaluation) and ``results.json`` (the summary)."""
import json
import math
import os
import platform
from pathlib import Path
from typing import Any, Dict, List, Optional

RESULTS = "results.json"
METRICS = "metrics.jsonl"


def write_json_atomic(path: Path, obj: Any) -> None:
    """Temp file + rename: a reader sees the old record or the new one; a full disk keeps the old one."""
    from .rundir import guarded_write

    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    text = json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n"
    guarded_write(tmp, lambda f: f.write(text.encode()))
    os.replace(tmp, path)


def append_line(path: Path, line: str) -> None:
    """Append ``line`` to ``path`` whole or not at all: a write cut short (a full disk) is truncated away, so
    that the next line does not continue a torn one, and a full disk becomes the one-line error."""
    from .rundir import disk_full

    data = line.encode()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        end = os.fstat(fd).st_size
        done = 0
        try:
            while done < len(data):  # os.write may write part of it and report the rest's failure next call
                done += os.write(fd, data[done:])
        except OSError as ex:
            try:
                os.ftruncate(fd, end)
            except OSError:
                pass
            full = disk_full(ex, path, "its earlier lines were kept")
            if full is not None:
                raise full from None
            raise
    finally:
        os.close(fd)


def _finite_or_none(value: Any) -> Optional[float]:
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


# ---------------------------------------------------------------------------------------------
# reading: what a reader (ganbench-report) may rely on, checked before it is used


def _is_number(value: Any) -> bool:
    """A JSON number (Python's bool is an int, but ``true`` is not a number)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _shown(value: Any) -> str:
    """A parsed JSON value for a message: its kind and, for a scalar, the value (cut to 40 characters)."""
    kinds = {dict: "an object", list: "a list", str: "a string", bool: "a boolean", type(None): "null"}
    kind = kinds.get(type(value), "a number" if _is_number(value) else type(value).__name__)
    if value is None or isinstance(value, (dict, list)):
        return kind
    text = json.dumps(value)
    return f"{kind} ({text if len(text) <= 40 else text[:39] + '…'})"


def _typed(value: Any, kinds: str) -> bool:
    """Whether ``value`` is one of ``kinds``, e.g. "a number or null"."""
    ok = {"number": _is_number, "string": lambda v: isinstance(v, str), "boolean": lambda v: isinstance(v, bool),
          "object": lambda v: isinstance(v, dict), "list": lambda v: isinstance(v, list), "null": lambda v: v is None}
    return any(ok[k.split()[-1]](value) for k in kinds.split(" or "))


# results.json's keys a reader uses, with the JSON types RunRecord.write and a failed start (cli.py) give them.
RECORD_TYPES = {"step": "a number or null", "iterations": "a number or null", "diverged_step": "a number or null",
                "error": "a string or null", "wall_time_s": "a number or null", "it_per_s": "a number or null",
                "metrics": "an object or null", "config": "an object or null", "overrides": "a list or null"}
METRIC_ENTRY_TYPES = {"final": "a number or null", "best": "a number or null", "final_step": "a number or null",
                      "best_step": "a number or null", "higher_is_better": "a boolean", "reason": "a string or null"}


def record_problem(record: Any) -> Optional[str]:
    """What makes a parsed results.json unusable for a reader, or None: it must be an object with a string
    ``status``; the keys of RECORD_TYPES, where present, of those types; each ``metrics`` entry an object
    whose keys of METRIC_ENTRY_TYPES are of those types; ``overrides`` a list of strings."""
    if not isinstance(record, dict):
        return f"is {_shown(record)}, expected a JSON object"
    if "status" not in record:
        return "has no status"
    if not isinstance(record["status"], str):
        return f"status is {_shown(record['status'])}, expected a string"
    for key, kinds in RECORD_TYPES.items():
        if key in record and not _typed(record[key], kinds):
            return f"{key} is {_shown(record[key])}, expected {kinds}"
    for name, entry in (record.get("metrics") or {}).items():
        if not isinstance(entry, dict):
            return f"metrics.{name} is {_shown(entry)}, expected an object (final, best, ...)"
        for key, kinds in METRIC_ENTRY_TYPES.items():
            if key in entry and not _typed(entry[key], kinds):
                return f"metrics.{name}.{key} is {_shown(entry[key])}, expected {kinds}"
    for item in record.get("overrides") or []:
        if not isinstance(item, str):
            return f"overrides holds {_shown(item)}, expected strings (key=value)"
    return None


# metrics.jsonl's bookkeeping columns; every other key of a row is a metric.
ROW_NUMBERS = ("step", "images_seen", "wall_time_s", "eval_samples")


def row_problem(row: Any) -> Optional[str]:
    """What makes a parsed metrics.jsonl line unusable for a reader, or None: an object (RunRecord.add's
    row) with a finite number ``step``; ``images_seen``, ``wall_time_s`` and ``eval_samples`` numbers where
    present; every other value, a metric, a number or null (add writes a non-finite value as null)."""
    if not isinstance(row, dict):
        return f"is {_shown(row)}, expected a JSON object"
    if "step" not in row:
        return "has no step"
    if not _is_number(row["step"]) or not math.isfinite(row["step"]):
        return f"step is {_shown(row['step'])}, expected a finite number"
    for key in ROW_NUMBERS[1:]:
        if key in row and not _is_number(row[key]):
            return f"{key} is {_shown(row[key])}, expected a number"
    for key, value in row.items():
        if key not in ROW_NUMBERS and value is not None and not _is_number(value):
            return f"metric {key} is {_shown(value)}, expected a number or null"
    return None


class RunRecord:
    """Keeps final and best values of every metric and writes them with the run's status.

    On resume, evaluations logged after the checkpoint's step (by the interrupted process) are dropped,
    so that the record matches the continuation exactly.

    ``best`` is taken within one evaluation protocol: image metrics depend on the sample count, so when
    the final evaluation uses more samples (``eval.num_samples_final``) than the in-training ones
    (``eval.num_samples``), best is over the in-training evaluations only (over the final one when there
    are none). ``protocol.best`` says which (the sample count and reference split).
    """

    def __init__(self, run_dir: Path, config: Dict[str, Any], overrides: List[str], resume_step: int = 0,
                 best_samples: Optional[int] = None):
        self.run_dir = run_dir
        self.best_samples = best_samples
        self.config = config
        self.overrides = overrides
        self.metrics: Dict[str, Dict[str, Any]] = {}
        self.higher_is_better: Dict[str, bool] = {}
        self.reasons: Dict[str, str] = {}
        self.protocol: Dict[str, Any] = {}
        # The networks as built (ganbench.archs.describe): each side's family and keys, BogoNet's draw.
        self.architecture: Optional[Dict[str, Any]] = None
        jsonl = run_dir / METRICS
        kept: List[str] = []
        if jsonl.exists():
            for line in jsonl.read_text().splitlines():
                try:
                    row = json.loads(line)
                except json.JSONDecodeError:
                    continue  # a line torn by a kill
                if row.get("step", math.inf) <= resume_step:
                    kept.append(line)
                    self._update(row)
            from .rundir import guarded_write

            tmp = jsonl.with_name(f".{METRICS}.{os.getpid()}.tmp")
            text = "".join(line + "\n" for line in kept)
            guarded_write(tmp, lambda f: f.write(text.encode()))
            os.replace(tmp, jsonl)

    @staticmethod
    def read(run_dir: Path) -> Optional[Dict[str, Any]]:
        """The run's results.json as it stands, or None."""
        try:
            return json.loads((Path(run_dir) / RESULTS).read_text())
        except (OSError, json.JSONDecodeError):
            return None

    def previous(self) -> Optional[Dict[str, Any]]:
        return self.read(self.run_dir)

    def _update(self, row: Dict[str, Any]) -> None:
        step = row["step"]
        samples = row.get("eval_samples")
        in_protocol = self.best_samples is None or samples is None or samples == self.best_samples
        for name, value in row.items():
            if name in ("step", "images_seen", "wall_time_s", "eval_samples"):
                continue
            value = _finite_or_none(value)
            entry = self.metrics.setdefault(name, {"final": None, "final_step": None, "best": None, "best_step": None})
            entry["final"], entry["final_step"], entry["final_samples"] = value, step, samples
            if not in_protocol:
                continue
            hib = self.higher_is_better.get(name, True)
            if value is not None and (entry["best"] is None or (value > entry["best"] if hib else value < entry["best"])):
                entry["best"], entry["best_step"], entry["best_samples"] = value, step, samples

    def add(self, step: int, images_seen: int, wall_time_s: float, values: Dict[str, Optional[float]],
            higher_is_better: Dict[str, bool], reasons: Optional[Dict[str, str]] = None,
            eval_samples: Optional[int] = None) -> None:
        """Append one evaluation to metrics.jsonl and update final/best. ``eval_samples``: the image
        metrics' sample count of this evaluation (None without image metrics)."""
        self.higher_is_better.update(higher_is_better)
        self.reasons.update(reasons or {})
        row = {"step": step, "images_seen": images_seen, "wall_time_s": round(wall_time_s, 3)}
        if eval_samples is not None:
            row["eval_samples"] = eval_samples
        row.update({k: _finite_or_none(v) for k, v in values.items()})
        append_line(self.run_dir / METRICS, json.dumps(row) + "\n")
        self._update(row)

    def write(self, status: str, step: int, iterations: int, wall_time_s: float, it_per_s: Optional[float],
              diverged_step: Optional[int] = None, error: Optional[str] = None) -> Dict[str, Any]:
        import torch

        metrics = {}
        best_samples: set = set()
        reference = (self.protocol.get("image") or {}).get("reference_split")
        for name, entry in self.metrics.items():
            entry = dict(entry)
            if entry["best"] is None and entry["final"] is not None:  # no evaluation under the in-training protocol
                entry["best"], entry["best_step"] = entry["final"], entry["final_step"]
                entry["best_samples"] = entry.get("final_samples")
            samples = entry.pop("best_samples", None)
            entry.pop("final_samples", None)
            if samples is not None:
                best_samples.add(samples)
            metrics[name] = dict(entry, higher_is_better=self.higher_is_better.get(name, True),
                                 reason=self.reasons.get(name) if entry["final"] is None else None)
        # Which evaluations "best" was taken over: one sample count and reference split for all metrics.
        best = ({"eval_samples": sorted(best_samples)[0] if len(best_samples) == 1 else sorted(best_samples),
                 "reference_split": reference} if best_samples else
                {"eval_samples": None, "note": "every evaluation uses the same protocol"})
        record = {
            "status": status,
            "step": step,
            "iterations": iterations,
            "diverged_step": diverged_step,
            "error": error,
            "wall_time_s": round(wall_time_s, 3),
            "it_per_s": None if it_per_s is None else round(it_per_s, 3),
            "metrics": metrics,
            "protocol": dict(self.protocol, best=best, torch=torch.__version__, python=platform.python_version()),
            "architecture": self.architecture,
            "config": self.config,
            "overrides": self.overrides,
        }
        write_json_atomic(self.run_dir / RESULTS, record)
        return record
