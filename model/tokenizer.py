"""Tokenizers: a byte-level one with agent special tokens for the models trained here, and the
`tokenizer.json` of a real checkpoint folder through transformers."""

from __future__ import annotations

from pathlib import Path

# Special tokens follow the 256 byte values. The order is part of every trained checkpoint:
# append new ones, never reorder.
SPECIAL_TOKENS = (
    "<pad>",
    "<instruction>",  # starts the task instruction
    "<step>",  # starts one agent step
    "<image>",  # starts a screenshot's span of image embeddings
    "</image>",  # ends it
    "<action>",  # starts an action's text
    "</action>",  # ends it; generation stops here
)
BYTE_VOCAB = 256


class ByteTokenizer:
    """UTF-8 bytes as ids 0..255, special tokens from 256 up."""

    def __init__(self) -> None:
        self.special_ids = {name: BYTE_VOCAB + i for i, name in enumerate(SPECIAL_TOKENS)}
        self.pad_id = self.special_ids["<pad>"]
        self.instruction_id = self.special_ids["<instruction>"]
        self.step_id = self.special_ids["<step>"]
        self.image_start_id = self.special_ids["<image>"]
        self.image_end_id = self.special_ids["</image>"]
        self.action_start_id = self.special_ids["<action>"]
        self.action_end_id = self.special_ids["</action>"]

    @property
    def vocab_size(self) -> int:
        return BYTE_VOCAB + len(SPECIAL_TOKENS)

    def encode(self, text: str) -> list[int]:
        return list(text.encode("utf-8"))

    def decode(self, ids: list[int]) -> str:
        """Decode byte ids; special tokens are skipped and invalid UTF-8 becomes U+FFFD."""
        return bytes(i for i in ids if i < BYTE_VOCAB).decode("utf-8", errors="replace")


def load_checkpoint_tokenizer(folder: str | Path):
    """Load the `tokenizer.json` of a checkpoint folder as a transformers fast tokenizer (no network)."""
    from transformers import PreTrainedTokenizerFast

    path = Path(folder) / "tokenizer.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: missing; a checkpoint folder needs its tokenizer.json next to config.json")
    return PreTrainedTokenizerFast(tokenizer_file=str(path))
