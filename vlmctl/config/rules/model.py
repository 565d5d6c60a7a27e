"""Cross-field rules of model.yaml: the model to load, remote code, quantization, PEFT bias."""

from __future__ import annotations

from typing import TYPE_CHECKING

from vlmctl.errors import Finding

if TYPE_CHECKING:
    from vlmctl.config.load import ConfigSet


def check_model(cs: ConfigSet) -> list[Finding]:
    """The model to load: set, found, resolvable; remote code and device_map advice."""
    m = cs.model
    out = _loading_advice(cs)
    if m.model_name_or_path and _looks_local(m.model_name_or_path):
        local = cs.resolve_path(m.model_name_or_path)
        if not local.exists():
            out.append(
                cs.finding(
                    "error",
                    "model",
                    "model_name_or_path",
                    f"model folder not found: {local.resolve()}",
                    hint="a local path is relative to the config folder; fix the path, or write "
                    "a hub id as owner/name",
                    code="model-not-found",
                )
            )
            return out
    if m.model_name_or_path:
        out += _resolution(cs)
    return out


def _loading_advice(cs: ConfigSet) -> list[Finding]:
    m = cs.model
    out: list[Finding] = []
    if m.model_name_or_path is None:
        out.append(
            cs.finding(
                "warning",
                "model",
                "model_name_or_path",
                "model_name_or_path is not set: train cannot start",
                hint="set a hub id (e.g. "
                "Qwen/Qwen2-VL-2B-Instruct) or a local folder; or `vlmctl init "
                "--model ID`",
                code="no-model",
            )
        )
    if m.loading_params.trust_remote_code:
        out.append(
            cs.finding(
                "warning",
                "model",
                "loading_params.trust_remote_code",
                "trust_remote_code is on for every model: the checkpoint's own "
                "Python code runs on this machine",
                hint="set it per model (model_classes.<id>.trust_remote_code) only where needed",
                code="remote-code",
            )
        )
    if m.processor_params.trust_remote_code:
        out.append(
            cs.finding(
                "warning",
                "model",
                "processor_params.trust_remote_code",
                "processor trust_remote_code is on for every model",
                hint="set it per model (model_classes.<id>.trust_remote_code)",
                code="remote-code",
            )
        )
    if m.loading_params.device_map == "auto":
        out.append(
            cs.finding(
                "info",
                "model",
                "loading_params.device_map",
                "device_map: auto "
                "spreads one process's model over its GPUs; multi-process "
                "training (accelerate, DDP) overrides it with one device per "
                "process",
                code="device-map",
            )
        )
    return out


def _resolution(cs: ConfigSet) -> list[Finding]:
    """How resolve_model places the model (a note), or its errors at the key to change."""
    from vlmctl.config.class_checks import class_problems
    from vlmctl.errors import ConfigError
    from vlmctl.models.resolve import resolve_model

    wrong_class = class_problems(cs)
    if wrong_class:
        # resolve_model would add advice (trust_remote_code) that does not apply.
        return wrong_class
    m = cs.model
    try:
        res = resolve_model(m)
    except ConfigError as exc:
        return [
            cs.finding(
                "error",
                "model",
                f.extra.get("path") or ("model_classes", m.model_name_or_path),
                f.message,
                hint=f.hint,
                code=f.code or "resolve",
            )
            for f in exc.findings
        ]
    return [cs.finding("info", "model", "model_name_or_path", res.reason, code="resolution")]


def _looks_local(name: str) -> bool:
    """A path, not a hub id (`owner/name`): starts with . / ~, has a backslash or 2+ slashes."""
    return name.startswith((".", "/", "~")) or "\\" in name or name.count("/") > 1


def check_quantized_full(cs: ConfigSet) -> list[Finding]:
    """A quantized model trains through an adapter only."""
    out: list[Finding] = []
    m = cs.model
    if m.quantization.enabled and not cs.peft.enabled:
        out.append(
            cs.finding(
                "error",
                "model",
                "quantization",
                "a quantized model cannot be fully fine-tuned (peft.enabled is false)",
                hint="set peft.enabled: true (QLoRA) or turn quantization off",
                code="quant-full",
            )
        )
    return out


def check_peft(cs: ConfigSet) -> list[Finding]:
    """bias: all would train the vision biases that exclude_vision_modules keeps frozen."""
    p = cs.peft
    if p.enabled and p.bias == "all" and p.exclude_vision_modules:
        return [
            cs.finding(
                "error",
                "peft",
                "bias",
                "bias: all trains and saves every bias of the model, the vision tower's and "
                "the projector's too, although exclude_vision_modules: true keeps them frozen",
                hint="use bias: lora_only (biases of the adapted language-model layers) or "
                "none; or set exclude_vision_modules: false",
                code="bias-all-vision",
            )
        ]
    return []
