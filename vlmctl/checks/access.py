"""What the dataset checks need before any row, in findings: how the model resolves (the
summary's `model` section) and the dataset's file rows (an unreachable hub dataset is a
warning). The model site, processor and private cache come from `vlmctl.runtime`."""

from __future__ import annotations

from typing import Any

from vlmctl.errors import ConfigError, DataError, Finding


def model_section(cs: Any, findings: list[Finding]) -> tuple[dict, Any]:
    from vlmctl.models.resolve import resolve_model

    try:
        res = resolve_model(cs.model)
    except ConfigError as exc:  # also a config-level finding; say why the processor is skipped
        return {"resolved": False, "reason": exc.findings[0].message}, None
    section = {
        "resolved": True,
        "model_id": res.model_id,
        "model_class": res.model_class,
        "processor_class": res.processor_class,
        "import_path": res.import_path,
        "source": res.source,
        "reason": res.reason,
        "remote_code": res.source == "remote_code" or res.trust_remote_code,
        "processor_loaded": False,
    }
    if res.import_path != "transformers":
        findings.append(
            cs.finding(
                "info",
                "model",
                ("model_classes", res.model_id, "import_path"),
                f"{res.import_path} is not imported by validate (importing runs its code): "
                "token lengths are measured with AutoProcessor",
                code="import-not-run",
            )
        )
    # The config checks already say how the model resolves; remote code is worth a line here
    # because the processor below runs the checkpoint's code.
    if res.source == "remote_code":
        findings.append(
            cs.finding(
                "info",
                "model",
                "model_name_or_path",
                f"remote code in use: {res.model_id} runs its own Python code (trust_remote_code)",
                code="remote-code",
            )
        )
    return section, res


def load_data(cs: Any, findings: list[Finding]) -> tuple[Any | None, str | None]:
    """(LoadedData with eval_size ignored, source kind) or (None, kind) with a finding."""
    from vlmctl.data.sources import resolve_source
    from vlmctl.runtime import file_rows
    from vlmctl.runtime import load_data as load_splits_of

    kind = None
    try:
        kind, _ = resolve_source(file_rows(cs.collator), cs.dir)
        return load_splits_of(cs, whole_file=True), kind
    except DataError as exc:
        for f in exc.findings:
            if kind == "hub" and ("offline" in f.message or "unreachable" in f.message):
                f = Finding(
                    "warning",
                    f"dataset not reachable: {f.message}; row checks skipped",
                    hint=f.hint,
                    key="dataset.path",
                    code="dataset-unreachable",
                )
            elif f.file is None and f.key:
                file, line, col = cs.location("collator", f.key)
                f.file, f.line, f.col = file, line, col
            findings.append(f)
        return None, kind
