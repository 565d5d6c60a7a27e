"""Mutation score of the code where a silent bug changes what is trained or written.

Runs mutmut (a maintained mutation tester: `pip install mutmut==3.8.1`) over named functions
only, each with the tests that guard it, in a throw-away copy of the checkout, and prints a
table: mutants, killed, survived, timed out, score per target; then every survivor as a diff.
Not part of the default test run (minutes per target). Run it before resolving an issue that
touches these functions, and record the table in BENCHMARKS.md.

    python scripts/mutation.py                 # every target
    python scripts/mutation.py length judge    # the targets whose name starts with these
    python scripts/mutation.py --list          # the targets and their tests

A target is (file, mutmut name globs, pytest arguments). mutmut names a function
`vlmctl.<module>.x_<func>__mutmut_<n>` and a method `vlmctl.<module>.xǁ<Class>ǁ<meth>__mutmut_<n>`.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Target:
    name: str
    file: str
    globs: tuple[str, ...]
    tests: tuple[str, ...]


TARGETS = (
    Target(
        "length-policy",
        "vlmctl/collate/*.py",  # the pure decision and the collator acting on it
        (
            "vlmctl.collate.length_policy.x_decide__mutmut_*",
            "vlmctl.collate.length_policy.x_decide_for__mutmut_*",
            "vlmctl.collate.collator.xǁVLMCollatorǁ_apply_length_policy__mutmut_*",
            "vlmctl.collate.collator.xǁVLMCollatorǁfits__mutmut_*",
        ),
        (
            "tests/test_length_policy.py",
            "tests/test_length_boundaries.py",
            "tests/test_collate_truncation.py",
        ),
    ),
    Target(
        "validate-length",
        "vlmctl/checks/rows.py",
        (
            "vlmctl.checks.rows.x__apply_policy__mutmut_*",
            "vlmctl.checks.rows.x__too_long__mutmut_*",
        ),
        ("tests/test_length_boundaries.py", "-k", "validate"),
    ),
    Target(
        "label-masking",
        "vlmctl/collate/labels.py",
        (
            "vlmctl.collate.labels.x_labels_np__mutmut_*",
            "vlmctl.collate.labels.x_kinds_np__mutmut_*",
        ),
        ("tests/test_collate_masking.py",),
    ),
    Target(
        "template-spans",
        "vlmctl/collate/*.py",  # render.py (the spans) and labels.py (their shift by media)
        (
            "vlmctl.collate.render.xǁChatRendererǁassistant_char_spans_many__mutmut_*",
            "vlmctl.collate.render.xǁChatRendererǁ_marked_spans__mutmut_*",
            "vlmctl.collate.render.xǁChatRendererǁ_prefix_renders__mutmut_*",
            "vlmctl.collate.render.xǁChatRendererǁ_spans_from_prefixes__mutmut_*",
            "vlmctl.collate.render.xǁChatRendererǁ_leading_answer_start__mutmut_*",
            "vlmctl.collate.render.x_first_text__mutmut_*",
            "vlmctl.collate.labels.x__expanded_spans__mutmut_*",
        ),
        ("tests/test_collate_masking.py", "tests/test_chat.py", "tests/test_template_spans.py"),
    ),
    Target(
        "merge-verify",
        "vlmctl/merge/verify.py",
        ("vlmctl.merge.verify.x_judge__mutmut_*", "vlmctl.merge.verify.x_compare__mutmut_*"),
        # The end-to-end wrong-merge tests (30 s each) stay in the default run; here the figures
        # and the judgement are tested directly, so a target takes minutes, not an hour.
        ("tests/test_merge_verify_judgement.py", "-k", "not wrong_merge"),
    ),
    Target(
        "merge-atomic",
        "vlmctl/merge/output.py",
        (
            "vlmctl.merge.output.x_atomic_folder__mutmut_*",
            "vlmctl.merge.output.x__sweep_stale__mutmut_*",
        ),
        # mutmut 3 does not mutate a decorated function: `atomic_folder` (a contextmanager) gets
        # no mutant here; docs/MUTATION.md lists the hand-made ones its tests kill.
        # The end-to-end ones in test_merge.py (a real merge, a SIGKILLed one: minutes, and the
        # kill's 120-s deadline is missed under load) stay in the default run.
        ("tests/test_merge_atomic.py",),
    ),
    Target(
        "yaml-positions",
        "vlmctl/config/yamlio.py",
        ("vlmctl.config.yamlio.x__plain__mutmut_*", "vlmctl.config.yamlio.x__mark__mutmut_*"),
        (
            "tests/test_yaml_list_positions.py",
            "tests/test_config_yamlio.py",
            "tests/test_yamlio_values.py",
        ),
    ),
    Target(
        "manifest-secrets",
        # The credential filter (issue #14 moved it out of training/manifest.py into
        # vlmctl/credentials.py); the two places that apply it are the next target.
        "vlmctl/credentials.py",
        tuple(
            f"vlmctl.credentials.x_{f}__mutmut_*"
            for f in (
                "is_secret_key",
                "is_secret_value",
                "_strip",
                "strip_secrets",
                "is_secret_override",
                "strip_secret_overrides",
            )
        ),
        (
            "tests/test_secrets.py",
            "tests/test_manifest.py",
            "tests/test_train.py::test_secrets_never_reach_the_manifest",
            "-k",
            "not planted",  # a whole training run (minutes): it stays in the default run
        ),
    ),
    Target(
        "manifest-write",
        # configs/ and vlmctl-run.json, written through the filter (vlmctl/run_folder/).
        "vlmctl/run_folder/manifest.py",
        tuple(
            f"vlmctl.run_folder.manifest.x_{f}__mutmut_*"
            for f in ("resolved_configs", "write_manifest")
        ),
        (
            "tests/test_secrets.py",
            "tests/test_manifest.py",
            "tests/test_train.py::test_secrets_never_reach_the_manifest",
            "-k",
            "not planted",
        ),
    ),
    Target(
        "resume-checkpoint",
        "vlmctl/training/parent.py",
        (
            "vlmctl.training.parent.x_*checkpoint*__mutmut_*",
            "vlmctl.training.parent.x_*resume*__mutmut_*",
        ),
        # The SIGTERM-then-resume runs (real training, minutes) stay in the default run.
        (
            "tests/test_resume_choice.py",
            "tests/test_train.py::test_latest_checkpoint_is_the_highest_complete_one",
            "tests/test_train.py::test_resume_and_overwrite_rules",
        ),
    ),
)


# What the tests read beside the package (mutmut runs them inside its `mutants/` copy).
ALSO_COPY = [
    "templates", "examples", "docs", "scripts", "benchmarks", "docker", ".ci", "README.md",
    "BENCHMARKS.md", ".pre-commit-hooks.yaml", ".dockerignore",
]  # fmt: skip


def _copy_checkout(dest: Path) -> None:
    """The tracked files (with uncommitted edits) of this checkout: mutmut writes `mutants/`."""
    files = subprocess.run(
        ["git", "ls-files", "-z"], cwd=REPO, check=True, capture_output=True
    ).stdout.split(b"\0")
    for raw in files:
        if not raw:
            continue
        rel = raw.decode()
        src = REPO / rel
        if src.is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel)


def _write_setup_cfg(dest: Path, target: Target) -> None:
    """mutmut reads its settings from setup.cfg; list values go one per continuation line."""
    tests = [t for t in target.tests if t.startswith("tests/")]
    extra = [t for t in target.tests if not t.startswith("tests/")]
    args = ["-p", "no:warnings", "-p", "no:cacheprovider", *extra]

    def listing(values: list[str]) -> str:
        return "".join(f"\n    {v}" for v in values)

    (dest / "setup.cfg").write_text(
        "[mutmut]\n"
        "source_paths=vlmctl\n"
        f"only_mutate={target.file}\n"
        f"pytest_add_cli_args_test_selection={listing(tests)}\n"
        f"pytest_add_cli_args={listing(args)}\n"
        f"also_copy={listing(ALSO_COPY)}\n"
        # A mutant that loops forever is cut at 5x the tests' measured time (+1 s), not 15x.
        "timeout_multiplier=5.0\n"
    )


def _results(workdir: Path, env: dict) -> dict[str, str]:
    out = subprocess.run(
        [sys.executable, "-m", "mutmut", "results", "--all", "true"],
        cwd=workdir,
        env=env,
        capture_output=True,
        text=True,
    ).stdout
    status = {}
    for line in out.splitlines():
        name, sep, state = line.strip().rpartition(": ")
        if sep:
            status[name] = state
    return status


def _matches(name: str, globs: tuple[str, ...]) -> bool:
    from fnmatch import fnmatchcase

    return any(fnmatchcase(name, g) for g in globs)


def run_target(target: Target, timeout: float, jobs: int = 1) -> dict:
    """Mutate one target in a fresh copy; return its counts and survivors."""
    with tempfile.TemporaryDirectory(prefix=f"vlmctl-mut-{target.name}-") as tmp:
        work = Path(tmp)
        _copy_checkout(work)
        _write_setup_cfg(work, target)
        env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
        env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", WANDB_MODE="offline")
        # mutmut forks each mutant's test run from a process that has already run torch: a
        # child forked while torch's OpenMP pool exists can hang in its first parallel op (seen:
        # every mutant of `compare` hit the wall timeout). One thread each avoids the pool.
        env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false")
        started = time.monotonic()
        try:
            proc = subprocess.run(
                [sys.executable, "-m", "mutmut", "run", "--max-children", str(jobs), *target.globs],
                cwd=work,
                env=env,
                capture_output=True,
                text=True,
                timeout=timeout,
            )
            finished = True
            if proc.returncode != 0:  # a broken run must not read as a score
                print(proc.stdout[-3000:], proc.stderr[-3000:], sep="\n", file=sys.stderr)
                finished = False
        except subprocess.TimeoutExpired:
            finished = False
        status = {n: s for n, s in _results(work, env).items() if _matches(n, target.globs)}
        survivors = sorted(n for n, s in status.items() if s == "survived")
        diffs = {
            n: subprocess.run(
                [sys.executable, "-m", "mutmut", "show", n],
                cwd=work,
                env=env,
                capture_output=True,
                text=True,
            ).stdout
            for n in survivors
        }
    checked = {n: s for n, s in status.items() if s != "not checked"}
    counts = {s: sum(1 for v in checked.values() if v == s) for s in set(checked.values())}
    killed = counts.get("killed", 0) + counts.get("timeout", 0)
    return {
        "target": target.name,
        "mutants": len(status),
        "checked": len(checked),
        "killed": counts.get("killed", 0),
        "timeout": counts.get("timeout", 0),
        "survived": len(survivors),
        "other": len(checked) - killed - len(survivors),
        "score": killed / len(checked) if checked else float("nan"),
        "finished": finished,
        "seconds": round(time.monotonic() - started),
        "survivors": diffs,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("targets", nargs="*", help="target name prefixes (default: all)")
    ap.add_argument("--list", action="store_true", help="list the targets and exit")
    ap.add_argument("--timeout", type=float, default=1800, help="seconds per target")
    ap.add_argument(
        "--jobs", type=int, default=1, help="mutants tested at once (mutmut --max-children)"
    )
    args = ap.parse_args(argv)
    chosen = [t for t in TARGETS if not args.targets or t.name.startswith(tuple(args.targets))]
    if args.list:
        for t in chosen:
            print(f"{t.name:18} {t.file:30} {' '.join(t.tests)}")
        return 0
    try:
        import mutmut  # noqa: F401
    except ImportError:
        print("error: mutmut is not installed (fix: pip install mutmut==3.8.1)", file=sys.stderr)
        return 2
    rows = []
    for t in chosen:
        print(f"== {t.name}: {t.file} ({' '.join(t.tests)})", flush=True)
        rows.append(run_target(t, args.timeout, args.jobs))
        r = rows[-1]
        print(
            f"   {r['killed']} killed, {r['timeout']} timeout, {r['survived']} survived of "
            f"{r['checked']} checked ({r['mutants']} mutants), {r['seconds']} s"
            + ("" if r["finished"] else ", UNFINISHED"),
            flush=True,
        )
        for name, diff in r["survivors"].items():  # now, not only at the end of a long run
            print(f"\n--- survivor {name}\n{diff.strip()}", flush=True)
    print()
    print("| target | mutants | checked | killed | timeout | survived | other | score | s |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        done = "" if r["finished"] else " (unfinished)"
        print(
            f"| {r['target']}{done} | {r['mutants']} | {r['checked']} | {r['killed']} | "
            f"{r['timeout']} | {r['survived']} | {r['other']} | {r['score']:.0%} | {r['seconds']} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
