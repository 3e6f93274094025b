"""Errors that ganbench reports to the user as one line (no traceback unless HYDRA_FULL_ERROR=1), and the
condenser that turns any Hydra / OmegaConf / ganbench exception into that line."""
import difflib
import re
from typing import Any, Iterable, List, Optional


class GanbenchError(Exception):
    """Base class: a problem the user can fix, reported as a single line."""


class ConfigError(GanbenchError):
    """A config value is missing, unknown, of the wrong type or out of range."""


class DataError(GanbenchError):
    """A dataset cannot be found, downloaded or decoded."""


class CheckpointError(GanbenchError):
    """A checkpoint is corrupt or does not match the run's config."""


QUOTE_HINT = "quote values with special characters, e.g. 'key=\"a,b\"'"


def did_you_mean(word: str, choices: Iterable[str], cutoff: float = 0.6) -> Optional[str]:
    """The closest of ``choices`` to ``word`` by difflib's similarity ratio 2M/T (M matched characters,
    T the two lengths summed), if it reaches ``cutoff``; a case-only difference always matches."""
    choices = [str(c) for c in choices]
    for choice in choices:
        if choice.lower() == word.lower():
            return choice
    close = difflib.get_close_matches(word, choices, n=1, cutoff=cutoff)
    return close[0] if close else None


def unknown_key_message(full_key: str, allowed: Iterable[str], elsewhere: Iterable[str] = ()) -> str:
    """``<full_key>: unknown key; did you mean 'X'? allowed keys at '<parent>': a, b, ...``.

    ``elsewhere``: dotted keys of other nodes, suggested (as the full key) only when no key of this node
    is close, e.g. ``objective.lamda`` -> ``penalty.lambda_``.
    """
    allowed = [str(a) for a in allowed]
    prefix, _, key = full_key.rpartition(".")
    close = did_you_mean(key, allowed)
    hint = f"did you mean '{close}'? " if close else ""
    if not close:
        others = {e.rpartition(".")[2]: e for e in elsewhere if e.rpartition(".")[0] != prefix}
        # A key of another node must be closer (a typo of it: lamda -> penalty.lambda_, 0.83): at 0.6
        # arch.g.families (a BogoNet key given to an MLP side) drew metrics.names (0.62).
        near = did_you_mean(key, others, cutoff=0.75)
        if near:
            hint = f"did you mean '{others[near]}'? "
    where = f"'{prefix}'" if prefix else "the top level"
    return f"{full_key}: unknown key; {hint}allowed keys at {where}: {', '.join(allowed) or '(none)'}"


# torch's advice after a refused weights-only load ("Re-running torch.load with weights_only set to False
# will likely succeed ...") must never reach the user: loading untrusted pickles runs arbitrary code.
_UNSAFE_ADVICE = [
    r"In PyTorch 2\.\d+, we changed the default value of the `?weights_only`? argument.*?(?:trusted source\.?|$)",
    r"This file can still be loaded, to do so you have two options,.*?(?:checkpoint\.|$)",
    r"Re-running `?torch\.load`? with `?weights_only`? set to `?False`?.*?(?:\.|$)",
    r"Do it only if you got the file from a trusted source\.?",
    r"\(1\)|\(2\) Alternatively, to load with `?weights_only=True`? please check the recommended steps in the "
    r"following error message\.?",
    r"Please file an issue with the following so that we can make `?weights_only=True`? compatible with your "
    r"use case:?",
    r"Please use `?torch\.serialization\.add_safe_globals.*?(?:function\.|$)",
    r"Check the documentation of torch\.load to learn more about types accepted by default with weights_only"
    r"\S*(?:\s+https?://\S+)?",
    r"(?:Unsupported global: )?GLOBAL \S+ was not an allowed global by default\.?",
    r"[^.;()]*weights_only`?\s*(?:=|set to)\s*`?False[^.;()]*\.?",
]


