"""Credentials, told apart from settings, so nothing vlmctl writes holds one.

Credentials (`hub_token`, `api_key`, a processor's `token`, a value shaped like `hf_...`) are
dropped wherever they sit; settings whose names merely contain such a word (`mask_pad_token`)
stay. Used by the run manifest and `configs/` (what a run writes) and by the config loader
(secret `--set` overrides travel in a private file, never on a command line).
"""

from __future__ import annotations

import re
from typing import Any

# Credentials by what they are: the names libraries and people give them (compared whole,
# after lower-casing and `-` -> `_`), never a word inside a longer name (`mask_pad_token`,
# `role_key` and `include_num_input_tokens_seen` are settings).
SECRET_KEY_NAMES = frozenset(
    {
        "token",
        "hub_token",
        "hf_token",
        "push_to_hub_token",
        "use_auth_token",
        "auth_token",
        "access_token",
        "api_token",
        "bearer_token",
        "refresh_token",
        "api_key",
        "apikey",
        "secret",
        "secret_key",
        "client_secret",
        "private_key",
        "password",
        "passwd",
        "credentials",
    }
)
# Name endings that only credentials have (WANDB_API_KEY, db_password, client_secret).
_SECRET_ENDINGS = ("_api_key", "_apikey", "_password", "_passwd", "_secret", "_access_token",
                   "_auth_token", "_hub_token", "_hf_token", "_private_key")  # fmt: skip
# Values shaped like well-known tokens, wherever they sit (a run name, a list item).
_SECRET_VALUE_RE = re.compile(
    r"(?<![A-Za-z0-9])(?:hf_[A-Za-z0-9]{20,}|api_org_[A-Za-z0-9]{20,}|sk-[A-Za-z0-9_-]{20,}"
    r"|gh[pousr]_[A-Za-z0-9]{20,}|github_pat_[A-Za-z0-9_]{20,}|xox[abprs]-[A-Za-z0-9-]{10,}"
    r"|AKIA[0-9A-Z]{16}|glpat-[A-Za-z0-9_-]{20,})"
)
_DROP = object()


def is_secret_key(name: Any) -> bool:
    """A key that names a credential (`hub_token`, `token`, `WANDB_API_KEY`), by its whole name."""
    low = re.sub(r"[-.\s]+", "_", str(name).strip().lower())
    return low in SECRET_KEY_NAMES or low.endswith(_SECRET_ENDINGS)


def is_secret_value(value: Any) -> bool:
    """A string that contains something shaped like a hub/API token (`hf_...`, `sk-...`)."""
    return isinstance(value, str) and _SECRET_VALUE_RE.search(value) is not None


def _strip(value: Any) -> Any:
    if isinstance(value, dict):
        out = {}
        for k, v in value.items():
            if is_secret_key(k):
                continue
            v = _strip(v)
            if v is not _DROP:
                out[k] = v
        return out
    if isinstance(value, (list, tuple)):
        return [v for v in (_strip(x) for x in value) if v is not _DROP]
    return _DROP if is_secret_value(value) else value


def strip_secrets(value: Any) -> Any:
    """A copy of a JSON-like value without credentials: secret-named keys and token-shaped
    values are removed, recursively (lists included); every other key is kept as it is."""
    out = _strip(value)
    return None if out is _DROP else out


def is_secret_override(text: str) -> bool:
    """A `--set key=value` that sets a credential (by the key's name or the value's shape)."""
    key, _, raw = text.partition("=")
    return any(is_secret_key(part) for part in key.split(".")) or is_secret_value(raw)


def strip_secret_overrides(overrides: list[str]) -> list[str]:
    """`--set` texts, without those that set a credential."""
    return [text for text in overrides if not is_secret_override(text)]
