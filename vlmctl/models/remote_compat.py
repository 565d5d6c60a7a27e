"""Small compatibility steps for remote-code models written for transformers 4.x.

Why: vlmctl runs on transformers 5.x, but a remote-code checkpoint runs the modeling code its
authors released, often written for 4.x. Three things stop InternVL2's released code
(`InternVLChatModel`, InternLM2 LLM) from training, merging and generating, and each is fixed
here (the checkpoint's files are never edited):

- a model class whose `__init__` never calls `self.post_init()` (InternVLChatModel): 5.x's
  `from_pretrained` reads `model.all_tied_weights_keys`, which `post_init` sets, and raised
  `AttributeError: 'InternVLChatModel' object has no attribute 'all_tied_weights_keys'`.
  `ensure_post_init` makes that remote class call `post_init` at the end of its `__init__`
  when the instance has not been through it (the class object of that checkpoint's dynamic
  module only, marked so it is wrapped once; a class that calls `post_init` is untouched).
  This one must be done on the class: the failure happens inside `from_pretrained`, before any
  instance is returned. The steps below are on the loaded INSTANCE;
- `_tied_weights_keys` as a list (the 4.x form, e.g. InternLM2's `['output.weight']`): 5.x reads
  a dict `{target: source}` (`modeling_utils._get_tied_weight_keys`), so `save_pretrained`
  raised `AttributeError: 'list' object has no attribute 'keys'`. `fix_legacy_tied_keys` gives
  the instance the dict form: each key -> the name of the module's input-embedding weight when
  it has one, else the key is dropped. A module that already uses the dict form is untouched.
  (A list-form class whose config ties the embeddings fails inside transformers' own
  `post_init`, before any instance exists; InternVL2 does not tie them.)
- `InternVLChatModel.img_context_token_id` is None after loading (InternVL's `chat()` and its
  fine-tune scripts set it from the tokenizer's `<IMG_CONTEXT>` id); forward and generate need
  it: `prepare_remote_model` sets it from the checkpoint folder's tokenizer files.
- `InternVLChatModel.generate` passes every extra input on to the LLM's `generate`, which
  refuses `image_flags` (one per tile, what `forward` takes): the instance's `generate` drops
  the tiles whose flag is 0 and the key, as InternVL's own forward does (and see
  `_generate_without_flags`); the LLM (InternLM2ForCausalLM) has no `generate` under 5.x and
  returns a legacy tuple cache that 5.x's generate drops: `add_generation_mixin`.

- non-persistent buffers computed in `__init__` (the 4.x rotary embedding: `inv_freq`,
  `cos_cached`, `sin_cached`): 5.x builds the model on the meta device and gives buffers that
  are not in the checkpoint uninitialised memory, which native models refill in
  `_init_weights` and 4.x remote code does not (InternLM2's logits were all NaN).
  `rebuild_rotary_buffers` recomputes them the way the module's own `__init__` does, for a
  remote module with `dim`, `base`, an `inv_freq` buffer and `_set_cos_sin_cache`.

A remote-code file that imports a module which is not installed (InternVL2 needs `einops` and
`timm`) makes transformers raise ImportError; `missing_modules_error` turns it into one line
that says what to pip install.
"""

from __future__ import annotations

import functools
import json
import re
from pathlib import Path
from typing import Any

from vlmctl.errors import Finding, VlmctlError

IMG_CONTEXT = "<IMG_CONTEXT>"
_MISSING = re.compile(r"requires the following packages that were not found in your environment:"
                      r"\s*([^.]+)\.")  # fmt: skip


def _input_embedding_name(module: Any) -> str | None:
    """The name (relative to `module`) of its input-embedding weight, if it has one."""
    getter = getattr(module, "get_input_embeddings", None)
    try:
        emb = getter() if callable(getter) else None
    except (NotImplementedError, AttributeError):
        return None
    weight = getattr(emb, "weight", None)
    if weight is None:
        return None
    for name, param in module.named_parameters(remove_duplicate=False):
        if param is weight:
            return name
    return None


def fix_legacy_tied_keys(model: Any) -> list[str]:
    """Give every submodule whose `_tied_weights_keys` is a list/tuple the 5.x dict form.

    Set on the instance only (the class, shared with other loads, is not changed); returns the
    names of the modules changed (for tests and logs)."""
    changed = []
    for name, module in model.named_modules():
        keys = getattr(module, "_tied_weights_keys", None)
        if not isinstance(keys, (list, tuple)):
            continue
        source = _input_embedding_name(module)
        module._tied_weights_keys = {k: source for k in keys if source and k != source}
        changed.append(name)
    return changed


