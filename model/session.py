"""Streaming sessions: one agent episode (or a batch of episodes in lockstep) fed through a model
one piece at a time, with the whole history held in the model state, never re-fed.

Stream layout, in tokens (see model.tokenizer):
    <instruction> instruction bytes
    then per step: <step> <image> [image embeddings] </image> <action> action bytes </action>
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import Tensor

from model.attention import KVCache
from model.hybrid import HoldfastModel, ModelState
from model.mamba2 import MambaState
from model.tokenizer import ByteTokenizer

SNAPSHOT_FORMAT = "holdfast-session-v1"
# Per-row tensors a session keeps next to the model state; snapshots, stack and split carry them.
_ROW_TENSORS = ("last_logits", "last_hidden", "pointer_keys", "copy_keys", "copy_values")


class Session:
    """The state of `batch_size` independent episodes that advance together through one model."""

    def __init__(self, model: HoldfastModel, batch_size: int = 1, tokenizer: ByteTokenizer | None = None) -> None:
        self.model = model
        self.tokenizer = tokenizer or ByteTokenizer()
        self.state: ModelState = model.new_state(batch_size)
        self.batch_size = batch_size
        self.last_logits: Tensor | None = None  # (B, V): the next-token distribution after the last feed
        self.last_hidden: Tensor | None = None  # (B, D): the final hidden state that produced last_logits
        # (B, T, K): the pointer head's keys for the last screenshot's image tokens (model.pointer),
        # kept until the next screenshot; None for a model without a pointer head.
        self.pointer_keys: Tensor | None = None
        # The copy head's table over the instruction (model.copy): keys (B, n, K) and the token
        # ids they copy (B, n); None until `feed_copy_source`.
        self.copy_keys: Tensor | None = None
        self.copy_values: Tensor | None = None

    # Feeding -------------------------------------------------------------------------------

    def _as_batch(self, ids: list[int] | Tensor) -> Tensor:
        ids = torch.as_tensor(ids, dtype=torch.long, device=self.model.device)
        if ids.dim() == 1:
            ids = ids.expand(self.batch_size, -1)
        if ids.shape[0] != self.batch_size:
            raise ValueError(f"token batch {tuple(ids.shape)} does not match the session's batch size {self.batch_size}")
        return ids

    @torch.no_grad()
    def feed_tokens(self, ids: list[int] | Tensor) -> Tensor:
        """Feed token ids ((L,) for every row or (B, L)); return the next-token logits (B, V)."""
        ids = self._as_batch(ids)
        if ids.shape[1] == 0:
            raise ValueError("feed_tokens got an empty sequence")
        self._advance(self.model.hidden_states(input_ids=ids, state=self.state))
        return self.last_logits

    def _advance(self, hidden: Tensor) -> None:
        self.last_hidden = hidden[:, -1]
        self.last_logits = self.model.lm_head(self.last_hidden)

    @torch.no_grad()
    def feed_copy_source(self, ids: list[int] | Tensor) -> Tensor:
        """Feed token ids ((L,) or (B, L)) whose tokens after the first the copy head may copy
        (the instruction); return the next-token logits."""
        ids = self._as_batch(ids)
        if ids.shape[1] < 2:
            raise ValueError("a copy source needs a start token and at least one token to copy")
        hidden = self.model.hidden_states(input_ids=ids, state=self.state)
        self.copy_keys = self.model.copy_keys(hidden[:, :-1])
        self.copy_values = ids[:, 1:]
        self._advance(hidden)
        return self.last_logits

    @torch.no_grad()
    def next_token_probabilities(self) -> Tensor:
        """(B, V) next-token probabilities: the lm_head's, mixed with the copy head's when the
        model has one and a copy source has been fed."""
        if self.last_logits is None:
            raise RuntimeError("nothing has been fed yet; feed the instruction or a screenshot first")
        if self.copy_keys is None:
            return self.last_logits.float().softmax(-1)
        return self.model.copy_probabilities(self.last_hidden, self.last_logits, self.copy_keys, self.copy_values)

    @torch.no_grad()
    def feed_embeddings(self, embeds: Tensor) -> Tensor:
        """Feed (B, L, D) embeddings (image spans, or anything already embedded)."""
        if embeds.dim() != 3 or embeds.shape[0] != self.batch_size:
            raise ValueError(f"embeddings must be (batch={self.batch_size}, length, width), got {tuple(embeds.shape)}")
        self._advance(self.model.hidden_states(inputs_embeds=embeds, state=self.state))
        return self.last_logits

    @torch.no_grad()
    def feed_text(self, text: str) -> Tensor:
        return self.feed_tokens(self.tokenizer.encode(text))

    @torch.no_grad()
    def feed_image(self, pixels: Tensor, prefix: list[int] = (), suffix: list[int] = ()) -> Tensor:
        """Feed one screenshot per row as `prefix <image> [embeddings] </image> suffix`, in one pass.

        pixels: (B, 3, H, W) normalised (see model.vision.image_to_tensor) or (3, H, W) for every row.
        """
        if pixels.dim() == 3:
            pixels = pixels.expand(self.batch_size, -1, -1, -1)
        image = self.model.encode_images(pixels.to(self.model.device))  # (B, T, D)
        tok = self.tokenizer
        before = self.model.embed_tokens(self._as_batch([*prefix, tok.image_start_id]))
        after = self.model.embed_tokens(self._as_batch([tok.image_end_id, *suffix]))
        hidden = self.model.hidden_states(inputs_embeds=torch.cat([before, image, after], dim=1), state=self.state)
        if self.model.config.pointer_subdivision is not None:
            self.pointer_keys = self.model.pointer_keys(hidden[:, before.shape[1]:before.shape[1] + image.shape[1]])
        self._advance(hidden)
        return self.last_logits

    @torch.no_grad()
    def point(self) -> Tensor:
        """Pointer logits (B, classes) from the last hidden state over the last screenshot's tokens."""
        if self.pointer_keys is None or self.last_hidden is None:
            raise RuntimeError("no screenshot has been fed yet, so there is nothing to point at")
        return self.model.point(self.last_hidden, self.pointer_keys)

    @torch.no_grad()
    def generate(self, max_new_tokens: int, stop_id: int | None = None) -> list[list[int]]:
        """Greedy decoding from the last logits; every generated token is fed, so it becomes
        history. A row stops at `stop_id` (included in its output); the call returns when every
        row has stopped or after max_new_tokens.

        NOTE: in a batch, rows that stopped early keep being fed `stop_id` until all rows stop,
        which adds those tokens to their history; run batches with a fixed length (stop_id=None)
        or one session per episode when that matters.
        """
        if self.last_logits is None:
            raise RuntimeError("nothing has been fed yet; feed the instruction or an image before generating")
        outputs: list[list[int]] = [[] for _ in range(self.batch_size)]
        finished = torch.zeros(self.batch_size, dtype=torch.bool, device=self.model.device)
        for _ in range(max_new_tokens):
            next_ids = self.last_logits.argmax(-1)
            if stop_id is not None:
                next_ids = torch.where(finished, torch.full_like(next_ids, stop_id), next_ids)
            for row, token in enumerate(next_ids.tolist()):
                if not finished[row]:
                    outputs[row].append(token)
            self.feed_tokens(next_ids[:, None])
            if stop_id is not None:
                finished |= next_ids == stop_id
                if bool(finished.all()):
                    break
        return outputs

    # State ----------------------------------------------------------------------------------

    def state_bytes(self) -> int:
        """Bytes of history held: SSM and conv states, the cached keys and values, the pointer
        keys of the last screenshot and the copy table of the instruction."""
        tables = [t.nbytes for t in (self.pointer_keys, self.copy_keys, self.copy_values) if t is not None]
        return self.state.nbytes() + sum(tables)

    @property
    def tokens_seen(self) -> int:
        return self.state.tokens_seen

    def checkpoint(self) -> tuple:
        """Mark the current point of the stream, to return to with `rollback`."""
        logits = None if self.last_logits is None else self.last_logits.clone()
        hidden = None if self.last_hidden is None else self.last_hidden.clone()
        return (self.state.checkpoint(), logits, hidden, self.pointer_keys)

    def rollback(self, mark: tuple) -> None:
        state_mark, self.last_logits, self.last_hidden, self.pointer_keys = mark
        self.state.rollback(state_mark)

    # Snapshots ------------------------------------------------------------------------------

    def snapshot(self, path: str | Path) -> None:
        """Write the session state to a safetensors file (tensors plus JSON metadata)."""
        tensors: dict[str, Tensor] = {}
        seen: dict[str, int] = {}
        for i, layer in enumerate(self.state.layers):
            if layer is None:
                continue
            for name, tensor in layer.tensors().items():
                tensors[f"layers.{i}.{name}"] = tensor.contiguous()
            if isinstance(layer, KVCache):
                seen[str(i)] = layer.seen
        for name in _ROW_TENSORS:
            if getattr(self, name) is not None:
                tensors[name] = getattr(self, name).contiguous()
        metadata = {
            "format": SNAPSHOT_FORMAT,
            "config": self.model.config.model_dump_json(),
            "batch_size": str(self.batch_size),
            "tokens_seen": str(self.state.tokens_seen),
            "kv_seen": json.dumps(seen),
        }
        save_file(tensors, str(path), metadata=metadata)

    @classmethod
    def restore(cls, path: str | Path, model: HoldfastModel, tokenizer: ByteTokenizer | None = None) -> Session:
        """Load a snapshot written by `snapshot` for the same model configuration."""
        from safetensors import safe_open

        path = Path(path)
        try:
            with safe_open(str(path), framework="pt") as handle:
                metadata = handle.metadata() or {}
            tensors = load_file(str(path), device=str(model.device))
        except (SafetensorError, OSError) as error:
            raise ValueError(f"{path}: not a readable session snapshot ({error})") from error
        if metadata.get("format") != SNAPSHOT_FORMAT:
            raise ValueError(f"{path}: not a Holdfast session snapshot (format {metadata.get('format')!r})")
        if metadata.get("config") != model.config.model_dump_json():
            raise ValueError(f"{path}: the snapshot was taken with a different model configuration than {model.config.name!r}")
        session = cls(model, int(metadata["batch_size"]), tokenizer)
        kv_seen = json.loads(metadata["kv_seen"])
        for i, layer in enumerate(session.state.layers):
            if isinstance(layer, MambaState):
                session.state.layers[i] = MambaState(tensors[f"layers.{i}.conv"], tensors[f"layers.{i}.ssm"])
            elif isinstance(layer, KVCache):
                layer.load(tensors[f"layers.{i}.k"], tensors[f"layers.{i}.v"], kv_seen[str(i)])
        session.state.tokens_seen = int(metadata["tokens_seen"])
        session.last_logits = tensors.get("last_logits")
        session.last_hidden = tensors.get("last_hidden")
        session.pointer_keys = tensors.get("pointer_keys")
        session.copy_keys = tensors.get("copy_keys")
        session.copy_values = tensors.get("copy_values")
        return session

    # Batching -------------------------------------------------------------------------------

    @classmethod
    def stack(cls, sessions: list[Session]) -> Session:
        """Join sessions that have seen the same number of tokens into one batch."""
        if not sessions:
            raise ValueError("stack needs at least one session")
        first = sessions[0]
        lengths = {s.state.tokens_seen for s in sessions}
        if len(lengths) != 1:
            raise ValueError(f"sessions in a batch must have seen the same number of tokens, got {sorted(lengths)}")
        batch = cls(first.model, sum(s.batch_size for s in sessions), first.tokenizer)
        for i, layer in enumerate(batch.state.layers):
            parts = [s.state.layers[i] for s in sessions]
            if isinstance(layer, MambaState):
                batch.state.layers[i] = MambaState(
                    torch.cat([p.conv for p in parts]), torch.cat([p.ssm for p in parts])
                )
            elif isinstance(layer, KVCache):
                held = [p.tensors() for p in parts]
                layer.load(torch.cat([h["k"] for h in held]), torch.cat([h["v"] for h in held]), parts[0].seen)
        batch.state.tokens_seen = first.state.tokens_seen
        for name in _ROW_TENSORS:
            parts = [getattr(s, name) for s in sessions]
            if all(part is not None for part in parts):
                setattr(batch, name, torch.cat(parts))
        return batch

    def split(self) -> list[Session]:
        """Split a batch into one session per row."""
        sessions = []
        for row in range(self.batch_size):
            single = Session(self.model, 1, self.tokenizer)
            for i, layer in enumerate(self.state.layers):
                if isinstance(layer, MambaState):
                    single.state.layers[i] = MambaState(layer.conv[row:row + 1].clone(), layer.ssm[row:row + 1].clone())
                elif isinstance(layer, KVCache):
                    single.state.layers[i] = layer.select([row])
            single.state.tokens_seen = self.state.tokens_seen
            for name in _ROW_TENSORS:
                if getattr(self, name) is not None:
                    setattr(single, name, getattr(self, name)[row:row + 1].clone())
            sessions.append(single)
        return sessions
