"""Load a config set (the four YAML files of one folder), collecting every problem at once.

A user who fixes one error only to meet the next is a user running the tool five times: all
four files are read, `--set` overrides applied, each file validated by its pydantic model and
the cross-field rules run, and every problem comes back as one `Finding` with file:line:col,
the key path and a fix hint. pydantic's messages are rewritten into the config's terms
("r: expected a positive integer, got 'sixty-four'").
"""

from __future__ import annotations

import copy
import hashlib
import importlib.util
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ValidationError

from vlmctl.config import FILES, MODELS, CollatorConfig, ModelConfig, PeftSettings, TrainConfig
from vlmctl.config.collator import DatasetColumns
from vlmctl.config.pydantic_errors import clean_path, describe_error, show_value, unknown_key
from vlmctl.config.yamlio import KeyPath, YamlDoc, dotted, parse_dotted, parse_scalar, read_yaml
from vlmctl.errors import ConfigError, Finding, UsageError, did_you_mean

FileKey = Literal["model", "collator", "train", "peft"]


@dataclass(frozen=True)
class Override:
    """One `--set file.key=value` (a bare key means `train.key`)."""

    text: str
    file_key: str
    path: KeyPath
    value: Any


def parse_override(text: str) -> Override:
    """Parse `train.learning_rate=2e-4`; the value is read as a YAML scalar (safe loader)."""
    key, sep, raw = text.partition("=")
    key = key.strip()
    if not sep or not key:
        raise UsageError(
            Finding(
                "error",
                f"--set {text!r}: expected KEY=VALUE",
                hint="e.g. --set train.learning_rate=2e-4 or --set peft.r=16",
                code="override-syntax",
            )
        )
    try:
        path = parse_dotted(key)
    except ValueError as exc:
        raise UsageError(
            Finding(
                "error",
                f"--set {text!r}: {exc}",
                hint="write file.section.key=value",
                code="override-syntax",
            )
        ) from None
    if path[0] in FILES and len(path) > 1:
        file_key, path = str(path[0]), path[1:]
    else:
        file_key = "train"
    if isinstance(path[0], int):
        raise UsageError(
            Finding(
                "error",
                f"--set {text!r}: a file's top level is a mapping, not a list",
                hint="write file.key=value, e.g. --set peft.r=16",
                code="override-syntax",
            )
        )
    return Override(text=text, file_key=file_key, path=path, value=parse_scalar(raw.strip()))


def shown_override(text: str) -> str:
    """A `--set` as messages may print it: a credential's value is replaced by `***`."""
    from vlmctl.credentials import is_secret_override

    return text.partition("=")[0] + "=***" if is_secret_override(text) else text


@dataclass
class ConfigSet:
    """The four validated configs of one folder, with the positions of every key."""

    dir: Path
    files: dict[str, Path]
    model: ModelConfig
    collator: CollatorConfig
    train: TrainConfig
    peft: PeftSettings
    docs: dict[str, YamlDoc] = field(default_factory=dict, repr=False)
    overrides: list[Override] = field(default_factory=list)
    # Warnings and notes of the cross-field rules (errors are raised, never stored here).
    findings: list[Finding] = field(default_factory=list)

    def location(self, file_key: str, key: str | KeyPath) -> tuple[str, int | None, int | None]:
        """(file, line, col) where `key` (dotted or a path) is written; an override names itself."""
        path = parse_dotted(key) if isinstance(key, str) else tuple(key)
        return _locate(
            self.files[file_key], self.docs.get(file_key), self.overrides, file_key, path
        )

    def finding(
        self,
        severity: str,
        file_key: str,
        key: str | KeyPath,
        message: str,
        hint: str | None = None,
        code: str = "",
    ) -> Finding:
        """A finding placed at `key` of `file_key`."""
        path = parse_dotted(key) if isinstance(key, str) else tuple(key)
        file, line, col = self.location(file_key, path)
        return Finding(
            severity,
            message,
            hint=hint,
            file=file,
            line=line,
            col=col,  # type: ignore[arg-type]
            key=dotted(path),
            code=code,
        )

    def resolve_path(self, value: str | Path) -> Path:
        """A path written in a config, resolved against the config folder."""
        p = Path(value).expanduser()
        return p if p.is_absolute() else (self.dir / p)

    def model_location(self) -> str:
        """`model_name_or_path`: a local folder (relative to the config folder) as an absolute
        path, else the hub id as written."""
        mid = str(self.model.model_name_or_path)
        local = self.resolve_path(mid)
        return str(local.resolve()) if local.exists() else mid

    @property
    def output_dir(self) -> Path:
        """`train.output_dir`, default `outputs/<config folder name>` (relative to the cwd)."""
        return Path(self.train.output_dir or Path("outputs") / self.dir.resolve().name)