def strip_unsafe_advice(text: str) -> str:
    """``text`` without any advice to load with ``weights_only=False``; a refused weights-only load reads
    ``weights-only load refused the file (...)``, naming the disallowed global when torch gave it."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", text)
    if "weights only load failed" not in text.lower() and not re.search(r"weights_only\W*(set to\W*)?False", text):
        return text
    found = re.search(r"GLOBAL (\S+?) was not an allowed global", text) or re.search(r"Unsupported global: GLOBAL (\S+)",
                                                                                 text)
    for pattern in _UNSAFE_ADVICE:
        text = re.sub(pattern, " ", text, flags=re.S)
    what = f" (it needs {found.group(1)})" if found else ""
    text = re.sub(r"Weights only load failed\.?", "weights-only load refused it: it holds more than tensors and "
                  f"plain containers{what}", text)
    text = re.sub(r"WeightsUnpickler error:\s*", "", text)
    text = re.sub(r"(plain containers(?: \(it needs \S+\))?)\s+(?=[A-Za-z])", r"\1: ", text)
    text = re.sub(r"\s+", " ", text)
    text = re.sub(r"\(\s*\)|\s+(?=[.;,)])", "", text)
    return text.strip()


# OmegaConf's type errors, reworded to say what is allowed.
_REWORDS = [
    (r"Value '(.*)' of type '\w+' could not be converted to Integer", r"must be an integer (got '\1')"),
    (r"Value '(.*)' of type '\w+' could not be converted to Float", r"must be a number (got '\1')"),
    (r"Value '(.*)' is not a valid bool \(type \w+\)", r"must be true or false (got '\1')"),
    (r"Value '(.*)' of type '\w+' could not be converted to Boolean", r"must be true or false (got '\1')"),
    (r"[Ii]nvalid value '(.*)', expected one of \[(.*)\]", r"unknown option '\1'; allowed: \2"),
    (r"Incompatible value '(.*)' for field of type '(\w+)'", r"must be a \2 (got '\1')"),
]


def reword(message: str) -> str:
    """OmegaConf's validation messages in ganbench's words (what is allowed, then the value given)."""
    for pattern, replacement in _REWORDS:
        message = re.sub(pattern, replacement, message)
    return message


def _dotted_keys(node: Any, prefix: str = "", depth: int = 3) -> List[str]:
    """Dotted keys of a config tree (the hydra node excluded), ``depth`` levels deep."""
    from omegaconf import DictConfig

    out: List[str] = []
    if not isinstance(node, DictConfig) or depth == 0:
        return out
    for key in node.keys():
        if not prefix and key == "hydra":
            continue
        full = f"{prefix}{key}"
        out.append(full)
        try:
            child = node._get_node(key)
        except Exception:  # noqa: BLE001 - a node that cannot be read has no keys to suggest
            continue
        out.extend(_dotted_keys(child, full + ".", depth - 1))
    return out


#: Config nodes whose keys are names, not settings (``arch.g.families``: a weight per BogoNet family), with
#: what one name is: an unknown key there is a name that does not exist, and adding it (``+key=``) cannot help.
NAME_MAPS = {"families": "family"}


def unknown_name_message(full_key: str, allowed: Iterable[str]) -> str:
    """``arch.g.families.foo: 'foo' is not a family; allowed families: dcgan, resnet, mlp`` (NAME_MAPS)."""
    allowed = [str(a) for a in allowed]
    parent, _, name = full_key.rpartition(".")
    nodes = parent.rpartition(".")[2]
    close = did_you_mean(name, allowed)
    hint = f" (did you mean '{close}'?)" if close else ""
    return f"{full_key}: '{name}' is not a {NAME_MAPS.get(nodes, 'name')}{hint}; allowed {nodes}: {', '.join(allowed)}"


def _could_not_override(ex: BaseException, key: str) -> str:
    """Hydra's "Could not override 'x.y'": the allowed keys of x (from the OmegaConf error's parent node)."""
    cause = ex.__cause__
    parent = getattr(cause, "parent_node", None)
    # A mapping value (x.y={foo:1}) fails on a key inside it: name that key (x.y.foo), whose parent is x.y.
    inner = str(getattr(cause, "full_key", None) or "")
    if inner.startswith(key + "."):
        key = inner
    try:
        allowed = [str(k) for k in parent.keys()] if parent is not None else []
        root = parent._get_root() if parent is not None else None
    except Exception:  # noqa: BLE001 - fall back to the plain message
        allowed, root = [], None
    if not allowed:
        return f"{key}: unknown key (add it with +{key}=... only if you mean to)"
    if key.rpartition(".")[0].rpartition(".")[2] in NAME_MAPS:
        return unknown_name_message(key, allowed)
    if root is parent:
        allowed = [k for k in allowed if k != "hydra"]
    message = unknown_key_message(key, allowed, _dotted_keys(root) if root is not None else ())
    if "did you mean" not in message:
        message += f" (a new key needs +{key}=...)"
    return message


def _schema_key(line: str) -> Optional[str]:
    """``gmm.lrr: Key 'lrr' not in 'GMMConfig'`` (OmegaConf on a structured config) with the allowed keys."""
    match = re.match(r"^([\w.]+): Key '([^']+)' not in '(\w+)'", line)
    if not match:
        return None
    import dataclasses
    import sys

    full_key, cls_name = match.group(1), match.group(3)
    for module in [m for name, m in list(sys.modules.items()) if name.startswith("ganbench.") and m is not None]:
        cls = getattr(module, cls_name, None)
        if isinstance(cls, type) and dataclasses.is_dataclass(cls):
            return unknown_key_message(full_key, [f.name for f in dataclasses.fields(cls)])
    return None


# torchvision built for another torch: its compiled operators fail to register when it is imported.
TORCH_MISMATCH = re.compile(r"operator torchvision::\w+ does not exist")


def installed_version(name: str) -> str:
    from importlib import metadata

    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "not installed"


def torch_mismatch(ex: BaseException) -> Optional[str]:
    """The one line for a torchvision built against another torch than the one installed (importing it fails
    with "operator torchvision::nms does not exist"); None for any other error."""
    if isinstance(ex, GanbenchError) or not TORCH_MISMATCH.search(str(ex)):
        return None
    return (f"torch {installed_version('torch')} and torchvision {installed_version('torchvision')} are not builds "
            "of one release (importing torchvision failed: {first}); reinstall them together, from the same index: "
            "pip install --force-reinstall torch torchvision").replace("{first}", str(ex).strip().splitlines()[0][:200])


def check_torch_build() -> None:
    """Import torchvision at a start (a run's checks, the sampler): a torchvision built for another torch fails
    here as one line (``torch_mismatch``), before anything is written."""
    try:
        import torchvision  # noqa: F401
    except RuntimeError as ex:
        line = torch_mismatch(ex)
        if line is None:
            raise
        raise GanbenchError(line) from None


def one_line_error(ex: BaseException) -> str:
    """Condense Hydra / OmegaConf / ganbench errors to a single line naming the key and the allowed values."""
    return strip_unsafe_advice(_one_line(ex))


def _one_line(ex: BaseException) -> str:
    text = str(ex)
    mismatch = torch_mismatch(ex)
    if mismatch is not None:
        return mismatch
    if "weights only load failed" in text.lower() and not isinstance(ex, GanbenchError):
        # torch's message spans lines; what it names (the disallowed global) is past the first one.
        return f"{type(ex).__name__}: {strip_unsafe_advice(text)}"
    override = getattr(ex, "override", None)
    if type(ex).__name__ == "OverrideParseException" and override is not None:
        lines = [line.strip() for line in str(getattr(ex, "message", text)).splitlines()
                 if line.strip() and not line.startswith("See https://") and line.strip() != "^"]
        lines = [line for line in lines if not line.startswith("Error parsing override")]
        reason = lines[0] if lines else "syntax error"
        if reason.startswith("LexerNoViableAltException"):
            reason = "unterminated quote or invalid character"
        if "missing EQUAL" in reason:
            reason = "expected key=value (or +key=value to add, ~key to delete)"
        return f"cannot parse override '{override}': {reason}; {QUOTE_HINT}"
    match = re.search(r"Ambiguous value for argument '([^']+)'", text)
    if match:
        return (f"'{match.group(1)}': a comma-separated value is a sweep: add -m (--multirun) to sweep over it, "
                "write key=[a,b] for a list, or quote it for a string, e.g. 'key=\"a,b\"'")
    match = re.search(r"Sweep parameters '([^']+)' requires --multirun", text)
    if match:
        return f"'{match.group(1)}' is a sweep: add -m (--multirun) to run it"
    match = re.search(r"Could not find '([^']+)'\s*\n\s*\nAvailable options in '([^']+)':\s*\n((?:\s+\S+\n?)+)", text)
    if match:
        options = ", ".join(o.strip() for o in match.group(3).split() if o.strip())
        wrong = match.group(1).rsplit("/", 1)[-1]
        close = did_you_mean(wrong, options.split(", "))
        hint = f" (did you mean '{close}'?)" if close else ""
        return f"{match.group(2)}: unknown option '{wrong}'{hint}; allowed: {options}"
    match = re.search(r"Could not override '([^']+)'", text)
    if match:
        return _could_not_override(ex, match.group(1))
    match = re.search(r"Could not find '([^']+)'", text)
    if match:
        return f"unknown config '{match.group(1)}'"
    cause = ex.__cause__
    if cause is not None and not isinstance(ex, GanbenchError) and str(cause):
        inner = _one_line(cause)
        first = text.strip().splitlines()[0] if text.strip() else type(ex).__name__
        return f"{first}: {inner}" if inner not in first else first
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    full_key = next((line.split(":", 1)[1].strip() for line in lines if line.startswith("full_key:")), None)
    first = reword(lines[0]) if lines else type(ex).__name__
    if isinstance(ex, GanbenchError):
        return _schema_key(first) or first
    if full_key:
        return f"{full_key}: {first}"
    return f"{type(ex).__name__}: {first}"
