"""The documents stay true: README.md and docs/*.md against conf/ and pyproject.toml.

Every preset, group option and console script the documents name exists; every preset, group option and console
script that exists is documented (the options in docs/configuration.md or docs/presets.md, the scripts in the
README); every relative link and every repository path they name is in the repository; the README stays short
(the first hour) and its tables render. Pure file reading: no subprocess, no import of ganbench.
"""
from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf"
README = ROOT / "README.md"
DOCS = ROOT / "docs"
README_MAX_LINES = 300


# Options a group has without a file of ours: Hydra's and its plugins' own (hydra-core's basic launcher and sweeper,
# hydra-joblib-launcher, hydra-submitit-launcher, hydra-optuna-sweeper's samplers).
PLUGIN_OPTIONS = {
    "hydra/launcher": {"basic", "joblib", "submitit_local", "submitit_slurm"},
    "hydra/sweeper": {"basic", "optuna"},
    "hydra/sweeper/sampler": {"tpe", "random", "cmaes", "grid", "nsgaii", "motpe"},
}

# Phrases the documents must not contain: paths outside the repository, and figures without their machine.
BANNED = ["../shared", "REFERENCE.md", "PyTorch version not recorded", "this repository's machine",
          "this repository's 2-core"]


def documents() -> dict[str, str]:
    files = [README, *sorted(DOCS.glob("*.md"))]
    return {p.relative_to(ROOT).as_posix(): p.read_text(encoding="utf-8") for p in files}


def prose(text: str) -> str:
    """The text with HTML comments removed (code blocks are kept: their commands must work too)."""
    return re.sub(r"<!--.*?-->", "", text, flags=re.S)


def conf_groups() -> dict[str, set[str]]:
    """group -> options: every folder of conf/ holding YAML files (conf/arch/g -> 'arch/g'), plus plugin options."""
    groups: dict[str, set[str]] = {}
    for folder in sorted(p for p in CONF.rglob("*") if p.is_dir()):
        options = {f.stem for f in folder.glob("*.yaml")}
        if options:
            groups[folder.relative_to(CONF).as_posix()] = options
    for group, options in PLUGIN_OPTIONS.items():
        groups.setdefault(group, set()).update(options)
    return groups


def console_scripts() -> set[str]:
    with open(ROOT / "pyproject.toml", "rb") as f:
        return set(tomllib.load(f)["project"]["scripts"])


def choices_named(text: str, groups: dict[str, set[str]]) -> list[tuple[str, str]]:
    """(group, option) for every `group=option[,option...]` in the text; a group is matched only where it is not
    part of a longer key (`arch.g.width=` and `hydra.launcher.n_jobs=` are keys, not choices)."""
    names = sorted(groups, key=len, reverse=True)
    pattern = re.compile(r"(?<![\w./-])(" + "|".join(re.escape(g) for g in names) + r")=([A-Za-z_][\w,=]*)(\(?)")
    found = []
    for group, values, call in pattern.findall(text):
        if call:  # arm=choice(...): a search space, not an option
            continue
        for value in values.split(","):
            if "=" in value:  # arm=dragan,dataset=grid25: the next key of a run directory's name
                break
            if value:
                found.append((group, value))
    return found