def _locate(
    file: Path, doc: YamlDoc | None, overrides: Sequence[Override], file_key: str, path: KeyPath
) -> tuple[str, int | None, int | None]:
    for ov in overrides:
        # the key itself or one above it came from this --set (`--set trian.lr=1` makes `trian`)
        if ov.file_key == file_key and ov.path[: len(path)] == path[: len(ov.path)]:
            return f"--set {shown_override(ov.text)}", None, None
    pos = doc.position(path) if doc is not None else None
    return (str(file), pos[0], pos[1]) if pos else (str(file), None, None)


def _validation_findings(
    exc: ValidationError,
    model_cls: type[BaseModel],
    data: dict,
    file_key: str,
    file: Path,
    doc: YamlDoc,
    overrides: Sequence[Override],
) -> list[Finding]:
    out: list[Finding] = []
    seen: set[tuple[KeyPath, str]] = set()
    errors = [
        (clean_path(tuple(e["loc"]), data, e["type"]), e) for e in exc.errors(include_url=False)
    ]
    for path, err in errors:
        if any(len(p) > len(path) and p[: len(path)] == path for p, _ in errors):
            continue  # a union's "expected a string or a list" above the item that is wrong
        message, hint, code = describe_error(err, model_cls, path, file_key)
        if hint is None and code == "invalid-value" and ": expected " in message:
            hint = "write " + message.split(": expected ", 1)[1].rsplit(", got ", 1)[0]
        if (path, message) in seen:
            continue  # one line per key even when every union branch complains
        seen.add((path, message))
        where, line, col = _locate(file, doc, overrides, file_key, path)
        out.append(
            Finding(
                "error",
                message,
                hint=hint,
                file=where,
                line=line,
                col=col,
                key=dotted(path) or None,
                code=code,
            )
        )
    # A union whose branches are untyped here reports each: one "expected" line per key.
    result: list[Finding] = []
    typed_keys: set[str | None] = set()
    for f in out:
        if " expected " in f.message:
            if f.key in typed_keys:
                continue
            typed_keys.add(f.key)
        result.append(f)
    return result


# ---- file-specific key checks pydantic cannot do alone ----


def _column_key_findings(
    data: dict, file: Path, doc: YamlDoc, overrides: Sequence[Override]
) -> list[Finding]:
    """Extra `dataset_columns` keys must end in `_column` (they become template variables)."""
    cols = data.get("dataset_columns")
    if not isinstance(cols, dict):
        return []
    out = []
    for key in list(cols):
        if key in DatasetColumns.model_fields or key.endswith("_column"):
            continue
        path = ("dataset_columns", key)
        where, line, col = _locate(file, doc, overrides, "collator", path)
        close = did_you_mean(key, list(DatasetColumns.model_fields))
        hint = f"did you mean {close!r}?" if close else "extra keys must end in '_column'"
        out.append(
            Finding(
                "error",
                f"{key}: unknown key",
                hint=hint,
                file=where,
                line=line,
                col=col,
                key=dotted(path),
                code="unknown-key",
            )
        )
        del cols[key]
    return out