def img_context_token_id(folder: str | Path) -> int | None:
    """The `<IMG_CONTEXT>` id from a checkpoint folder's tokenizer files (None when absent)."""
    folder = Path(folder)
    try:
        added = json.loads((folder / "added_tokens.json").read_text(encoding="utf-8"))
        if isinstance(added.get(IMG_CONTEXT), int):
            return added[IMG_CONTEXT]
    except (OSError, ValueError, AttributeError):
        pass
    try:
        cfg = json.loads((folder / "tokenizer_config.json").read_text(encoding="utf-8"))
        for idx, tok in (cfg.get("added_tokens_decoder") or {}).items():
            if isinstance(tok, dict) and tok.get("content") == IMG_CONTEXT:
                return int(idx)
    except (OSError, ValueError, AttributeError):
        pass
    return None


def _generate_without_flags(generate):
    """InternVLChatModel.generate as callers of any HF model use it: takes (and applies)
    `image_flags` like forward does, drops `use_cache` (the remote code always passes
    use_cache=True itself: a second one was a TypeError), and returns prompt + new tokens
    (it generates from inputs_embeds, which returns the new tokens only)."""

    def wrapped(*args: Any, **kwargs: Any):
        import torch

        flags = kwargs.pop("image_flags", None)
        kwargs.pop("use_cache", None)
        pixels = kwargs.get("pixel_values")
        if flags is not None and pixels is not None:
            keep = flags.reshape(-1) == 1
            if not bool(keep.all()):
                kwargs["pixel_values"] = pixels[keep]
        out = generate(*args, **kwargs)
        prompt = kwargs.get("input_ids")
        if torch.is_tensor(out) and torch.is_tensor(prompt) and out.shape[0] == prompt.shape[0]:
            out = torch.cat([prompt.to(out.device), out], dim=1)
        return out

    return wrapped


def ensure_post_init(cls: type) -> type:
    """Make a remote class whose `__init__` skips `post_init` run it (see the module doc)."""
    from transformers import PreTrainedModel

    if cls.__dict__.get("_vlmctl_post_init") or not issubclass(cls, PreTrainedModel):
        return cls
    original = cls.__init__

    @functools.wraps(original)
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        original(self, *args, **kwargs)
        # (transformers may load a copy of the class with GenerationMixin added: same __init__)
        if "all_tied_weights_keys" not in self.__dict__:
            self.post_init()

    cls.__init__ = __init__
    cls._vlmctl_post_init = True
    return cls


def remote_class(auto_cls: Any, path: str | Path, revision: str | None = None) -> type | None:
    """The remote class `auto_cls` resolves to for the checkpoint at `path`, prepared."""
    from transformers import AutoConfig
    from transformers.dynamic_module_utils import get_class_from_dynamic_module

    config = AutoConfig.from_pretrained(str(path), trust_remote_code=True, revision=revision)
    ref = (getattr(config, "auto_map", None) or {}).get(auto_cls.__name__)
    if isinstance(ref, (list, tuple)):
        ref = ref[0]
    if not ref:
        return None
    return ensure_post_init(get_class_from_dynamic_module(ref, str(path), revision=revision))


def load_remote_model(auto_cls: Any, path: str | Path, **kwargs: Any) -> Any:
    """`auto_cls.from_pretrained(path, trust_remote_code=True, ...)` with the steps above;
    a remote file importing a module that is not installed gives one line (VlmctlError)."""
    kwargs["trust_remote_code"] = True
    try:
        remote_class(auto_cls, path, kwargs.get("revision"))
        model = auto_cls.from_pretrained(str(path), **kwargs)
    except ImportError as exc:
        err = missing_modules_error(exc, str(path))
        if err is None:
            raise
        raise err from None
    return prepare_remote_model(model, path)


def rebuild_rotary_buffers(model: Any) -> list[str]:
    """Recompute the 4.x rotary buffers of remote modules (see the module doc); their names."""
    import torch

    done = []
    for name, module in model.named_modules():
        inv = module._buffers.get("inv_freq") if hasattr(module, "_buffers") else None
        if (
            inv is None
            or not type(module).__module__.startswith("transformers_modules")
            or not callable(getattr(module, "_set_cos_sin_cache", None))
            or not isinstance(getattr(module, "dim", None), int)
            or getattr(module, "base", None) is None
        ):
            continue
        device = inv.device
        cached = module._buffers.get("cos_cached")
        dtype = cached.dtype if cached is not None else torch.get_default_dtype()
        steps = torch.arange(0, module.dim, 2, device=device).float() / module.dim
        module.register_buffer("inv_freq", 1.0 / (module.base**steps), persistent=False)
        seq_len = getattr(module, "max_seq_len_cached", None) or module.max_position_embeddings
        module._set_cos_sin_cache(seq_len=seq_len, device=device, dtype=dtype)
        done.append(name)
    return done


