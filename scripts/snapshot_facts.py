"""Write vlmctl/config/facts_snapshot.json from the installed TRL and transformers.

The light install (`pip install vlmctl`, no extras) checks `train_config.yaml` keys and
`model_classes` class names against this snapshot; run this after upgrading TRL or
transformers (tests/test_facts_snapshot.py fails until you do):

    python scripts/snapshot_facts.py          # rewrite the snapshot
    python scripts/snapshot_facts.py --check  # exit 1 when it differs from the installed libs
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from vlmctl.config.snapshot import SNAPSHOT_FILE  # noqa: E402
from vlmctl.config.snapshot_write import dumps, generate  # noqa: E402


def main(argv: list[str]) -> int:
    """Rewrite the snapshot, or with --check compare it with the installed libraries."""
    text = dumps(generate())
    if "--check" in argv:
        same = SNAPSHOT_FILE.is_file() and SNAPSHOT_FILE.read_text(encoding="utf-8") == text
        print(f"{SNAPSHOT_FILE}: {'up to date' if same else 'OUT OF DATE: rerun without --check'}")
        return 0 if same else 1
    SNAPSHOT_FILE.write_text(text, encoding="utf-8")
    print(f"wrote {SNAPSHOT_FILE}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