def _train_key_findings(
    data: dict, file: Path, doc: YamlDoc, overrides: Sequence[Override]
) -> list[Finding]:
    """A key beyond the typed ones must be a field of the installed TRL SFTConfig."""
    from vlmctl.config.sft_fields import sft_config_fields, sft_type_problem

    typed = set(TrainConfig.model_fields)
    extra = [k for k in data if k not in typed]
    if not extra:
        return []
    sft = sft_config_fields()
    out = []
    for key in extra:
        if key in sft:
            expected = sft_type_problem(key, data[key])
            if expected:
                # SFTConfig would raise a TypeError after launch; say it here, at the key.
                where, line, col = _locate(file, doc, overrides, "train", (key,))
                out.append(
                    Finding(
                        "error",
                        f"{key}: expected {expected}, got {show_value(data[key])}",
                        hint=f"the installed TRL SFTConfig declares {key} as {expected}",
                        file=where,
                        line=line,
                        col=col,
                        key=key,
                        code="invalid-value",
                    )
                )
            continue
        path = (key,)
        where, line, col = _locate(file, doc, overrides, "train", path)
        message, hint, code = unknown_key(key, sorted(typed), "train", True, sorted(sft))
        prefixed = [ov for ov in overrides if ov.file_key == "train" and ov.path[0] == key]
        if prefixed and len(prefixed[0].path) > 1:
            close = did_you_mean(key, list(FILES))
            prefixes = "file prefixes: model., collator., train., peft. (none means train.)"
            hint = (
                f"did you mean --set {close}.{dotted(prefixed[0].path[1:])}=...? ({prefixes})"
                if close
                else f"{key!r} is neither a file prefix nor a train key; {prefixes}"
            )
        if hint is None:
            hint = "not a vlmctl key nor a field of the installed TRL SFTConfig"
            if importlib.util.find_spec("trl") is None:
                from vlmctl.config.snapshot import snapshot_version

                hint = (
                    "not a vlmctl key nor a field of SFTConfig in TRL "
                    f"{snapshot_version('trl')} (vlmctl's snapshot; TRL is not installed here)"
                )
        out.append(
            Finding("error", message, hint=hint, file=where, line=line, col=col, key=key, code=code)
        )
    return out


def _apply_override(data: dict, ov: Override) -> str | None:
    """Set `ov.path` in `data`; returns a problem text when the path cannot exist."""
    node: Any = data
    for i, part in enumerate(ov.path[:-1]):
        nxt = ov.path[i + 1]
        if isinstance(part, int):
            if not isinstance(node, list) or part >= len(node):
                return f"{dotted(ov.path[: i + 1])}: no list item {part}"
            node = node[part]
            continue
        if not isinstance(node, dict):
            return f"{dotted(ov.path[:i])} is not a mapping"
        if node.get(part) is None:
            node[part] = [] if isinstance(nxt, int) else {}
        node = node[part]
    last = ov.path[-1]
    if isinstance(last, int):
        if not isinstance(node, list) or last > len(node):
            return f"{dotted(ov.path)}: no list item {last}"
        if last == len(node):
            node.append(ov.value)
        else:
            node[last] = ov.value
        return None
    if not isinstance(node, dict):
        return f"{dotted(ov.path[:-1])} is not a mapping"
    node[last] = ov.value
    return None


def _without_bad_keys(
    cls: type[BaseModel], data: dict, exc: ValidationError, rounds: int = 3
) -> BaseModel | None:
    """The file validated with its invalid keys dropped (defaults in their place), or None.

    Lets the cross-field rules check the rest of a file that has a type error in one key.
    """
    data = copy.deepcopy(data)
    for _ in range(rounds):
        for err in exc.errors(include_url=False):
            path = clean_path(tuple(err["loc"]), data)
            while path and isinstance(path[-1], int):
                path = path[:-1]
            node: Any = data
            for part in path[:-1]:
                node = node[part] if isinstance(node, (dict, list)) else None
            if isinstance(node, dict) and path:
                node.pop(path[-1], None)
        try:
            return cls.model_validate(data)
        except ValidationError as again:
            exc = again
    return None


