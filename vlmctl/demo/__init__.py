"""`vlmctl demo`: the whole pipeline, offline, in a few minutes on a laptop CPU.

`colors.py` writes the data and the config set; `pipeline.py` runs the verbs and scores.

It builds the tiny Qwen2-VL twin (or uses --model), writes a small image Q/A dataset a model
can learn (solid-colour images, "What color is this?" -> the colour's name), writes a config
set from the same templates `vlmctl init` uses, then runs the real verbs: validate -> preview
-> train (through accelerate, like any run) -> merge, and finally asks the merged model about
held-out images and scores the answers with `vlmctl eval` (its report.html shows every image and
answer). `demo-report.json` records accuracy (exact match) against chance and links the page.

Why colours: they are the one visual fact a random-weight 2-layer model can learn in ~100
steps, and the answer is a single word, so scoring needs no judge. The demo keeps vlmctl's
default `exclude_vision_modules: true` (LoRA on the language model only): the random vision
tower and projector already carry mean colour, and the adapted language model learns to name
it (measured: 39/40 held-out right; with the vision tower adapted too, 40/40).
"""