def _with_generation(cls: type, mixin: type) -> type:
    """`cls` + GenerationMixin, passing a legacy tuple cache back to the next step (5.x's
    generate only carries `outputs.cache`: without this the 4.x code re-read the whole
    prompt at every step and failed on the second token), and slicing the `position_ids`
    5.x passes in full to the step's tokens."""

    def _update_model_kwargs_for_generation(self, outputs, model_kwargs, *args, **kwargs):
        model_kwargs = super(new, self)._update_model_kwargs_for_generation(
            outputs, model_kwargs, *args, **kwargs
        )
        past = getattr(outputs, "past_key_values", None)
        if isinstance(past, (tuple, list)):
            model_kwargs["past_key_values"] = past
        return model_kwargs

    def prepare_inputs_for_generation(
        self, input_ids, past_key_values=None, attention_mask=None, inputs_embeds=None, **kwargs
    ):
        # 5.x keeps the full `position_ids` in the generate kwargs (and drops an all-ones
        # mask); 4.x code sliced them only when it derived them from the mask: the last
        # positions, one per input token.
        inputs = super(new, self).prepare_inputs_for_generation(
            input_ids,
            past_key_values=past_key_values,
            attention_mask=attention_mask,
            inputs_embeds=inputs_embeds,
            **kwargs,
        )
        pos = inputs.get("position_ids")
        step = inputs.get("input_ids")
        step = step if step is not None else inputs.get("inputs_embeds")
        if pos is not None and step is not None and pos.shape[-1] > step.shape[1]:
            inputs["position_ids"] = pos[..., -step.shape[1] :]
        return inputs

    body = {"__module__": cls.__module__}
    body["_update_model_kwargs_for_generation"] = _update_model_kwargs_for_generation
    body["prepare_inputs_for_generation"] = prepare_inputs_for_generation
    new = type(cls.__name__, (cls, mixin), body)
    return new


def add_generation_mixin(model: Any) -> list[str]:
    """Give remote submodules that define `prepare_inputs_for_generation` but no `generate`
    (5.x's PreTrainedModel no longer inherits GenerationMixin) a `generate`, as transformers'
    own `add_generation_mixin_to_remote_model` does for the top-level class only."""
    from transformers import GenerationConfig, GenerationMixin, PreTrainedModel

    done = []
    for name, module in model.named_modules():
        cls = type(module)
        if (
            not name
            or not isinstance(module, PreTrainedModel)
            or isinstance(module, GenerationMixin)
            or "prepare_inputs_for_generation" not in dir(cls)
        ):
            continue
        module.__class__ = _with_generation(cls, GenerationMixin)
        if getattr(module, "generation_config", None) is None:
            module.generation_config = GenerationConfig.from_model_config(module.config)
        done.append(name)
    return done


def prepare_remote_model(model: Any, folder: str | Path | None = None) -> Any:
    """The compatibility steps above, on a freshly loaded remote-code model (returned)."""
    fix_legacy_tied_keys(model)
    rebuild_rotary_buffers(model)
    if type(model).__name__ == "InternVLChatModel" and hasattr(model, "img_context_token_id"):
        if model.img_context_token_id is None and folder is not None:
            model.img_context_token_id = img_context_token_id(folder)
        add_generation_mixin(model)
        if not getattr(model.generate, "_vlmctl_flags", False):
            model.generate = _generate_without_flags(model.generate)
            model.generate._vlmctl_flags = True
    return model


def missing_modules_error(exc: BaseException, where: str) -> VlmctlError | None:
    """One finding for transformers' "requires the following packages" ImportError (or the
    ModuleNotFoundError of remote code imported from transformers' cache), else None."""
    match = _MISSING.search(str(exc))
    if isinstance(exc, ImportError) and match:
        names = [n.strip() for n in match.group(1).split(",") if n.strip()]
    elif isinstance(exc, ModuleNotFoundError) and exc.name:  # the code was already cached
        names = [exc.name.split(".")[0]]
    else:
        return None
    return VlmctlError(
        Finding(
            "error",
            f"the remote code of {where} imports {', '.join(names)}, not installed here",
            hint=f"pip install {' '.join(names)}",
            code="remote-code-imports",
        )
    )