def collect_config_set(
    directory: str | Path, overrides: Iterable[str | Override] = ()
) -> tuple[ConfigSet | None, list[Finding]]:
    """Read, override, validate and cross-check a folder. Returns (set or None, ALL findings).

    Never raises for a bad config (that is `load_config_set`'s job); `UsageError` for a
    malformed `--set`.
    """
    from vlmctl.config.rules import check_config_set

    directory = Path(directory)
    ovs = [o if isinstance(o, Override) else parse_override(o) for o in overrides]
    files = {key: directory / name for key, name in FILES.items()}
    findings: list[Finding] = []
    if not directory.is_dir():
        return None, [
            Finding(
                "error",
                "config folder not found" if not directory.exists() else "not a folder",
                hint=f"run `vlmctl init {directory}`",
                file=str(directory),
                code="missing-dir",
            )
        ]
    docs: dict[str, YamlDoc] = {}
    models: dict[str, BaseModel] = {}
    partial: dict[str, BaseModel] = {}  # invalid files with their bad keys dropped
    for key, path in files.items():
        doc, problems = read_yaml(path)
        findings += problems
        if doc is None:
            continue
        docs[key] = doc
        data = doc.data
        for ov in ovs:
            if ov.file_key == key:
                problem = _apply_override(data, ov)
                if problem:
                    findings.append(
                        Finding(
                            "error",
                            f"cannot apply: {problem}",
                            hint=f"check the key path against `vlmctl schema --file {key}`",
                            file=f"--set {shown_override(ov.text)}",
                            code="override-path",
                        )
                    )
        if key == "collator":
            findings += _column_key_findings(data, path, doc, ovs)
        if key == "train":
            findings += _train_key_findings(data, path, doc, ovs)
        cls = MODELS[key]
        try:
            models[key] = cls.model_validate(data)
        except ValidationError as exc:
            findings += _validation_findings(exc, cls, data, key, path, doc, ovs)
            repaired = _without_bad_keys(cls, data, exc)
            if repaired is not None:
                partial[key] = repaired
    complete = len(models) == len(FILES)
    # Files that failed validation get their defaults so that the rules of the others still run.
    parts = {key: models.get(key) or partial.get(key) or MODELS[key]() for key in FILES}
    cs = ConfigSet(dir=directory, files=files, docs=docs, overrides=ovs, **parts)  # type: ignore[arg-type]
    findings += check_config_set(cs, valid=set(models) | set(partial))
    cs.findings = [f for f in findings if f.severity != "error"]
    if not complete or any(f.severity == "error" for f in findings):
        return None, findings
    return cs, findings


def load_config_set(directory: str | Path, overrides: Iterable[str | Override] = ()) -> ConfigSet:
    """The validated config set of a folder, or ConfigError carrying every error found.

    Warnings and notes stay on `ConfigSet.findings` for the caller to show.
    """
    cs, findings = collect_config_set(directory, overrides)
    if cs is None:
        raise ConfigError([f for f in findings if f.severity == "error"])
    return cs


def file_digests(directory: Path | str) -> dict[str, str]:
    """sha256 of each of the set's four files, by file name ("missing" when absent).

    Why: `vlmctl train` checks the set, then each rank parses it again when it starts (after
    the pre-flight, on every machine); comparing these tells a rank that it would train a set
    edited in between instead of the one that was checked.
    """
    out: dict[str, str] = {}
    for name in FILES.values():
        try:
            out[name] = hashlib.sha256((Path(directory) / name).read_bytes()).hexdigest()
        except OSError:
            out[name] = "missing"
    return out


def check_unchanged(directory: Path | str, expected: str) -> None:
    """Raise ConfigError when the set's files differ from `expected` (`file_digests` as JSON)."""
    was = json.loads(expected)
    now = file_digests(directory)
    changed = [name for name in FILES.values() if was.get(name) != now.get(name)]
    if changed:
        raise ConfigError(
            Finding(
                "error",
                f"{', '.join(changed)} changed after `vlmctl train` checked the config set; "
                "the run would train a set nobody checked",
                file=str(Path(directory) / changed[0]),
                hint="edit the configs before starting a run, then start it again",
                code="config-changed",
            )
        )