def _slug(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation dropped (letters, digits, _ and - kept), spaces to -."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def anchors(text: str) -> set[str]:
    out: set[str] = set()
    seen: dict[str, int] = {}
    in_fence = False
    for line in text.splitlines():
        if line.startswith("```"):
            in_fence = not in_fence
        elif not in_fence and (m := re.match(r"#{1,6} (.*)", line)):
            slug = _slug(m.group(1))
            n = seen.get(slug, 0)
            seen[slug] = n + 1
            out.add(slug if n == 0 else f"{slug}-{n}")
    return out


def links(text: str) -> list[str]:
    """Targets of markdown links [text](target) that point into the repository (not URLs, not page anchors)."""
    targets = re.findall(r"\]\(([^)\s]+)\)", text)
    return [t for t in targets if not re.match(r"[a-z]+:", t) and not t.startswith("#")]


REPO_PATH = re.compile(r"(?<![\w./~-])((?:conf|scripts|tests|docs|hydra_plugins|ganbench|\.ci)/[\w./-]*)")


def repo_paths(text: str) -> set[str]:
    """Paths into the repository's own folders (`scripts/bench.py`, `conf/experiment/`), placeholders left out."""
    out = set()
    for m in REPO_PATH.finditer(text):
        path = m.group(1).rstrip(".-/")
        rest = text[m.end():m.end() + 1]
        if rest and rest in "<*{$%":  # conf/arch/g/<family>.yaml, judge-*.json, ...: a pattern, not a file
            continue
        out.add(path)
    return out


def table_breaks(text: str) -> list[int]:
    """Line numbers of blank lines inside a markdown table (a row, a blank line, a row: the rows after it render
    as text)."""
    lines = text.splitlines()
    bad, in_fence = [], False
    for i, line in enumerate(lines):
        if line.startswith("```"):
            in_fence = not in_fence
        if in_fence or line.strip() or i == 0 or i + 1 >= len(lines):
            continue
        new_table = i + 2 < len(lines) and re.match(r"\s*\|[\s:|-]*-[\s:|-]*$", lines[i + 2])  # header, |---|
        if lines[i - 1].lstrip().startswith("|") and lines[i + 1].lstrip().startswith("|") and not new_table:
            bad.append(i + 1)
    return bad


# ---------------------------------------------------------------------------------------------------------------


def test_readme_is_short():
    n = len(README.read_text(encoding="utf-8").splitlines())
    assert n <= README_MAX_LINES, f"README.md has {n} lines; the README is for the first hour (at most " \
                                  f"{README_MAX_LINES}), the reference goes to docs/"


def test_readme_gives_the_install_choice_before_the_install():
    commands = [line.strip() for line in README.read_text(encoding="utf-8").splitlines()]
    cpu = next((i for i, c in enumerate(commands) if c.startswith("pip install") and "whl/cpu" in c), None)
    plain = next(i for i, c in enumerate(commands) if c.startswith("pip install -e ."))
    assert cpu is not None, "README.md: the CPU-only install route is missing"
    assert cpu < plain, "README.md: the CPU-only route must come before the command that pulls the CUDA build"


@pytest.mark.parametrize("name", sorted(documents()))
def test_named_presets_and_options_exist(name):
    groups = conf_groups()
    missing = sorted({f"{g}={o}" for g, o in choices_named(prose(documents()[name]), groups) if o not in groups[g]})
    assert not missing, f"{name} names options that conf/ does not have: {', '.join(missing)}"


@pytest.mark.parametrize("name", sorted(documents()))
def test_named_console_scripts_exist(name):
    scripts = console_scripts()
    named = set(re.findall(r"(?<![\w./-])(ganbench-[a-z]+)(?![\w-])", documents()[name]))
    missing = sorted(named - scripts)
    assert not missing, f"{name} names console scripts pyproject.toml does not declare: {', '.join(missing)}"


def test_every_option_is_documented():
    docs = documents()
    reference = docs.get("docs/configuration.md", "") + docs.get("docs/presets.md", "")
    named = set(choices_named(reference, conf_groups()))
    missing = []
    for group, options in conf_groups().items():
        if group.startswith("hydra/"):  # Hydra's own settings (logging, plugins), documented in docs/sweeps.md
            continue
        for option in sorted(options):
            if (group, option) not in named and f"`{option}`" not in reference:
                missing.append(f"{group}={option}")
    assert not missing, ("options of conf/ that neither docs/configuration.md nor docs/presets.md documents: "
                         + ", ".join(missing))


def test_every_preset_is_documented():
    docs = documents()
    reference = docs.get("docs/configuration.md", "") + docs.get("docs/presets.md", "")
    missing = [p.stem for p in sorted((CONF / "experiment").glob("*.yaml"))
               if f"`{p.stem}`" not in reference and f"experiment={p.stem}" not in reference]
    assert not missing, f"presets of conf/experiment/ missing from docs/presets.md: {', '.join(missing)}"


def test_every_launcher_and_sweeper_is_documented():
    sweeps = documents().get("docs/sweeps.md", "")
    for group in ("hydra/launcher", "hydra/sweeper"):
        for option in sorted(p.stem for p in (CONF / group).glob("*.yaml")):
            assert f"{group}={option}" in sweeps or f"`{option}`" in sweeps, \
                f"{group}={option} (conf/{group}/{option}.yaml) is not documented in docs/sweeps.md"


def test_every_console_script_is_in_the_readme():
    text = README.read_text(encoding="utf-8")
    missing = sorted(s for s in console_scripts() if not re.search(rf"(?<![\w-]){re.escape(s)}(?![\w-])", text))
    assert not missing, f"console scripts of pyproject.toml missing from README.md: {', '.join(missing)}"


@pytest.mark.parametrize("name", sorted(documents()))
def test_links_resolve(name):
    docs = documents()
    base = (ROOT / name).parent
    broken = []
    for target in links(prose(docs[name])):
        path, _, fragment = target.partition("#")
        file = (base / path).resolve() if path else ROOT / name
        rel = file.relative_to(ROOT).as_posix() if file.is_relative_to(ROOT) else str(file)
        if not file.exists():
            broken.append(f"{target} (no such file)")
            continue
        if fragment and file.suffix == ".md" and fragment not in anchors(file.read_text(encoding="utf-8")):
            broken.append(f"{target} (no heading with that anchor in {rel})")
    assert not broken, f"{name}: broken links: " + "; ".join(broken)


@pytest.mark.parametrize("name", sorted(documents()))
def test_referenced_files_exist(name):
    missing = sorted(p for p in repo_paths(prose(documents()[name])) if not (ROOT / p).exists())
    assert not missing, f"{name} names repository files that do not exist: {', '.join(missing)}"


@pytest.mark.parametrize("name", sorted(documents()))
def test_tables_have_no_blank_lines(name):
    bad = table_breaks(documents()[name])
    assert not bad, f"{name}: a blank line inside a table at line(s) {bad}: the rows after it render as text"


@pytest.mark.parametrize("name", sorted(documents()))
def test_no_banned_phrases(name):
    text = documents()[name]
    found = [p for p in BANNED if p in text]
    assert not found, f"{name} contains {found}: the documents speak to a user of the released tool"
