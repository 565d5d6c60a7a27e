"""vlmctl.models.remote_compat: 4.x-era remote modeling code under transformers 5.x, on small
modules (the InternVL2 kit runs the real code: tests/test_realkit_train_merge.py)."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from transformers import GenerationMixin, LlamaConfig, PretrainedConfig, PreTrainedModel

from vlmctl.errors import VlmctlError
from vlmctl.models import remote_compat as rc


class _Cfg(PretrainedConfig):
    model_type = "vlmctl_tiny_legacy"

    def __init__(self, vocab_size=11, hidden_size=4, tie_word_embeddings=False, **kw):
        self.vocab_size, self.hidden_size = vocab_size, hidden_size
        super().__init__(tie_word_embeddings=tie_word_embeddings, **kw)


class _LegacyLM(PreTrainedModel):
    """A 4.x-style LM: list-form `_tied_weights_keys` (what InternLM2ForCausalLM has)."""

    config_class = _Cfg
    _tied_weights_keys = ["output.weight"]

    def __init__(self, config):
        super().__init__(config)
        self.tok_embeddings = nn.Embedding(config.vocab_size, config.hidden_size)
        self.output = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.post_init()

    def get_input_embeddings(self):
        return self.tok_embeddings

    def forward(self, input_ids=None, **_):
        return self.output(self.tok_embeddings(input_ids))


def test_list_form_tied_keys_get_the_dict_form_and_save_works(tmp_path):
    model = _LegacyLM(_Cfg())
    with pytest.raises(AttributeError, match="'list' object has no attribute 'keys'"):
        model.save_pretrained(tmp_path / "before")  # what transformers 5 does without the step
    assert rc.fix_legacy_tied_keys(model) == [""]
    assert model._tied_weights_keys == {"output.weight": "tok_embeddings.weight"}
    assert type(model)._tied_weights_keys == ["output.weight"]  # the class is not changed
    model.save_pretrained(tmp_path / "after")
    assert (tmp_path / "after" / "model.safetensors").is_file()


def test_without_an_input_embedding_the_list_keys_are_dropped():
    class NoEmb(nn.Module):
        _tied_weights_keys = ("head.weight",)

    module = NoEmb()
    rc.fix_legacy_tied_keys(module)
    assert module._tied_weights_keys == {}


def test_dict_form_models_are_never_touched():
    from transformers import LlamaForCausalLM

    cfg = LlamaConfig(vocab_size=16, hidden_size=8, intermediate_size=8, num_hidden_layers=1,
                      num_attention_heads=2, num_key_value_heads=1)  # fmt: skip
    model = LlamaForCausalLM(cfg)
    before = model._tied_weights_keys
    assert rc.fix_legacy_tied_keys(model) == []
    assert model._tied_weights_keys is before and "_tied_weights_keys" not in model.__dict__


class _LegacyRotary(nn.Module):
    """The 4.x rotary embedding (InternLM2RotaryEmbedding's layout)."""

    __module__ = "transformers_modules.tiny.modeling_tiny"

    def __init__(self, dim=8, max_position_embeddings=16, base=10000):
        super().__init__()
        self.dim, self.max_position_embeddings, self.base = dim, max_position_embeddings, base
        inv = 1.0 / (base ** (torch.arange(0, dim, 2).float() / dim))
        self.register_buffer("inv_freq", inv, persistent=False)
        self._set_cos_sin_cache(max_position_embeddings, inv.device, torch.float32)

    def _set_cos_sin_cache(self, seq_len, device, dtype):
        self.max_seq_len_cached = seq_len
        t = torch.arange(seq_len, device=device).to(self.inv_freq.dtype)
        emb = torch.cat([torch.outer(t, self.inv_freq)] * 2, dim=-1)
        self.register_buffer("cos_cached", emb.cos().to(dtype), persistent=False)
        self.register_buffer("sin_cached", emb.sin().to(dtype), persistent=False)


def test_rotary_buffers_left_uninitialised_by_a_meta_load_are_recomputed():
    good = _LegacyRotary()
    broken = _LegacyRotary()
    for name in ("inv_freq", "cos_cached", "sin_cached"):  # what 5.x's meta-device load leaves
        broken._buffers[name] = torch.full_like(broken._buffers[name], float("nan"))
    holder = nn.Sequential(broken)
    assert rc.rebuild_rotary_buffers(holder) == ["0"]
    for name in ("inv_freq", "cos_cached", "sin_cached"):
        assert torch.equal(broken._buffers[name], good._buffers[name]), name


def test_a_class_that_skips_post_init_gets_it(tmp_path):
    class SkipsPostInit(PreTrainedModel):  # InternVLChatModel's __init__ never calls it
        config_class = _Cfg

        def __init__(self, config):
            super().__init__(config)
            self.lm = _LegacyLM(config)

    assert not hasattr(SkipsPostInit(_Cfg()), "all_tied_weights_keys")
    rc.ensure_post_init(SkipsPostInit)
    model = SkipsPostInit(_Cfg())
    assert model.all_tied_weights_keys == {}
    with pytest.raises(AttributeError):  # the LM's list-form keys
        model.save_pretrained(tmp_path)
    rc.fix_legacy_tied_keys(model)
    model.save_pretrained(tmp_path)
    loaded = SkipsPostInit.from_pretrained(tmp_path)  # 5.x reads all_tied_weights_keys here
    assert torch.equal(loaded.lm.output.weight, model.lm.output.weight)


def test_a_submodule_with_prepare_inputs_gets_generate():
    class WithPrepare(_LegacyLM):
        def prepare_inputs_for_generation(self, input_ids, **kwargs):
            return {"input_ids": input_ids}

    holder = nn.Module()
    holder.lm = WithPrepare(_Cfg())
    assert not hasattr(holder.lm, "generate")
    assert rc.add_generation_mixin(holder) == ["lm"]
    assert isinstance(holder.lm, GenerationMixin) and type(holder.lm).__name__ == "WithPrepare"
    assert holder.lm.generation_config is not None
    assert rc.add_generation_mixin(holder) == []  # once


def test_missing_remote_imports_are_one_line():
    exc = ImportError(
        "This modeling file requires the following packages that were not found in your "
        "environment: einops, timm. Run `pip install einops timm`"
    )
    err = rc.missing_modules_error(exc, "/models/InternVL2-2B")
    assert isinstance(err, VlmctlError)
    finding = err.findings[0]
    assert "einops, timm" in finding.message and "/models/InternVL2-2B" in finding.message
    assert finding.hint == "pip install einops timm"
    assert rc.missing_modules_error(ImportError("other"), "x") is None


def test_img_context_token_id_from_the_tokenizer_files(tmp_path):
    (tmp_path / "tokenizer_config.json").write_text(
        '{"added_tokens_decoder": {"92546": {"content": "<IMG_CONTEXT>"}}}'
    )
    assert rc.img_context_token_id(tmp_path) == 92546
    (tmp_path / "added_tokens.json").write_text('{"<IMG_CONTEXT>": 7}')
    assert rc.img_context_token_id(tmp_path) == 7
    assert rc.img_context_token_id(tmp_path / "absent") is None


def test_loading_remote_code_whose_import_is_missing_says_what_to_install(tmp_path):
    from transformers import AutoModelForCausalLM

    (tmp_path / "configuration_x.py").write_text(
        "from transformers import PretrainedConfig\n\n"
        "class XConfig(PretrainedConfig):\n    model_type = 'vlmctl_x'\n"
    )
    (tmp_path / "modeling_x.py").write_text(
        "import vlmctl_no_such_module_xyz\nfrom transformers import PreTrainedModel\n"
        "from .configuration_x import XConfig\n\n"
        "class XModel(PreTrainedModel):\n    config_class = XConfig\n"
    )
    (tmp_path / "config.json").write_text(
        '{"model_type": "vlmctl_x", "auto_map": {"AutoConfig": "configuration_x.XConfig", '
        '"AutoModelForCausalLM": "modeling_x.XModel"}}'
    )
    with pytest.raises(VlmctlError) as info:
        rc.load_remote_model(AutoModelForCausalLM, tmp_path)
    assert info.value.findings[0].hint == "pip install vlmctl_no_such_module_xyz"
    assert "\n" not in str(info.value)


def test_a_module_missing_at_import_time_is_one_line_too():
    err = rc.missing_modules_error(
        ModuleNotFoundError("No module named 'einops'", name="einops"), "m"
    )
    assert err is not None and err.findings[0].hint == "pip install einops"
