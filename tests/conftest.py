import os
import sys
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"
sys.path.insert(0, str(Path(__file__).parent))

from tiny_models import make_tiny_causal_lm, make_tiny_encoder, write_manifest  # noqa: E402


@pytest.fixture(scope="session")
def tiny_encoder(tmp_path_factory) -> Path:
    """A 2-layer random BERT (uncased WordPiece) in HF layout with a manifest.json."""
    path = make_tiny_encoder(tmp_path_factory.mktemp("models") / "tiny-encoder")
    write_manifest(path, "tiny-encoder")
    return path


@pytest.fixture(scope="session")
def tiny_causal_lm(tmp_path_factory) -> Path:
    """A 2-layer random Llama with a byte-level BPE tokenizer and chat template, with a manifest.json."""
    path = make_tiny_causal_lm(tmp_path_factory.mktemp("models") / "tiny-lm")
    write_manifest(path, "tiny-lm")
    return path


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.exists():
        pytest.skip(f"{SHARED_DATA} not present")
    return SHARED_DATA
