"""`vlm_collator_config.yaml`: where the data is, how rows become chats, how they are encoded.

The seed's sections keep their meaning. vlmctl adds `dataset` (the seed never says where the
data is), `conversation` (chat-shaped datasets) and `text_processing.truncation_policy`.
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PositiveFloat,
    PositiveInt,
    field_validator,
    model_validator,
)

from vlmctl.config.model import Strict

# `{name}` placeholders; `{{` and `}}` are literal braces.
PLACEHOLDER_RE = re.compile(r"(?<!\{)\{([^{}]*)\}(?!\})|\{\{|\}\}")


def placeholders(text: str) -> list[str]:
    """Template variable names used in a message text (literal `{{`/`}}` excluded)."""
    out = []
    for m in PLACEHOLDER_RE.finditer(text or ""):
        if m.group(1) is not None:
            out.append(m.group(1).strip())
    return out


class DatasetSource(Strict):
    """Which data to train on."""

    path: str | None = Field(
        default=None,
        description="Local file or folder (relative to the config folder) or a hub dataset id. "
        "CLI: --dataset.",
    )
    format: Literal["auto", "csv", "json", "jsonl", "parquet", "imagefolder", "disk", "hub"] = (
        Field(default="auto", description="auto = by file extension / folder content.")
    )
    name: str | None = Field(default=None, description="Hub dataset config name.")
    train_split: str = Field(default="train")
    eval_split: str | None = Field(default=None, description="Split used for evaluation.")
    eval_size: float | None = Field(
        default=None, gt=0, lt=1, description="Fraction held out of train when eval_split is null."
    )
    eval_path: str | None = Field(
        default=None,
        description="A separate eval file/folder (relative to the config folder), e.g. "
        "data/eval.json next to data/train.json; its split is eval_split or 'train'.",
    )
    media_root: str | list[str] | None = Field(
        default=None,
        description="Folder(s) that relative media paths resolve against, tried in order before "
        "the dataset file's folder (a list when images and videos live in different folders).",
    )


class DatasetColumns(BaseModel):
    """Template variable -> real column name. Extra keys ending in `_column` are allowed."""

    model_config = ConfigDict(extra="allow", validate_assignment=True)

    image_column: str | None = "image"
    question_column: str | None = "question"
    answer_column: str | None = "answer"
    video_column: str | None = "video"
    context_column: str | None = None

    @model_validator(mode="after")
    def _extra_keys_are_columns(self) -> DatasetColumns:
        for key, value in (self.model_extra or {}).items():
            if not key.endswith("_column"):
                raise ValueError(
                    f"unknown key {key!r}: extra dataset_columns keys must end in '_column'"
                )
            if value is not None and not isinstance(value, str):
                raise ValueError(f"{key}: a column name (string) or null, got {value!r}")
        return self

    def mapping(self) -> dict[str, str | None]:
        """All variables (seed keys and extras) -> column names."""
        # (every field is a plain `str | None`: no model_dump needed; row_to_example calls this
        # for every row)
        fields = {name: getattr(self, name) for name in type(self).model_fields}
        return {**fields, **(self.model_extra or {})}


class DataProcessing(Strict):
    """Which media to process. Both on: each row keeps the images and videos it has when the
    model's processor takes both (Qwen2-VL and most current families); video wins only in rows
    with both for a processor that takes one kind per row."""

    image_data: bool = True
    video_data: bool = False


class ContentPart(Strict):
    """One part of a message: text (with `{variables}`), an image slot or a video slot."""

    type: Literal["text", "image", "video"]
    text: str | None = None

    @model_validator(mode="after")
    def _text_for_text(self) -> ContentPart:
        if self.type == "text" and self.text is None:
            raise ValueError("a text part needs 'text'")
        if self.type != "text" and self.text is not None:
            raise ValueError(f"an {self.type} part takes no 'text'")
        return self


class MessageTemplate(Strict):
    """One turn of the training chat."""

    role: Literal["system", "user", "assistant"]
    content: str | list[ContentPart]

    def parts(self) -> list[ContentPart]:
        """Content as typed parts (a bare string is one text part)."""
        if isinstance(self.content, str):
            return [ContentPart(type="text", text=self.content)]
        return list(self.content)


def _default_messages() -> list[MessageTemplate]:
    return [
        MessageTemplate(
            role="user",
            content=[
                ContentPart(type="text", text="{system_prompt}"),
                ContentPart(type="image"),
                ContentPart(type="text", text="{question_column}"),
            ],
        ),
        MessageTemplate(
            role="assistant", content=[ContentPart(type="text", text="{answer_column}")]
        ),
    ]


class MessageFormat(Strict):
    """How a flat row becomes a chat."""

    system_prompt: str | None = "Answer briefly."
    training_messages: list[MessageTemplate] = Field(default_factory=_default_messages)


class Conversation(Strict):
    """Chat-shaped datasets: a column holding the turns, media lists matched to tags in order."""

    column: str = Field(description="The conversation column (e.g. messages, conversations).")
    role_key: str = Field(default="role", description="'from' for ShareGPT/LLaVA data.")
    content_key: str = Field(default="content", description="'value' for ShareGPT/LLaVA data.")
    role_map: dict[str, Literal["system", "user", "assistant"]] = Field(
        default_factory=lambda: {
            "human": "user",
            "gpt": "assistant",
            "user": "user",
            "assistant": "assistant",
            "system": "system",
        }
    )
    images_column: str | None = "images"
    videos_column: str | None = "videos"
    image_tag: str = "<image>"
    video_tag: str = "<video>"
    system_column: str | None = Field(
        default=None, description="Per-row system prompt column (rows with a value use it)."
    )
    system_prompt: str | None = Field(
        default=None,
        description="System turn for rows without their own (no system turn, no system_column "
        "value). null = none added: the chat template's own default applies. "
        "message_format.system_prompt is not used for chat rows.",
    )


class ImageProcessing(Strict):
    """Image decoding before the processor. `max_size` limits the longest side (pixels)."""

    convert_to_rgb: bool = True
    resize_mode: Literal["keep_aspect", "crop", "stretch"] = "keep_aspect"
    max_size: PositiveInt | None = None


class FrameExtraction(Strict):
    """How frames are taken from a clip."""

    library: Literal["decord", "pyav", "cv2"] = "decord"
    sampling_strategy: Literal["uniform"] = "uniform"
    num_frames: PositiveInt = 8


class FileProcessing(Strict):
    """Per-file video handling."""

    convert_to_rgb: bool = True
    max_duration: PositiveFloat | None = Field(
        default=None, description="Sample only the first N seconds of each clip."
    )


class VideoProcessing(Strict):
    """Video decoding before the processor."""

    enabled: bool = True
    frame_extraction: FrameExtraction = Field(default_factory=FrameExtraction)
    file_processing: FileProcessing = Field(default_factory=FileProcessing)


class TextProcessing(Strict):
    """Tokenisation: padding, length limit, and what happens to rows that do not fit."""

    padding: bool | Literal["longest", "max_length"] = True
    truncation: bool = True
    max_length: PositiveInt = 2048
    add_generation_prompt: bool = False
    truncation_policy: Literal["drop", "truncate_text", "error"] = Field(
        default="drop",
        description="Rows longer than max_length: drop (skip and count), truncate_text (cut "
        "text, never a media span), error.",
    )


class LabelMasking(Strict):
    """Which tokens keep their labels."""

    mask_pad_token: bool = True
    mask_image_token: bool = True
    mask_input_tokens: bool = False
    ignore_index: int = -100


class CollatorConfig(Strict):
    """The whole `vlm_collator_config.yaml`."""

    dataset: DatasetSource = Field(default_factory=DatasetSource)
    dataset_columns: DatasetColumns = Field(default_factory=DatasetColumns)
    data_processing: DataProcessing = Field(default_factory=DataProcessing)
    conversation: Conversation | None = None
    message_format: MessageFormat = Field(default_factory=MessageFormat)
    image_processing: ImageProcessing = Field(default_factory=ImageProcessing)
    video_processing: VideoProcessing = Field(default_factory=VideoProcessing)
    text_processing: TextProcessing = Field(default_factory=TextProcessing)
    label_masking: LabelMasking = Field(default_factory=LabelMasking)

    @field_validator("conversation", mode="before")
    @classmethod
    def _empty_conversation(cls, v):
        return None if v in ({}, "") else v

    @property
    def use_video(self) -> bool:
        """Video is processed (video_data on and video_processing enabled)."""
        return self.data_processing.video_data and self.video_processing.enabled

    @property
    def use_images(self) -> bool:
        """Images are processed. With video on too, both kinds are kept per row; the collator
        applies "video wins" only for a processor that cannot take both in one row."""
        return self.data_processing.image_data
