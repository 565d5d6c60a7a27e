"""The model matrix: each family vlmctl is checked against, what it supports, what is verified.

Why one packaged table: `vlmctl models` prints it, the README's table is generated from it
(`markdown_table`; `tests/test_models_matrix.py` fails when the README copy is stale), and every
"verified" claim is tied to the conformance kit: a family's claims need its folder under
`tests/realkit/<name>/` (real template, tokenizer and processor files) and the kit tests named
in `VERIFIED_BY`, which run over every kit folder. A claim is written here only once that kit
test passes for the family (a family whose kit test fails or is skipped claims nothing for that
check). Light: no transformers/torch import.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

# What a claim means, and the kit test that proves it for every kit folder.
CHECKS = {
    "masking": "labels on the real template/tokenizer/processor: each answer plus its "
    "end-of-turn, no media label, the processor sees the template's own text",
    "train_step": "one LoRA step on tiny random weights in the real config's shape, finite loss",
    "merge": "the adapter merges, merge verifies, the merged folder loads",
    "generate": "the merged model generates",
}
VERIFIED_BY = {
    "masking": "tests/test_realkit_masking.py::test_kept_labels_are_each_answer_plus_end_of_turn",
    "train_step": "tests/test_realkit_train_merge.py::test_lora_step_merge_verify_and_generate",
    "merge": "tests/test_realkit_train_merge.py::test_lora_step_merge_verify_and_generate",
    "generate": "tests/test_realkit_train_merge.py::test_lora_step_merge_verify_and_generate",
}
_ALL = ("masking", "train_step", "merge", "generate")
_MASK = ("masking",)


@dataclass(frozen=True)
class Family:
    """One model family: how it loads and what vlmctl has checked on its real files."""

    name: str  # the kit folder under tests/realkit
    title: str
    hub_id: str  # the checkpoint whose files the kit holds
    model_type: str
    model_class: str
    template: str  # where the chat template comes from
    image: bool
    multi_image: bool
    video: bool
    remote_code: bool
    verified: tuple[str, ...]


FAMILIES: tuple[Family, ...] = (
    Family("qwen2_vl", "Qwen2-VL", "Qwen/Qwen2-VL-2B-Instruct", "qwen2_vl",
           "Qwen2VLForConditionalGeneration", "released", True, True, True, False, _ALL),
    Family("qwen2_5_vl", "Qwen2.5-VL", "Qwen/Qwen2.5-VL-7B-Instruct", "qwen2_5_vl",
           "Qwen2_5_VLForConditionalGeneration", "released", True, True, True, False, _ALL),
    Family("qwen3_vl", "Qwen3-VL", "Qwen/Qwen3-VL-2B-Instruct", "qwen3_vl",
           "Qwen3VLForConditionalGeneration", "released", True, True, True, False, _ALL),
    Family("llava", "LLaVA-1.5", "llava-hf/llava-1.5-7b-hf", "llava",
           "LlavaForConditionalGeneration", "released", True, True, False, False, _ALL),
    Family("llava_next", "LLaVA-NeXT", "llava-hf/llava-v1.6-mistral-7b-hf", "llava_next",
           "LlavaNextForConditionalGeneration", "released", True, True, False, False, _ALL),
    Family("llava_onevision", "LLaVA-OneVision", "llava-hf/llava-onevision-qwen2-0.5b-ov-hf",
           "llava_onevision", "LlavaOnevisionForConditionalGeneration",
           "transformers' tests/docs", True, True, True, False, _ALL),
    Family("internvl_chat", "InternVL2", "OpenGVLab/InternVL2-2B",
           "internvl_chat", "InternVLChatModel",
           "released (tokenizer, string content; vlmctl's InternVLChatProcessor)",
           True, True, True, True, _ALL),
    Family("paligemma", "PaliGemma", "google/paligemma-3b-pt-448", "paligemma",
           "PaliGemmaForConditionalGeneration", "none (prefix/suffix)", True, False, False,
           False, _ALL),
    Family("gemma3", "Gemma 3", "google/gemma-3-4b-it", "gemma3",
           "Gemma3ForConditionalGeneration", "released", True, True, False, False, _ALL),
    Family("idefics2", "Idefics2", "HuggingFaceM4/idefics2-8b", "idefics2",
           "Idefics2ForConditionalGeneration", "released (TRL copy)", True, True, False,
           False, _ALL),
    Family("idefics3", "Idefics3", "HuggingFaceM4/Idefics3-8B-Llama3", "idefics3",
           "Idefics3ForConditionalGeneration", "released", True, True, False, False, _ALL),
    Family("smolvlm", "SmolVLM / SmolVLM2", "HuggingFaceTB/SmolVLM2-2.2B-Instruct", "smolvlm",
           "SmolVLMForConditionalGeneration", "released", True, True, True, False, _ALL),
    Family("mllama", "Llama-3.2-Vision", "meta-llama/Llama-3.2-11B-Vision-Instruct", "mllama",
           "MllamaForConditionalGeneration", "transformers' tests", True, True, False, False,
           _ALL),
    Family("phi3_v", "Phi-3-vision", "microsoft/Phi-3-vision-128k-instruct",
           "phi3_v", "Phi3VForCausalLM", "released (string content, numbered image tags)", True, True,
           False, True, ("masking",)),
)  # fmt: skip


def rows() -> list[dict]:
    """The matrix as plain dicts (what `vlmctl models --format json` prints)."""
    return [asdict(f) | {"verified": list(f.verified)} for f in FAMILIES]


def _mark(value: bool) -> str:
    return "yes" if value else "-"


def markdown_table() -> str:
    """The README's model matrix, generated from `FAMILIES`."""
    head = (
        "| family | checkpoint | model class | chat template | image | multi-image | video "
        "| masking | 1 train step | merge | generate |\n"
        "|---|---|---|---|---|---|---|---|---|---|---|\n"
    )
    body = ""
    for f in FAMILIES:
        cls = f"`{f.model_class}`" + (" (remote code)" if f.remote_code else "")
        checks = " | ".join(_mark(c in f.verified) for c in _ALL)
        body += (
            f"| {f.title} | `{f.hub_id}` | {cls} | {f.template} | {_mark(f.image)} | "
            f"{_mark(f.multi_image)} | {_mark(f.video)} | {checks} |\n"
        )
    return head + body
