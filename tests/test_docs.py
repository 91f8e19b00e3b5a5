"""The documentation against the code, so that neither drifts: README.md and docs/*.md.

- docs/commands.md has a section per `bearrec` command (walked from `bearrec.cli.build_parser()`) that names every
  option of the command, and names no option the command lacks;
- every `bearrec ...` line in a code block parses with the real parser (values included), its `key=value` overrides
  name real config keys, and every option named beside `bearrec CMD` in inline code exists;
- every relative link resolves to a file (and a `#fragment` to a heading of that page), and every page is reachable
  from the README;
- the config keys docs/training.md and docs/experiments.md list are the dataclasses' fields, both ways.

A command the parser lacks (a page may describe one that another branch adds) is skipped with that reason. Fast:
nothing here imports torch or transformers (the config dataclasses are read from their source with `ast`), so the
keys under `training:` (transformers.TrainingArguments') are not checked here; `bearrec train` checks them.
"""
from __future__ import annotations

import argparse
import ast
import contextlib
import dataclasses
import io
import re
import shlex
from collections import Counter
from pathlib import Path

import pytest

from bearrec.cli import build_parser

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
SRC = ROOT / "src" / "bearrec"
PAGES = [ROOT / "README.md", *sorted(DOCS.glob("*.md"))]
# Dated records of what was run: they quote commands and keys as they were then, so only their links are checked.
RECORDS = {DOCS / "results.md", DOCS / "benchmarks.md"}
CURRENT = [p for p in PAGES if p not in RECORDS]
COMMANDS_PAGE = DOCS / "commands.md"
OPTION = re.compile(r"(?<![\w-])--[a-z][a-z0-9-]*")


# ---------------------------------------------------------------- reading the code

def commands(parser: argparse.ArgumentParser | None = None, prefix: str = "") -> dict[str, argparse.ArgumentParser]:
    """Every leaf subcommand of the parser by its words ("prepare", "data fetch")."""
    parser = parser or build_parser()
    found: dict[str, argparse.ArgumentParser] = {}
    for action in parser._actions:  # argparse exposes subparsers only through its actions
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                words = f"{prefix} {name}".strip()
                found.update(commands(sub, words) or {words: sub})
    return found


COMMANDS = commands()
TOP_LEVEL = {c.split()[0] for c in COMMANDS}


def options(command: str) -> set[str]:
    """Every option string of a command, --help included."""
    return {s for a in COMMANDS[command]._actions for s in a.option_strings}


def dataclass_fields(path: Path, name: str) -> list[str]:
    """The field names of dataclass `name` in the source file `path`, read without importing it (no torch)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    cls = next(n for n in ast.walk(tree) if isinstance(n, ast.ClassDef) and n.name == name)
    return [s.target.id for s in cls.body if isinstance(s, ast.AnnAssign) and isinstance(s.target, ast.Name)]


TRAIN_FIELDS = dataclass_fields(SRC / "train" / "config.py", "TrainConfig")
SECTION_FIELDS = {
    "objective": dataclass_fields(SRC / "methods" / "config.py", "ObjectiveConfig"),
    "tiny": dataclass_fields(SRC / "train" / "config.py", "TinyModel"),
    "lora": dataclass_fields(SRC / "models.py", "LoraSettings"),
}
EXPERIMENT_FIELDS = [f for f in dataclass_fields(SRC / "experiment" / "config.py", "ExperimentConfig") if f != "source"]


# ---------------------------------------------------------------- reading the pages

def read(page: Path) -> str:
    return page.read_text(encoding="utf-8")


def name(page: Path) -> str:
    return page.relative_to(ROOT).as_posix()


FENCE = re.compile(r"^[ \t]*```([\w-]*)\n(.*?)^[ \t]*```[ \t]*$", re.S | re.M)


def code_blocks(text: str, languages: tuple[str, ...] = ("bash", "sh", "")) -> list[str]:
    return [m[2] for m in FENCE.finditer(text) if m[1] in languages]


def prose(text: str) -> str:
    """The text outside fenced code blocks."""
    return FENCE.sub("", text)


def inline_code(text: str) -> list[str]:
    return re.findall(r"`([^`\n]+)`", prose(text))


def sections(text: str) -> dict[str, str]:
    """Level-2 sections by heading."""
    parts = re.split(r"^## (.+)$", text, flags=re.M)
    return {parts[i].strip(): parts[i + 1] for i in range(1, len(parts), 2)}


def command_sections() -> dict[str, str]:
    """docs/commands.md's sections headed `## bearrec CMD`, by CMD."""
    return {h.removeprefix("bearrec ").strip("` "): body for h, body in sections(read(COMMANDS_PAGE)).items()
            if h.strip("`").startswith("bearrec ")}


