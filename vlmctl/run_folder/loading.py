"""Loading the base, the adapter model, the merged model and the processor (transformers/PEFT
imported inside the functions)."""

from __future__ import annotations

from pathlib import Path

from vlmctl.errors import Finding, VlmctlError
from vlmctl.run_folder.adapter import AdapterRun


def torch_dtype(name: str):
    import torch

    return {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}[name]


def resolve_model_class(plan: AdapterRun, config=None):
    """The class training used (manifest), else the Auto class that resolves the config."""
    import transformers

    if plan.model_class and not plan.trust_remote_code:
        cls = getattr(transformers, plan.model_class, None)
        if cls is not None:
            return cls
    cfg = config if config is not None else load_config(plan)
    auto_map = getattr(cfg, "auto_map", None) or {}
    if "AutoModelForImageTextToText" not in auto_map and "AutoModelForCausalLM" in auto_map:
        return transformers.AutoModelForCausalLM
    return transformers.AutoModelForImageTextToText


def load_config(plan: AdapterRun):
    from transformers import AutoConfig

    return AutoConfig.from_pretrained(str(plan.base_dir), trust_remote_code=plan.trust_remote_code)


def _load(plan: AdapterRun, folder: Path):
    """`from_pretrained` of the resolved class; remote code with vlmctl's compatibility steps
    for 4.x-era modeling code (`vlmctl.models.remote_compat`)."""
    cls = resolve_model_class(plan)
    if plan.trust_remote_code:
        from vlmctl.models.remote_compat import load_remote_model

        return load_remote_model(cls, folder, dtype=torch_dtype(plan.dtype))
    return cls.from_pretrained(
        str(folder), dtype=torch_dtype(plan.dtype), trust_remote_code=plan.trust_remote_code
    )


def load_base(plan: AdapterRun):
    """The base model in full precision (never 4/8-bit), in the output dtype."""
    return _load(plan, plan.base_dir)


def load_adapter_model(plan: AdapterRun, base_model):
    """The base with the adapter attached (unmerged): the reference the merge is verified on."""
    from peft import PeftModel

    try:
        model = PeftModel.from_pretrained(base_model, str(plan.adapter_dir), is_trainable=False)
    except (ValueError, RuntimeError, KeyError) as exc:
        raise VlmctlError(
            Finding(
                "error",
                f"adapter does not fit base {plan.base}: {str(exc).splitlines()[0][:300]}",
                hint="pass --base with the model the adapter was trained on",
            )
        ) from None
    return model.eval()


def reload_merged(plan: AdapterRun, folder: Path):
    """The written merged folder, loaded like the base (to verify it)."""
    return _load(plan, folder).eval()
