"""The bad-input corpus (issue #18): each case is data -- files to write or edit, a command, and
what its ONE error line must say (where, what) -- so `tests/test_bad_input_corpus.py` runs them
all and `docs/BAD_INPUTS.md` is generated from the same list (`python tests/bad_inputs.py`
rewrites it; a test fails when it is stale).

Bases a case starts from:
- "config": the four templates of `vlmctl init` (model: a hub id), checked with --config-only.
- "data": a tiny local Qwen2-VL twin, a 4-row CSV (`image_name,question,answer`) in `data/`
  with two JPEGs in `data/images/` (the media_root), checked with the full dataset pass.
In `args`, `{set}` is the config folder and `{root}` the case's folder.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

TEMPLATE_MODEL = 'model_name_or_path: "Qwen/Qwen2-VL-2B-Instruct"'
DOC = Path(__file__).resolve().parents[1] / "docs" / "BAD_INPUTS.md"


@dataclass(frozen=True)
class Case:
    """One bad input and what vlmctl must answer."""

    id: str
    kind: str  # config | dataset | media | path | permission | cli
    what: str  # the bad input, in words (the docs table)
    expect: tuple[str, ...]  # substrings of the one error line: where first, then what
    args: tuple[str, ...] = ("validate", "--config-only", "{set}")
    base: str = "config"  # config | data | none
    edits: tuple[tuple[str, str, str], ...] = ()  # (file in the set, old, new)
    files: tuple[tuple[str, str | bytes], ...] = ()  # (path under root, content) written
    links: tuple[tuple[str, str], ...] = ()  # (path under root, target) symlinks
    dirs: tuple[str, ...] = ()  # folders made under root
    remove: tuple[str, ...] = ()  # paths under root removed first
    rows: tuple[tuple[int, str, str], ...] = ()  # (row, column, value) in data/data.csv
    deny: tuple[str, ...] = ()  # paths under root whose open() fails with EACCES
    env: tuple[tuple[str, str], ...] = ()
    exit: int = 1
    forbid: tuple[str, ...] = ()  # must not appear anywhere in the output
    extra: dict = field(default_factory=dict, compare=False)

    @property
    def command(self) -> str:
        """The command as a user types it (for the docs)."""
        env = " ".join(f"{k}={v}" for k, v in self.env)
        cmd = "vlmctl " + " ".join(
            a.replace("{set}", "set").replace("{root}", ".") for a in self.args
        )
        return f"{env} {cmd}".strip()


C = "vlm_collator_config.yaml"
M = "vlm_model_config.yaml"
T = "train_config.yaml"
P = "peft_config.yaml"
DATA = ("validate", "{set}")
SECRET = "HF_TOKEN=hf_corpusSECRET0123456789"


def _c(id, what, expect, kind="config", **kw) -> Case:
    return Case(id=id, kind=kind, what=what, expect=tuple(expect), **kw)


def _d(id, what, expect, kind="dataset", **kw) -> Case:
    kw.setdefault("args", DATA)
    return Case(id=id, kind=kind, what=what, expect=tuple(expect), base="data", **kw)


def _bomb() -> str:
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x]"]
    for i in range(1, 9):
        lines.append(f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]")
    return "\n".join(lines) + "\n"


_PNG_1PX = bytes.fromhex(
    "89504e470d0a1a0a0000000d4948445200000001000000010802000000907753de0000000c4944415408d7"
    "63f8cfc000000301010018dd8db00000000049454e44ae426082"
)

CASES: list[Case] = [
    # ---- YAML itself ----
    _c(
        "yaml-unclosed-quote",
        "unclosed quote in the middle of a file",
        (f"{C}:24:", "unclosed"),
        edits=((C, '"question" #', '"question #'),),
    ),
    _c(
        "yaml-unclosed-quote-last",
        "unclosed quote on the last line",
        (f"{T}:", "unclosed"),
        files=(("set/" + T, 'learning_rate: 1.0e-05\nrun_name: "oops\n'),),
    ),
    _c(
        "yaml-tab",
        "tab in the indentation",
        (f"{P}:", "tab"),
        files=(("set/" + P, "r: 8\ntarget_modules:\n\t- q_proj\n"),),
    ),
    _c(
        "yaml-duplicate",
        "the same key twice",
        (f"{T}:", "duplicate key 'learning_rate'"),
        files=(("set/" + T, "learning_rate: 1.0e-05\nlearning_rate: 2.0e-05\n"),),
    ),
    _c(
        "yaml-duplicate-nested",
        "the same nested key twice",
        (f"{C}:", "duplicate key"),
        edits=((C, "    max_length: 2048", "    max_length: 2048\n    max_length: 1024"),),
    ),
    _c(
        "yaml-list",
        "a list instead of a mapping",
        (f"{P}:1:1", "expected a mapping"),
        files=(("set/" + P, "- r: 8\n- lora_alpha: 16\n"),),
    ),
    _c(
        "yaml-scalar",
        "a single value instead of a mapping",
        (f"{P}:1:1", "expected a mapping"),
        files=(("set/" + P, "just some text\n"),),
    ),
    _c("yaml-empty", "an empty file", (P, "empty"), files=(("set/" + P, ""),)),
    _c(
        "yaml-comments-only",
        "a file of comments only",
        (P, "empty"),
        files=(("set/" + P, "# nothing here\n"),),
    ),
    _c(
        "yaml-python-tag",
        "a !!python/object tag",
        (f"{T}:", "tag"),
        files=(("set/" + T, "learning_rate: !!python/object/apply:os.system ['id']\n"),),
    ),
    _c(
        "yaml-custom-tag",
        "a custom !tag",
        (f"{T}:", "tag"),
        files=(("set/" + T, "learning_rate: !env LR\n"),),
    ),
    _c(
        "yaml-not-utf8",
        "Latin-1 bytes",
        (f"{T}:2:", "not UTF-8"),
        files=(("set/" + T, b"learning_rate: 1.0e-05\nrun_name: caf\xe9\n"),),
    ),
    _c(
        "yaml-binary",
        "a binary file",
        (f"{T}:1:1", "not UTF-8"),
        files=(("set/" + T, b"\x89PNG\r\n\x1a\n\x00\x00\xff"),),
    ),
    _c(
        "yaml-bad-indent",
        "a key indented under a scalar",
        (f"{P}:", "YAML syntax error"),
        files=(("set/" + P, "r: 8\n  lora_alpha: 16\n"),),
    ),
    _c(
        "yaml-unclosed-bracket",
        "an unclosed flow list",
        (f"{P}:", "YAML syntax error"),
        files=(("set/" + P, "target_modules: [q_proj, v_proj\nr: 8\n"),),
    ),
    _c(
        "yaml-alias-bomb",
        "alias bomb: 9 levels of 9",
        (f"{T}:", "aliases"),
        files=(("set/" + T, _bomb()),),
    ),
    _c(
        "yaml-huge",
        "a 2 MB config file",
        (T, "too large"),
        files=(("set/" + T, "# pad\n" * 400_000),),
    ),
    _c(
        "yaml-deep-nesting",
        "5,000 nested flow lists",
        (f"{T}:1:1", "nested too deeply"),
        files=(("set/" + T, "a: " + "[" * 5000 + "]" * 5000 + "\n"),),
    ),
    _c(
        "yaml-undefined-alias",
        "an alias that is never defined",
        (f"{T}:", "alias"),
        files=(("set/" + T, "learning_rate: *lr\n"),),
    ),
    # ---- keys and types ----
    _c(
        "key-typo-train",
        "a misspelt train key",
        (f"{T}:", "learning_rat", "learning_rate"),
        edits=((T, "learning_rate:", "learning_rat:"),),
    ),
    _c(
        "key-typo-peft",
        "a misspelt peft key",
        (f"{P}:", "lora_alhpa", "lora_alpha"),
        edits=((P, "lora_alpha:", "lora_alhpa:"),),
    ),
    _c(
        "key-other-file",
        "a peft key written in train_config.yaml",
        (f"{T}:", "lora_alpha", "peft_config.yaml"),
        files=(("set/" + T, "learning_rate: 1.0e-05\nlora_alpha: 16\n"),),
    ),
    _c(
        "key-typo-collator",
        "a misspelt collator section",
        (f"{C}:", "text_procesing"),
        edits=((C, "text_processing:", "text_procesing:"),),
    ),
    _c(
        "key-typo-nested",
        "a misspelt nested key",
        (f"{C}:", "max_lenght", "max_length"),
        edits=((C, "max_length:", "max_lenght:"),),
    ),
    _c(
        "key-column-suffix",
        "an extra dataset_columns key without _column",
        (f"{C}:", "caption", "_column"),
        edits=((C, "dataset_columns:\n", "dataset_columns:\n    caption: text\n"),),
    ),
    _c(
        "key-model-typo",
        "a misspelt model key",
        (f"{M}:", "model_name", "unknown key"),
        edits=((M, "model_name_or_path:", "model_name:"),),
    ),
    _c(
        "type-lr-word",
        "learning_rate: fast",
        (f"{T}:", "learning_rate", "number"),
        edits=((T, "learning_rate: 1.0e-05", "learning_rate: fast"),),
    ),
    _c(
        "type-epochs-list",
        "num_train_epochs: [1]",
        (f"{T}:", "num_train_epochs", "got a list"),
        edits=((T, "num_train_epochs: 1.0", "num_train_epochs: [1]"),),
    ),
    _c(
        "type-r-word",
        "r: sixty-four",
        (f"{P}:", "r: expected", "sixty-four"),
        edits=((P, "r: 64", "r: sixty-four"),),
    ),
    _c("type-r-zero", "r: 0", (f"{P}:", "r: ", "got 0"), edits=((P, "r: 64", "r: 0"),)),
    _c("type-r-negative", "r: -4", (f"{P}:", "r: ", "got -4"), edits=((P, "r: 64", "r: -4"),)),
    _c(
        "type-alpha-string",
        "lora_alpha: lots",
        (f"{P}:", "lora_alpha", "'lots'"),
        edits=((P, "lora_alpha: 16", "lora_alpha: lots"),),
    ),
    _c(
        "type-max-length-negative",
        "max_length: -5",
        (f"{C}:", "max_length", "got -5"),
        edits=((C, "max_length: 2048", "max_length: -5"),),
    ),
    _c(
        "type-max-length-text",
        "max_length: long",
        (f"{C}:", "max_length", "'long'"),
        edits=((C, "max_length: 2048", "max_length: long"),),
    ),
    _c(
        "type-policy",
        "an unknown truncation_policy",
        (f"{C}:", "truncation_policy", "one of"),
        edits=((C, 'truncation_policy: "drop"', 'truncation_policy: "chop"'),),
    ),
    _c(
        "type-bool",
        "bf16: maybe",
        (f"{T}:", "bf16", "true or false"),
        edits=((T, "bf16: true", "bf16: maybe"),),
    ),
    _c(
        "type-section-scalar",
        "a section written as a scalar",
        (f"{P}:", "target_modules", "got a mapping"),
        files=(("set/" + P, "r: 8\ntarget_modules: {a: 1}\n"),),
    ),
    _c(
        "type-dtype",
        "torch_dtype: float13",
        (f"{M}:", "float13"),
        edits=((M, 'torch_dtype: "torch.bfloat16"', 'torch_dtype: "torch.float13"'),),
    ),
    _c(
        "type-role",
        "a message role that does not exist",
        (f"{C}:", "bot"),
        edits=((C, '- role: "assistant"', '- role: "bot"'),),
    ),
    _c(
        "type-content-kind",
        "a content part of an unknown type",
        (f"{C}:", "picture"),
        edits=((C, 'type: "image"', 'type: "picture"'),),
    ),
    # ---- cross-field rules ----
    _c(
        "rule-unknown-placeholder",
        "a misspelt placeholder",
        (f"{C}:", "{questoin_column}", "question_column"),
        edits=((C, '"{question_column}"', '"{questoin_column}"'),),
    ),
    _c(
        "rule-unclosed-placeholder",
        "an unclosed placeholder",
        (f"{C}:", "unclosed placeholder"),
        edits=((C, '"{question_column}"', '"{question_column"'),),
    ),
    _c(
        "rule-stray-brace",
        "a lone closing brace",
        (f"{C}:", "unclosed placeholder"),
        edits=((C, '"{question_column}"', '"{question_column}}x"'),),
    ),
    _c(
        "rule-null-placeholder",
        "a placeholder whose column is null",
        (f"{C}:", "{question_column}", "null"),
        edits=((C, 'question_column: "question"', "question_column: null"),),
    ),
    _c(
        "rule-no-assistant",
        "no assistant turn",
        (f"{C}:", "assistant"),
        edits=((C, '- role: "assistant"', '- role: "user"'),),
    ),
    _c(
        "rule-quant-full",
        "4-bit quantization with full fine-tuning",
        (f"{M}:", "quantiz"),
        edits=(
            (M, "    load_in_4bit: false", "    load_in_4bit: true"),
            (P, "enabled: true", "enabled: false"),
        ),
    ),
    _c(
        "rule-remote-no-trust",
        "a remote-code model without trust_remote_code",
        (f"{M}:", "trust_remote_code"),
        edits=(
            (M, TEMPLATE_MODEL, 'model_name_or_path: "OpenGVLab/InternVL2-2B"'),
            (M, "        trust_remote_code: true   #", "        trust_remote_code: false   #"),
        ),
    ),
    _c(
        "model-local-missing",
        "a local model folder that does not exist",
        (f"{M}:7:", "model folder not found"),
        edits=((M, TEMPLATE_MODEL, 'model_name_or_path: "./models/mine"'),),
    ),
    _c(
        "model-absolute-missing",
        "an absolute model path that does not exist",
        (f"{M}:7:", "model folder not found"),
        edits=((M, TEMPLATE_MODEL, 'model_name_or_path: "/nonexistent/vlm"'),),
    ),
    _c(
        "model-class-name",
        "a model_class that is not a class name",
        (f"{M}:", "not a class name"),
        edits=(
            (M, 'model_class: "Qwen2VLForConditionalGeneration"', 'model_class: "Qwen2VL ForX"'),
        ),
    ),
    _c(
        "import-evilmod",
        "import_path naming a module in the working folder",
        (f"{M}:", "import_path", "not allowed"),
        edits=((M, 'import_path: "transformers"', 'import_path: "evilmod"'),),
        files=(("evilmod.py", "raise SystemExit('imported!')\n"),),
    ),
    _c(
        "import-this",
        "import_path: this (stdlib, runs on import)",
        (f"{M}:", "'this'", "not allowed"),
        edits=((M, 'import_path: "transformers"', 'import_path: "this"'),),
        forbid=("Beautiful is better",),
    ),
    _c(
        "import-os",
        "import_path: os",
        (f"{M}:", "'os'", "not allowed"),
        edits=((M, 'import_path: "transformers"', 'import_path: "os"'),),
    ),
    _c(
        "import-not-module",
        "import_path with shell characters",
        (f"{M}:", "not a module name"),
        edits=((M, 'import_path: "transformers"', 'import_path: "os; rm -rf /"'),),
    ),
    _c(
        "import-allowed-not-installed",
        "an allowed import_path that is not installed",
        (f"{M}:", "not an installed module"),
        edits=((M, 'import_path: "transformers"', 'import_path: "evilmod"'),),
        files=(("evilmod.py", "raise SystemExit('imported!')\n"),),
        env=(("VLMCTL_ALLOW_IMPORTS", "evilmod"),),
    ),
    _c(
        "media-root-missing-config",
        "media_root that does not exist (data present)",
        (f"{C}:", "media_root folder not found"),
        edits=(
            (C, "path: null", 'path: "data.csv"'),
            (C, "media_root: null ", "media_root: nowhere"),
        ),
        files=(("set/data.csv", "image,question,answer\na.jpg,q,a\n"),),
    ),
    _c(
        "media-root-file",
        "media_root naming a file",
        (f"{C}:", "media_root not a folder"),
        edits=(
            (C, "path: null", 'path: "data.csv"'),
            (C, "media_root: null ", 'media_root: "data.csv"'),
        ),
        files=(("set/data.csv", "image,question,answer\na.jpg,q,a\n"),),
    ),
    # ---- the files and folders themselves ----
    _c(
        "file-missing",
        "a config file missing",
        (T, "file not found", "vlmctl init"),
        remove=("set/" + T,),
    ),
    _c(
        "file-is-folder",
        "a folder in place of a config file",
        (T, "is a folder"),
        remove=("set/" + T,),
        dirs=("set/" + T,),
    ),
    _c(
        "file-dev-zero",
        "a config symlinked to /dev/zero",
        (T, "not a regular file", "/dev/zero"),
        remove=("set/" + T,),
        links=(("set/" + T, "/dev/zero"),),
    ),
    _c(
        "file-dangling-link",
        "a config symlink to nothing",
        (T, "file not found"),
        remove=("set/" + T,),
        links=(("set/" + T, "/nonexistent/train.yaml"),),
    ),
    _c(
        "dir-missing",
        "a config folder that does not exist",
        ("nothere", "config folder not found"),
        args=("validate", "--config-only", "{root}/nothere"),
    ),
    _c(
        "dir-is-file",
        "a file given as the config folder",
        (T, "not a folder"),
        args=("validate", "--config-only", "{set}/" + T),
    ),
    # ---- --set ----
    _c(
        "set-unknown-prefix",
        "--set with a misspelt file prefix",
        ("--set trian.learning_rate=1", "train."),
        args=("validate", "--config-only", "{set}", "--set", "trian.learning_rate=1"),
    ),
    _c(
        "set-unknown-key",
        "--set of an unknown key",
        ("--set lerning_rate=1", "learning_rate"),
        args=("validate", "--config-only", "{set}", "--set", "lerning_rate=1"),
    ),
    _c(
        "set-bad-type",
        "--set peft.r=abc",
        ("--set peft.r=abc", "r: expected"),
        args=("validate", "--config-only", "{set}", "--set", "peft.r=abc"),
    ),
    _c(
        "set-no-equals",
        "--set without =",
        ("--set", "KEY=VALUE"),
        exit=2,
        args=("validate", "--config-only", "{set}", "--set", "train.learning_rate"),
    ),
    _c(
        "set-malformed-path",
        "--set with an empty key part",
        ("--set", "malformed key path"),
        exit=2,
        args=("validate", "--config-only", "{set}", "--set", "train..lr=1"),
    ),
    _c(
        "set-list-index",
        "--set of a list item that does not exist",
        ("--set", "no list item"),
        args=(
            "validate",
            "--config-only",
            "{set}",
            "--set",
            "collator.message_format.training_messages[9].role=user",
        ),
    ),
    _c(
        "set-top-list",
        "--set with an index at the top",
        ("--set", "not a list"),
        exit=2,
        args=("validate", "--config-only", "{set}", "--set", "peft[0]=1"),
    ),
    _c(
        "set-into-scalar",
        "--set below a scalar",
        ("--set", "not a mapping"),
        args=("validate", "--config-only", "{set}", "--set", "peft.r.x=1"),
    ),
    # ---- CLI misuse ----
    Case(
        "cli-unknown-verb",
        "cli",
        "a misspelt verb",
        ("vlmctl", "valdate"),
        args=("valdate",),
        base="none",
        exit=2,
    ),
    Case(
        "cli-unknown-option",
        "cli",
        "an unknown option",
        ("vlmctl validate", "--frmat"),
        args=("validate", "--frmat", "json", "{set}"),
        exit=2,
    ),
    Case(
        "cli-bad-format",
        "cli",
        "a --format that does not exist",
        ("--format", "yaml"),
        args=("validate", "--format", "yaml", "{set}"),
        exit=2,
    ),
    Case(
        "cli-sample-zero",
        "cli",
        "--sample 0",
        ("--sample", "greater than or equal to 1"),
        args=("validate", "--sample", "0", "{set}"),
        exit=2,
    ),
    Case(
        "cli-sample-and-all",
        "cli",
        "--sample with --all",
        ("--sample and --all", "exclude each other"),
        args=("validate", "--sample", "3", "--all", "{set}"),
        exit=2,
    ),
    Case(
        "cli-config-only-sample",
        "cli",
        "--config-only with --sample",
        ("--sample", "need the dataset pass", "--config-only"),
        args=("validate", "--config-only", "--sample", "3", "{set}"),
        exit=2,
    ),
    Case(
        "cli-num-proc-zero",
        "cli",
        "--num-proc 0",
        ("--num-proc", "greater than or equal to 1"),
        args=("validate", "--num-proc", "0", "{set}"),
        exit=2,
    ),
    Case(
        "cli-init-exists",
        "cli",
        "init over existing config files",
        (T, "already exists", "--force"),
        args=("init", "{root}/old"),
        base="none",
        files=(("old/" + T, "learning_rate: 1.0e-05\n"),),
    ),
    Case(
        "cli-init-schema-exists",
        "cli",
        "init over an existing .vlmctl-schema/",
        ("train_config.schema.json", "--force"),
        args=("init", "{root}/old"),
        base="none",
        files=(("old/.vlmctl-schema/train_config.schema.json", "{}\n"),),
    ),
    Case(
        "cli-init-file",
        "cli",
        "init into a path that is a file",
        ("notdir", "not a folder"),
        args=("init", "{root}/notdir"),
        base="none",
        files=(("notdir", "x\n"),),
    ),
    Case(
        "cli-schema-file",
        "cli",
        "schema --file of a file that does not exist",
        ("--file", "'nope' is not one of"),
        args=("schema", "--file", "nope"),
        base="none",
        exit=2,
    ),
    Case(
        "cli-preview-missing",
        "cli",
        "preview of a folder that does not exist",
        ("nothere", "not found"),
        args=("preview", "{root}/nothere"),
        base="none",
    ),
    Case(
        "cli-merge-missing",
        "cli",
        "merge of an adapter folder that does not exist",
        ("nothere", "does not exist"),
        args=("merge", "{root}/nothere"),
        base="none",
    ),
    Case(
        "cli-validate-missing",
        "cli",
        "validate of a folder that does not exist",
        ("nothere", "not found"),
        args=("validate", "{root}/nothere"),
        base="none",
    ),
    # ---- datasets ----
    _d(
        "data-missing",
        "dataset.path that does not exist",
        (f"{C}:", "(dataset.path)", "dataset not found", "nothere.csv"),
        edits=((C, "data/data.csv", "data/nothere.csv"),),
    ),
    _d(
        "data-extension",
        "a dataset file with an unknown extension",
        ("data.txt", "format"),
        edits=((C, "data/data.csv", "data/data.txt"),),
        files=(("data/data.txt", "a,b\n1,2\n"),),
    ),
    _d(
        "data-header-only",
        "a CSV with a header only",
        ("data.csv", "no rows"),
        files=(("data/data.csv", "image_name,question,answer\n"),),
    ),
    _d(
        "data-empty-csv",
        "an empty CSV file",
        ("data.csv", "cannot read CSV"),
        files=(("data/data.csv", ""),),
    ),
    _d(
        "data-missing-column",
        "a column the config names is not in the data",
        (f"{C}:", "(dataset_columns.image_column)", "'image_name' is not in the dataset"),
        files=(("data/data.csv", "image,question,answer\nimg0.jpg,q,a\nimg1.jpg,q,a\n"),),
    ),
    _d(
        "data-bad-json",
        "a JSON file with a syntax error",
        ("data.json:2", "invalid JSON"),
        edits=((C, "data/data.csv", "data/data.json"),),
        files=(
            ("data/data.json", '[{"image_name": "img0.jpg", "question": "q", "answer": "a"},\n'),
        ),
    ),
    _d(
        "data-bad-jsonl",
        "a JSONL file with one broken line",
        ("data.jsonl:2", "invalid JSON line"),
        edits=((C, "data/data.csv", "data/data.jsonl"),),
        files=(
            (
                "data/data.jsonl",
                '{"image_name": "img0.jpg", "question": "q", "answer": "a"}\n'
                '{"image_name": "img1.jpg", "question": \n',
            ),
        ),
    ),
    _d(
        "data-bad-parquet",
        "a .parquet file that is not Parquet",
        ("data.parquet", "cannot read parquet"),
        edits=((C, "data/data.csv", "data/data.parquet"),),
        files=(("data/data.parquet", b"PAR1 not really"),),
    ),
    _d(
        "data-empty-folder",
        "dataset.path an empty folder",
        ("data/empty", "no data files"),
        edits=((C, "data/data.csv", "data/empty"),),
        dirs=("data/empty",),
    ),
    _d(
        "data-eval-missing",
        "eval_path that does not exist",
        (f"{C}:2:3", "(dataset.eval_path)", "not found", "noeval.csv"),
        edits=((C, "dataset:\n", 'dataset:\n  eval_path: "../data/noeval.csv"\n'),),
    ),
    _d(
        "data-empty-answer",
        "a row with an empty answer",
        ("row 2", "empty value in column 'answer'"),
        rows=((2, "answer", ""),),
    ),
    _d(
        "data-train-split",
        "a train_split the data does not have",
        ("data.csv", "train split 'validation' not in the dataset"),
        edits=((C, "dataset:\n", 'dataset:\n  train_split: "validation"\n'),),
    ),
    _d(
        "data-eval-split",
        "an eval_split the data does not have",
        ("data.csv", "eval split 'test' not in the dataset"),
        edits=((C, "dataset:\n", 'dataset:\n  eval_split: "test"\n'),),
    ),
    _d(
        "data-media-root-missing",
        "a media_root that does not exist",
        (f"{C}:", "media_root folder not found"),
        edits=((C, "/data/images", "/data/pictures"),),
    ),
    # ---- media ----
    _d(
        "media-missing",
        "a row whose image does not exist",
        ("row 1", "file not found", "missing.jpg"),
        kind="media",
        rows=((1, "image_name", "missing.jpg"),),
    ),
    _d(
        "media-empty-path",
        "a row with an empty image path",
        ("row 1", "empty value in column 'image_name'"),
        kind="media",
        rows=((1, "image_name", ""),),
    ),
    _d(
        "media-truncated",
        "a truncated JPEG",
        ("row 1", "truncated"),
        kind="media",
        rows=((1, "image_name", "cut.jpg"),),
        extra={"truncate": "data/images/cut.jpg"},
    ),
    _d(
        "media-text-secret",
        "a row pointing at ../secrets.env",
        ("row 1", "not an image", "a text file"),
        kind="media",
        rows=((1, "image_name", "../../secrets.env"),),
        files=(("secrets.env", SECRET + "\n"),),
        forbid=("hf_corpus", "HF_TOKEN"),
    ),
    _d(
        "media-etc-passwd",
        "a row pointing at /etc/passwd",
        ("row 1", "/etc/passwd", "not an image"),
        kind="media",
        rows=((1, "image_name", "/etc/passwd"),),
        forbid=("root:x:", "root:"),
    ),
    _d(
        "media-html",
        "an HTML page saved as .jpg",
        ("row 1", "HTML page"),
        kind="media",
        rows=((1, "image_name", "page.jpg"),),
        files=(("data/images/page.jpg", "<!DOCTYPE html><html><title>Sign in</title></html>\n"),),
        forbid=("Sign in",),
    ),
    _d(
        "media-lfs",
        "a Git LFS pointer instead of the image",
        ("row 1", "Git LFS", "git lfs pull"),
        kind="media",
        rows=((1, "image_name", "lfs.jpg"),),
        files=(
            (
                "data/images/lfs.jpg",
                "version https://git-lfs.github.com/spec/v1\noid sha256:ab\nsize 12\n",
            ),
        ),
    ),
    _d(
        "media-empty-file",
        "a 0-byte image",
        ("row 1", "empty file"),
        kind="media",
        rows=((1, "image_name", "zero.jpg"),),
        files=(("data/images/zero.jpg", b""),),
    ),
    _d(
        "media-random-bytes",
        "random bytes named .jpg",
        ("row 1", "noise.jpg", "not an image"),
        kind="media",
        rows=((1, "image_name", "noise.jpg"),),
        files=(("data/images/noise.jpg", bytes(range(256)) * 4),),
    ),
    _d(
        "media-dir",
        "a row naming a folder",
        ("row 1", "directory"),
        kind="media",
        rows=((1, "image_name", "sub"),),
        dirs=("data/images/sub",),
    ),
    _d(
        "media-dev-zero",
        "an image symlinked to /dev/zero",
        ("row 1", "not a regular file", "/dev/zero"),
        kind="media",
        rows=((1, "image_name", "z.jpg"),),
        links=(("data/images/z.jpg", "/dev/zero"),),
    ),
    _d(
        "media-dangling",
        "an image symlink to nothing",
        ("row 1", "file not found"),
        kind="media",
        rows=((1, "image_name", "gone.jpg"),),
        links=(("data/images/gone.jpg", "/nonexistent.jpg"),),
    ),
    _d(
        "media-url",
        "a row with an http URL",
        ("row 1", "remote media"),
        kind="media",
        rows=((1, "image_name", "https://example.com/a.jpg"),),
    ),
    _d(
        "media-bomb",
        "a PNG claiming 100000x100000 pixels",
        ("row 1", "decompression bomb"),
        kind="media",
        rows=((1, "image_name", "bomb.png"),),
        extra={"bomb": "data/images/bomb.png"},
    ),
    # ---- paths leaving the dataset folders (CI: VLMCTL_CONFINE_MEDIA=1) ----
    _d(
        "path-confined-dotdot",
        "../secrets.env with media confined",
        ("row 1", "outside the dataset folders"),
        kind="path",
        rows=((1, "image_name", "../../secrets.env"),),
        files=(("secrets.env", SECRET + "\n"),),
        env=(("VLMCTL_CONFINE_MEDIA", "1"),),
        forbid=("hf_corpus",),
    ),
    _d(
        "path-confined-absolute",
        "/etc/passwd with media confined",
        ("row 1", "outside the dataset folders"),
        kind="path",
        rows=((1, "image_name", "/etc/passwd"),),
        env=(("VLMCTL_CONFINE_MEDIA", "1"),),
    ),
    _d(
        "path-confined-symlink",
        "a symlink leading out, media confined",
        ("row 1", "outside the dataset folders"),
        kind="path",
        rows=((1, "image_name", "out.jpg"),),
        files=(("secrets.env", SECRET + "\n"),),
        links=(("data/images/out.jpg", "../../secrets.env"),),
        env=(("VLMCTL_CONFINE_MEDIA", "1"),),
    ),
    _d(
        "path-confined-missing",
        "a path leading out that does not exist, media confined",
        ("row 1", "outside the dataset folders"),
        kind="path",
        rows=((1, "image_name", "/nonexistent/x.jpg"),),
        env=(("VLMCTL_CONFINE_MEDIA", "1"),),
    ),
    _d(
        "path-data-relative-missing",
        "dataset.path relative to the wrong folder",
        (f"{C}:", "(dataset.path)", "dataset not found", "relative"),
        kind="path",
        edits=((C, '"../data/data.csv"', '"data.csv"'),),
    ),
    # ---- permissions (as root nothing is refused: open() is made to fail with EACCES) ----
    _c(
        "perm-config",
        "an unreadable config file",
        (T, "permission denied"),
        kind="permission",
        deny=("set/" + T,),
    ),
    _c(
        "perm-config-peft",
        "an unreadable peft_config.yaml",
        (P, "permission denied"),
        kind="permission",
        deny=("set/" + P,),
    ),
    _d(
        "perm-image",
        "an unreadable image",
        ("row 1", "permission denied"),
        kind="permission",
        rows=((1, "image_name", "solo.jpg"),),
        deny=("data/images/solo.jpg",),
        extra={"copy": ("data/images/img1.jpg", "data/images/solo.jpg")},
    ),
    _d(
        "perm-dataset",
        "an unreadable dataset file",
        ("data.csv", "permission denied"),
        kind="permission",
        deny=("data/data.csv",),
    ),
]


# The config folder itself and its files are paths; `--set` is command-line misuse.
_KIND_BY_PREFIX = {"file-": "path", "dir-": "path", "set-": "cli"}
CASES = [
    replace(c, kind=next((k for p, k in _KIND_BY_PREFIX.items() if c.id.startswith(p)), c.kind))
    for c in CASES
]


def render_markdown(cases: list[Case] | None = None) -> str:
    """The docs table: every case, the command, and what its one error line says."""
    cases = CASES if cases is None else cases
    kinds = sorted({c.kind for c in cases})
    lines = [
        "# Bad inputs and what vlmctl answers",
        "",
        "Generated from `tests/bad_inputs.py` by `python tests/bad_inputs.py`; "
        "`tests/test_bad_input_corpus.py` runs every case and fails when this file is stale.",
        "",
        f"{len(cases)} cases ({', '.join(f'{sum(c.kind == k for c in cases)} {k}' for k in kinds)}). "
        "Each exits non-zero (1: bad input, 2: bad command line) with exactly ONE `error:` line "
        "that says where (file:line:col, key, row or `--set`), what, and how to fix it "
        "(`(fix: ...)`); no traceback; nothing is written. Media paths may leave the dataset "
        "folders unless `VLMCTL_CONFINE_MEDIA=1` (for CI); `import_path` other than "
        "transformers needs `VLMCTL_ALLOW_IMPORTS` set by whoever runs vlmctl, and `validate` "
        "never imports it. Permission cases are simulated (tests run as root).",
        "",
        "| # | kind | bad input | command | exit | the error line contains |",
        "|---|---|---|---|---|---|",
    ]
    for i, c in enumerate(cases, 1):
        expect = " · ".join(f"`{e}`" for e in c.expect).replace("|", "\\|")
        lines.append(
            f"| {i} | {c.kind} | {c.what} | `{c.command}` | {c.exit} | {expect} |".replace(
                "``", "`"
            )
        )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    DOC.write_text(render_markdown(), encoding="utf-8")
    print(f"wrote {DOC} ({len(CASES)} cases)")