def shell_lines(block: str) -> list[str]:
    """A code block's commands: continuation lines joined, comments dropped, `&&` chains split."""
    joined = re.sub(r"\\\n\s*", " ", block)
    lines = []
    for line in joined.splitlines():
        words = shlex.split(line, comments=True)
        lines += [" ".join(map(shlex.quote, part)) for part in _split_on(words, "&&") if part]
    return lines


def _split_on(words: list[str], sep: str) -> list[list[str]]:
    parts: list[list[str]] = [[]]
    for w in words:
        if w == sep:
            parts.append([])
        else:
            parts[-1].append(w)
    return parts


def bearrec_args(line: str) -> list[str] | None:
    """The arguments after `bearrec` in a shell command (also `python -m bearrec`, `./bootstrap.sh bearrec`)."""
    words = shlex.split(line)
    return words[words.index("bearrec") + 1:] if "bearrec" in words else None


def command_of(args: list[str]) -> str | None:
    """The subcommand the arguments start with ("data fetch" for two words), or None when the parser lacks it."""
    for n in (2, 1):
        words = " ".join(args[:n])
        if words in COMMANDS:
            return words
    return None


def invocations() -> list[tuple[str, str]]:
    """(page, line) of every `bearrec` command in a shell code block of the current pages."""
    return [(name(p), line) for p in CURRENT for block in code_blocks(read(p)) for line in shell_lines(block)
            if bearrec_args(line)]


