"""`vlmctl preview`: the batch `train` would build from some rows, token by token.

`batch.py` picks the rows and builds the batch; `document.py` turns it into the JSON document
and its text rendering.

The rows go through the ONE collator (`row_to_example`, `VLMCollator.encode_examples` with
the length policy, then `collate_encoded`), exactly as its `__call__` does for a training
batch, so what is shown is what is trained on. Each token is shown by what happens to it in the loss:
- `trained`: its label is not ignore_index (the answer; also prompt tokens when
  `mask_input_tokens: false`, media tokens when `mask_image_token: false`);
- `prompt` / `media`: masked because it is prompt text / a media placeholder or marker;
- `pad`: padding added by the collator (padding is `trained` when `mask_pad_token: false`).
`part` keeps the collator's own classification (prompt | answer | media | pad) for programs.

Rows are the dataset file's own rows (`eval_size` is not applied, as in `validate`), and
nothing is written (the same private `datasets` cache as `validate`).

JSON (stable; `version` changes when a key does):
`{"version": 2, "config_dir", "model": {...}, "rows": [...], "batch": {"tensors": {name:
{"shape", "dtype"}}, "padding_fraction", "pad_tokens", "total_tokens"}, "samples": [{"row",
"dropped", "notes" (what was done to the row's media, e.g. a dropped video), "length", "original_length", "truncated", "supervised_tokens", "media_tokens",
"padding_tokens", "text", "spans": [{"kind", "start", "end", "display"}], "tokens": [{"id",
"piece", "kind", "part", "label"}]}]}`.
"""