def slug(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation dropped, spaces as hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def anchors(page: Path) -> set[str]:
    seen: Counter = Counter()
    found = set()
    for heading in re.findall(r"^#{1,6} (.+)$", prose(read(page)), flags=re.M):
        base = slug(heading)
        found.add(base if not seen[base] else f"{base}-{seen[base]}")
        seen[base] += 1
    return found


def links(page: Path) -> list[str]:
    text = re.sub(r"`[^`\n]*`", "", prose(read(page)))
    return [t for t in re.findall(r"\[[^\]]*\]\(([^)\s]+)\)", text) if not re.match(r"[a-z]+:", t)]


# ---------------------------------------------------------------- the tests

def test_the_walk_finds_every_command():
    """The helpers read what they claim: the parser's commands, the dataclasses' fields."""
    assert {"prepare", "data fetch", "train", "recommend", "evaluate", "demo"} <= set(COMMANDS)
    assert "--beams" in options("recommend") and "--num-beams" in options("recommend")
    from bearrec.methods import ObjectiveConfig  # light: no torch

    assert SECTION_FIELDS["objective"] == [f.name for f in dataclasses.fields(ObjectiveConfig)]
    assert {"dataset", "objective", "training", "item_kind"} <= set(TRAIN_FIELDS)


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_every_option_of_a_command_is_on_its_section_of_commands_md(command):
    body = command_sections().get(command)
    assert body is not None, f"docs/commands.md has no section `## bearrec {command}`"
    named = set(OPTION.findall(body))
    missing = sorted(s for s in options(command) if s.startswith("--") and s != "--help" and s not in named)
    assert not missing, f"docs/commands.md, `bearrec {command}`: options not described: {', '.join(missing)}"


@pytest.mark.parametrize("command", sorted(command_sections()))
def test_every_option_a_command_section_names_exists(command):
    if command not in COMMANDS:
        pytest.skip(f"`bearrec {command}` is not a command of this parser, so its options cannot be checked")
    unknown = sorted(set(OPTION.findall(command_sections()[command])) - options(command))
    assert not unknown, f"docs/commands.md, `bearrec {command}` names options it does not have: {', '.join(unknown)}"


@pytest.mark.parametrize("page, line", invocations())
def test_every_bearrec_command_in_a_code_block_parses(page, line):
    args = bearrec_args(line)
    if args[0] not in TOP_LEVEL:
        pytest.skip(f"`bearrec {args[0]}` is not a command of this parser")
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        try:
            parsed = build_parser().parse_args(args)
        except SystemExit:
            pytest.fail(f"{page}: `{line}` does not parse: {err.getvalue().strip().splitlines()[-1]}")
    for override in getattr(parsed, "overrides", None) or []:
        key = override.split("=", 1)[0]
        if parsed.command == "experiment":
            assert key.split(".")[0] in EXPERIMENT_FIELDS, f"{page}: `{line}`: {key} is not an experiment key"
        else:
            check_config_key(key, f"{page}: `{line}`")


def check_config_key(key: str, where: str) -> None:
    """A dotted training-config key: a TrainConfig field, and for objective/tiny/lora a field of that section."""
    top, _, rest = key.partition(".")
    assert top in TRAIN_FIELDS, f"{where}: {top} is not a TrainConfig field ({', '.join(TRAIN_FIELDS)})"
    if top in SECTION_FIELDS and rest:
        assert rest in SECTION_FIELDS[top], f"{where}: {key}: {rest} is not a field of `{top}:`"


@pytest.mark.parametrize("page", CURRENT, ids=name)
def test_options_named_beside_a_command_exist(page):
    for span in inline_code(read(page)):
        words = span.split()
        if not words or words[0] != "bearrec" or len(words) < 2:
            continue
        command = command_of(words[1:])
        if command is None:  # a command another branch adds (the parser test skips it, naming it)
            continue
        unknown = sorted(set(OPTION.findall(span)) - options(command))
        assert not unknown, f"{name(page)}: `{span}`: bearrec {command} has no {', '.join(unknown)}"


@pytest.mark.parametrize("page", CURRENT, ids=name)
def test_dotted_config_keys_are_fields(page):
    for span in inline_code(read(page)) + code_blocks(read(page), ("bash", "sh", "", "yaml", "python")):
        for section, field in re.findall(r"(?<![\w./-])(objective|tiny|lora)\.([a-z_]+)", span):
            assert field in SECTION_FIELDS[section], f"{name(page)}: `{section}.{field}` is not a config key"


def table_keys(text: str, heading: str) -> list[str]:
    """The backquoted keys in the first column of the first table under `heading`."""
    body = text[text.index(heading):]
    table = body[body.index("\n|") + 1:].split("\n\n")[0]
    return [k for cell in re.findall(r"^\| ([^|]+) \|", table, flags=re.M) for k in re.findall(r"`([\w.]+)`", cell)]


def test_the_config_keys_of_training_md_are_train_config_fields():
    keys = table_keys(read(DOCS / "training.md"), "## The config")
    assert sorted(set(keys) - set(TRAIN_FIELDS)) == [], "docs/training.md lists keys TrainConfig lacks"
    assert sorted(set(TRAIN_FIELDS) - set(keys)) == [], "TrainConfig has fields docs/training.md does not list"
    objective = table_keys(read(DOCS / "training.md"), "### `objective:`")
    assert sorted(k.removeprefix("objective.") for k in objective) == sorted(SECTION_FIELDS["objective"])


def test_the_keys_of_experiments_md_are_experiment_config_fields():
    keys = table_keys(read(DOCS / "experiments.md"), "## The keys")
    assert sorted(keys) == sorted(EXPERIMENT_FIELDS)


@pytest.mark.parametrize("page", PAGES, ids=name)
def test_every_relative_link_resolves(page):
    for target in links(page):
        path, _, fragment = target.partition("#")
        dest = (page.parent / path).resolve() if path else page
        assert dest.exists(), f"{name(page)}: the link {target} leads nowhere"
        if fragment and dest.suffix == ".md":
            assert fragment in anchors(dest), f"{name(page)}: the link {target}: no heading #{fragment} there"


def test_every_page_is_reachable_from_the_readme():
    seen, todo = set(), [ROOT / "README.md"]
    while todo:
        page = todo.pop()
        if page in seen or page.suffix != ".md" or not page.is_file():
            continue
        seen.add(page)
        todo += [(page.parent / t.partition("#")[0]).resolve() for t in links(page) if t.partition("#")[0]]
    unreached = sorted(name(p) for p in PAGES if p not in seen)
    assert not unreached, f"no link leads from README.md to {', '.join(unreached)}"


def test_the_readme_has_a_line_for_every_command():
    readme = sections(read(ROOT / "README.md"))["Commands"]
    missing = sorted(c for c in COMMANDS if f"`bearrec {c}" not in readme)
    assert not missing, f"README.md's command list lacks {', '.join(missing)}"
