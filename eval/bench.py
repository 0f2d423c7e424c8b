"""Throughput and memory of the hybrid against Transformer engines on one agent workload.

Workload, per step and per episode of a batch: `<step> <image>`, one screenshot's image tokens,
`</image> <action>` fed in one pass, then `action_tokens` tokens generated greedily (fixed count,
no early stop), each fed back so that it becomes history. The image tokens are random
embeddings with a fixed seed, the same for every engine: the vision encoder would be the same
for all of them, so only the language models are compared. Weights are random too (seeded),
because speed does not depend on their values.

Every (engine, concurrency) pair runs in its own worker process (`python -m eval.bench
--worker`), one after the other. A process per engine gives each its own peak memory figure,
and a worker that runs out of memory or time can be stopped without losing the others'
results. The worker streams one JSON line per step to the parent.

Each step is timed `warmup + repeats` times from the same starting state. Before the step the
engine marks its state (Session.checkpoint for our engines, a deep copy of the cache for the
transformers engines), and it rolls back to the mark before every run after the first. The last run leaves
the episode one step further on, so the episode advances exactly once per step.
"""

from __future__ import annotations

import copy
import json
import logging
import math
import os
import resource
import selectors
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from eval.analytic import SPECIAL_TOKENS_PER_STEP, tokens_per_step
from model.config import ModelConfig, get_preset

logger = logging.getLogger(__name__)

ENGINES = ("hybrid", "hybrid-full", "transformer", "hf-nemotron-h", "hf-llama")
ENGINE_DESCRIPTIONS = {
    "hybrid": "our hybrid, attention bounded to the preset's window",
    "hybrid-full": "our hybrid, full attention history (a standard Nemotron-H)",
    "transformer": "our Transformer twin: every Mamba-2 layer is attention, rotary positions, growing context",
    "hf-nemotron-h": "transformers NemotronHForCausalLM with hybrid-full's weights, driven with its own cache",
    "hf-llama": "transformers LlamaForCausalLM of the twin's shape, driven with its own cache",
}

# Image embeddings are drawn at the scale of the token embeddings (initialised with std 0.02),
# so the hidden states look like those of a real stream.
IMAGE_EMBEDDING_STD = 0.02
# Time allowed for a worker to import torch and build its model before the first step.
WORKER_START_TIMEOUT_SECONDS = 600
# Added to a step's hard deadline for the rollbacks between repeats and the result line.
STEP_DEADLINE_GRACE_SECONDS = 30
MEMORY_METHOD = (
    "peak resident set size of the engine's worker process (resource.getrusage ru_maxrss): "
    "Python, torch, weights, state and activations together"
)
CUDA_MEMORY_METHOD = "torch.cuda.max_memory_allocated on the engine's worker process"


@dataclass
class BenchSpec:
    """Everything that defines a benchmark run; stored in results.json."""

    preset: str
    engines: list[str] = field(default_factory=lambda: list(ENGINES))
    steps: int = 64
    image_tokens: int | None = None  # None: the preset's vision.image_tokens
    action_tokens: int = 16
    concurrency: list[int] = field(default_factory=lambda: [1])
    warmup: int = 1  # untimed runs of every step before the timed ones
    repeats: int = 3  # timed runs of every step; the median is reported
    step_timeout: float | None = None  # seconds for one run of a step; None: no limit
    seed: int = 0
    device: str = "cpu"
    threads: int | None = None  # torch intra-op threads in each worker; None: torch's default

    def resolved_image_tokens(self) -> int:
        if self.image_tokens is not None:
            return self.image_tokens
        vision = get_preset(self.preset).vision
        if vision is None:
            raise ValueError(f"preset {self.preset!r} has no vision settings; pass --image-tokens")
        return vision.image_tokens

    def validate(self) -> None:
        unknown = [name for name in self.engines if name not in ENGINES]
        if unknown or not self.engines:
            raise ValueError(f"unknown engines {unknown or self.engines}; choose from {', '.join(ENGINES)}")
        if get_preset(self.preset).is_transformer:
            raise ValueError(f"preset {self.preset!r} is a Transformer twin; give the hybrid preset, the twin is derived")
        for name, value, least in (
            ("steps", self.steps, 1), ("action_tokens", self.action_tokens, 1),
            ("warmup", self.warmup, 0), ("repeats", self.repeats, 1),
        ):
            if value < least:
                raise ValueError(f"{name} must be at least {least}, got {value}")
        if not self.concurrency or min(self.concurrency) < 1:
            raise ValueError(f"concurrency values must be positive integers, got {self.concurrency}")
        if self.resolved_image_tokens() < 1:
            raise ValueError(f"image_tokens must be at least 1, got {self.image_tokens}")
        if self.step_timeout is not None and self.step_timeout <= 0:
            raise ValueError(f"step_timeout must be positive seconds, got {self.step_timeout}")
        if self.device not in ("cpu", "cuda"):
            raise ValueError(f"device must be cpu or cuda, got {self.device!r}")


# Engine configurations -----------------------------------------------------------------------


def language_config(preset: str) -> ModelConfig:
    """Return the preset without its vision encoder, because the benchmark feeds image embeddings.

    The pointer and copy heads go with it: their cost, small projections per screenshot, per
    instruction and per action token, is not what the benchmark compares.
    """
    return get_preset(preset).model_copy(
        update={"vision": None, "pointer_subdivision": None, "copy_instruction": False, "copy_case": False}
    )


def engine_config(engine: str, preset: str) -> ModelConfig:
    """Our model configuration behind an engine (hf-nemotron-h mirrors hybrid-full, hf-llama the twin)."""
    base = language_config(preset)
    if engine == "hybrid":
        return base
    if engine in ("hybrid-full", "hf-nemotron-h"):
        return base.with_window(None)
    if engine in ("transformer", "hf-llama"):
        return base.transformer_twin()
    raise ValueError(f"unknown engine {engine!r}; choose from {', '.join(ENGINES)}")


def nemotron_h_config(config: ModelConfig):
    """transformers.NemotronHConfig of the same shape (the inverse of config_from_nemotron_h)."""
    import transformers

    return transformers.NemotronHConfig(
        vocab_size=config.vocab_size,
        hidden_size=config.hidden_size,
        hybrid_override_pattern=config.pattern,
        num_attention_heads=config.attention_heads,
        num_key_value_heads=config.kv_heads,
        head_dim=config.head_dim,
        intermediate_size=config.mlp_hidden,
        mamba_num_heads=config.mamba_heads,
        mamba_head_dim=config.mamba_head_dim,
        ssm_state_size=config.ssm_state_size,
        n_groups=config.n_groups,
        conv_kernel=config.conv_kernel,
        chunk_size=config.chunk_size,
        time_step_min=config.time_step_min,
        layer_norm_epsilon=config.norm_eps,
        tie_word_embeddings=config.tie_embeddings,
    )


def llama_intermediate_size(twin: ModelConfig) -> int:
    """Gated-MLP width that gives the Llama model the twin's MLP parameter count.

    The Llama model has one layer per attention layer of the twin, so its KV cache and attention
    work equal the twin's. Every such layer carries a gated MLP with three matrices (gate, up,
    down), while the twin has fewer MLP layers of two matrices each. Keeping the twin's width there would give
    Llama about twice the MLP weights, so the width is scaled to match the total instead.
    """
    attention_layers = twin.layer_kinds.count("attention")
    mlp_layers = twin.layer_kinds.count("mlp")
    return max(1, round(mlp_layers * 2 * twin.mlp_hidden / (attention_layers * 3)))


def llama_config(twin: ModelConfig, max_positions: int):
    """transformers.LlamaConfig of the twin's width, heads and attention depth."""
    import transformers

    return transformers.LlamaConfig(
        vocab_size=twin.vocab_size,
        hidden_size=twin.hidden_size,
        num_hidden_layers=twin.layer_kinds.count("attention"),
        num_attention_heads=twin.attention_heads,
        num_key_value_heads=twin.kv_heads,
        head_dim=twin.head_dim,
        intermediate_size=llama_intermediate_size(twin),
        rms_norm_eps=twin.norm_eps,
        max_position_embeddings=max_positions,
        rope_theta=twin.rope_theta,
        tie_word_embeddings=twin.tie_embeddings,
    )


def describe_engine(engine: str, preset: str) -> str:
    """Describe the engine in one line, and for hf-llama how its shape was matched to the twin."""
    text = ENGINE_DESCRIPTIONS[engine]
    if engine == "hf-llama":
        twin = engine_config("transformer", preset)
        text += (
            f"; {twin.layer_kinds.count('attention')} layers (one per attention layer of the twin), "
            f"gated SiLU MLP of width {llama_intermediate_size(twin)} (three matrices) so that its MLP "
            f"weights equal the twin's {twin.layer_kinds.count('mlp')} squared-ReLU MLPs of width {twin.mlp_hidden}"
        )
    return text


# Engines (worker side) -----------------------------------------------------------------------


class SessionEngine:
    """One of our models driven through model.session.Session."""

    def __init__(self, model, batch_size: int) -> None:
        from model.session import Session

        self.model = model
        self.session = Session(model, batch_size)
        self.batch_size = batch_size

    def parameters(self) -> int:
        return self.model.num_parameters()

    def embed(self, ids: list[int]):
        import torch

        ids_tensor = torch.tensor(ids, device=self.model.device).expand(self.batch_size, -1)
        return self.model.embed_tokens(ids_tensor)

    def run_step(self, embeds, action_tokens: int) -> None:
        self.session.feed_embeddings(embeds)
        self.session.generate(action_tokens)

    def mark(self):
        return self.session.checkpoint()

    def rollback(self, mark) -> None:
        self.session.rollback(mark)

    def state_bytes(self) -> int:
        return self.session.state_bytes()


class TransformersEngine:
    """A stock transformers causal LM driven with its own cache (`cache=`, `use_cache=True`)."""

    def __init__(self, model, batch_size: int) -> None:
        from transformers import DynamicCache

        self.model = model
        self.batch_size = batch_size
        self.cache = DynamicCache(config=model.config)

    def parameters(self) -> int:
        return sum(p.numel() for p in self.model.parameters())

    def embed(self, ids: list[int]):
        import torch

        ids_tensor = torch.tensor(ids, device=self.model.device).expand(self.batch_size, -1)
        return self.model.get_input_embeddings()(ids_tensor)

    def _forward(self, **inputs):
        output = self.model(**inputs, cache=self.cache, use_cache=True, logits_to_keep=1)
        self.cache = output.cache
        return output.logits[:, -1]

    def run_step(self, embeds, action_tokens: int) -> None:
        import torch

        with torch.no_grad():
            logits = self._forward(inputs_embeds=embeds)
            for _ in range(action_tokens):
                logits = self._forward(input_ids=logits.argmax(-1)[:, None])

    def mark(self):
        # Mamba layers update their states in place, so only a full copy can be restored.
        # NOTE: the copy and its restored twin count in this worker's peak RSS, up to two extra
        # caches that our engines (index marks for unbounded caches) do not carry.
        return copy.deepcopy(self.cache)

    def rollback(self, mark) -> None:
        self.cache = copy.deepcopy(mark)

    def state_bytes(self) -> int:
        """Bytes of every tensor the cache holds: keys, values, conv and recurrent states."""
        import torch

        total = 0
        for layer in self.cache.layers:
            for name in ("keys", "values"):
                tensor = getattr(layer, name, None)
                if isinstance(tensor, torch.Tensor):
                    total += tensor.nbytes
            for name in ("conv_states", "recurrent_states"):
                for tensor in (getattr(layer, name, None) or {}).values():
                    if isinstance(tensor, torch.Tensor):
                        total += tensor.nbytes
        return total


def build_engine(engine: str, spec: BenchSpec, batch_size: int, device: str, dtype):
    """Build one engine with seeded random weights on device."""
    import torch

    from model.hybrid import HoldfastModel

    config = engine_config(engine, spec.preset)
    torch.manual_seed(spec.seed)
    if engine in ("hybrid", "hybrid-full", "transformer"):
        model = HoldfastModel(config).to(device=device, dtype=dtype).eval()
        return SessionEngine(model, batch_size)

    import transformers

    if engine == "hf-nemotron-h":
        # hybrid-full's weights under transformers' names (`model.` where ours use `backbone.`).
        ours = HoldfastModel(config)
        weights = {
            ("model." + name[len("backbone."):] if name.startswith("backbone.") else name): tensor
            for name, tensor in ours.state_dict().items()
        }
        model = transformers.NemotronHForCausalLM(nemotron_h_config(config))
        model.load_state_dict(weights)
    else:
        total_tokens = spec.steps * tokens_per_step(spec.resolved_image_tokens(), spec.action_tokens)
        model = transformers.LlamaForCausalLM(llama_config(config, max_positions=max(4096, total_tokens + 1)))
    model.config._attn_implementation = "sdpa"
    return TransformersEngine(model.to(device=device, dtype=dtype).eval(), batch_size)


# Worker --------------------------------------------------------------------------------------


def _emit(event: str, **fields) -> None:
    sys.stdout.write(json.dumps({"event": event, **fields}) + "\n")
    sys.stdout.flush()


def _peak_rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB


def _is_out_of_memory(error: BaseException) -> bool:
    import torch

    if isinstance(error, (torch.OutOfMemoryError, MemoryError)):
        return True
    # The CPU allocator raises a plain RuntimeError when malloc fails.
    return isinstance(error, RuntimeError) and "can't allocate memory" in str(error)


def _image_embeddings(spec: BenchSpec, step: int, batch_size: int, width: int, device: str, dtype):
    """Draw the step's image span: the same random tensor for every engine, seeded by the step."""
    import torch

    generator = torch.Generator().manual_seed(spec.seed * 1_000_003 + step)
    image = torch.randn(batch_size, spec.resolved_image_tokens(), width, generator=generator) * IMAGE_EMBEDDING_STD
    return image.to(device=device, dtype=dtype)


def _run_worker(spec: BenchSpec, engine_name: str, batch_size: int) -> None:
    import torch

    from model.tokenizer import ByteTokenizer

    if spec.threads:
        torch.set_num_threads(spec.threads)
    cuda = spec.device == "cuda"
    # NOTE: the CUDA path (bfloat16, synchronised timing, max_memory_allocated) has not run on a
    # GPU yet; only its refusal without one is tested.
    dtype = torch.bfloat16 if cuda else torch.float32

    def synchronize() -> None:
        if cuda:
            torch.cuda.synchronize()

    engine = build_engine(engine_name, spec, batch_size, spec.device, dtype)
    tokenizer = ByteTokenizer()
    width = engine_config(engine_name, spec.preset).hidden_size
    _emit("ready", parameters=engine.parameters(), rss_after_build_bytes=_peak_rss_bytes())

    step = 0
    try:
        with torch.no_grad():
            before = engine.embed([tokenizer.step_id, tokenizer.image_start_id])
            after = engine.embed([tokenizer.image_end_id, tokenizer.action_start_id])
            for step in range(1, spec.steps + 1):
                image = _image_embeddings(spec, step, batch_size, width, spec.device, dtype)
                embeds = torch.cat([before, image, after], dim=1)
                mark = engine.mark()
                timings = []
                for run in range(spec.warmup + spec.repeats):
                    if run:
                        engine.rollback(mark)
                    synchronize()
                    start = time.perf_counter()
                    engine.run_step(embeds, spec.action_tokens)
                    synchronize()
                    elapsed = time.perf_counter() - start
                    if run == 0 and spec.step_timeout is not None and elapsed > spec.step_timeout:
                        _emit("timeout", step=step, message=f"one run took {elapsed:.1f} s, over the {spec.step_timeout:g} s limit")
                        return
                    if run >= spec.warmup:
                        timings.append(elapsed * 1000.0)
                del mark
                _emit(
                    "step", step=step, ms=timings, state_bytes=engine.state_bytes(),
                    peak_rss_bytes=_peak_rss_bytes(),
                )
    except Exception as error:  # reported to the parent, which records it at this step
        kind = "out_of_memory" if _is_out_of_memory(error) else "error"
        _emit(kind, step=step, message=f"{type(error).__name__}: {error}")
        return
    _emit(
        "done",
        peak_rss_bytes=_peak_rss_bytes(),
        peak_device_bytes=torch.cuda.max_memory_allocated() if cuda else None,
    )


def worker_main() -> int:
    """Entry point of `python -m eval.bench --worker`: read the job as JSON from stdin."""
    job = json.loads(sys.stdin.read())
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    _run_worker(BenchSpec(**job["spec"]), job["engine"], job["concurrency"])
    return 0


# Parent --------------------------------------------------------------------------------------


def _empty_run(spec: BenchSpec) -> dict:
    return {
        "status": "ok",
        "failed_at_step": None,
        "message": None,
        "parameters": None,
        "ms_per_step": [None] * spec.steps,
        "ms_min": [None] * spec.steps,
        "ms_max": [None] * spec.steps,
        "state_bytes": [None] * spec.steps,
        "steps_completed": 0,
        "tokens_per_s": None,
        "action_tokens_per_s": None,
        "rss_after_build_bytes": None,
        "peak_rss_bytes": None,
        "peak_device_bytes": None,
    }


def _record_failure(run: dict, status: str, step: int, message: str) -> None:
    run.update(status=status, failed_at_step=step, message=message)


def run_engine(spec: BenchSpec, engine: str, concurrency: int, on_step=None) -> dict:
    """Run one engine at one concurrency in a worker process and collect its per-step figures."""
    run = _empty_run(spec)
    job = json.dumps({"spec": asdict(spec), "engine": engine, "concurrency": concurrency})
    deadline_per_step = None
    if spec.step_timeout is not None:
        deadline_per_step = spec.step_timeout * (spec.warmup + spec.repeats) + STEP_DEADLINE_GRACE_SECONDS
    with tempfile.TemporaryFile(mode="w+") as stderr:
        process = subprocess.Popen(
            [sys.executable, "-m", "eval.bench", "--worker"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=stderr, text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        process.stdin.write(job)
        process.stdin.close()
        selector = selectors.DefaultSelector()
        selector.register(process.stdout, selectors.EVENT_READ)
        next_step = 1
        timeout = WORKER_START_TIMEOUT_SECONDS
        finished = False
        try:
            while True:
                if not selector.select(timeout=timeout):
                    process.kill()
                    _record_failure(run, "timeout", next_step, f"no result within {timeout:g} s; the worker was stopped")
                    break
                line = process.stdout.readline()
                if not line:
                    break
                event = json.loads(line)
                kind = event.pop("event")
                if kind == "ready":
                    run["parameters"] = event["parameters"]
                    run["rss_after_build_bytes"] = event["rss_after_build_bytes"]
                    timeout = deadline_per_step
                elif kind == "step":
                    index = event["step"] - 1
                    run["ms_per_step"][index] = statistics.median(event["ms"])
                    run["ms_min"][index] = min(event["ms"])
                    run["ms_max"][index] = max(event["ms"])
                    run["state_bytes"][index] = event["state_bytes"]
                    run["peak_rss_bytes"] = event["peak_rss_bytes"]
                    run["steps_completed"] = event["step"]
                    next_step = event["step"] + 1
                    if on_step is not None:
                        on_step(engine, concurrency, event["step"], run["ms_per_step"][index])
                elif kind in ("timeout", "out_of_memory", "error"):
                    _record_failure(run, kind, event["step"], event["message"])
                elif kind == "done":
                    run["peak_rss_bytes"] = event["peak_rss_bytes"]
                    run["peak_device_bytes"] = event["peak_device_bytes"]
                    finished = True
        finally:
            process.stdout.close()
            returncode = process.wait()
        if not finished and run["status"] == "ok":
            stderr.seek(0)
            tail = stderr.read()[-2000:].strip()
            if returncode == -9:
                _record_failure(run, "out_of_memory", next_step, "the worker was killed by SIGKILL (most likely the kernel's out-of-memory killer)")
            else:
                _record_failure(run, "error", next_step, f"the worker exited with status {returncode}: {tail}")
    if run["status"] != "ok":
        logger.warning("%s at concurrency %d: %s at step %s: %s", engine, concurrency, run["status"], run["failed_at_step"], run["message"])
    _add_throughput(run, spec, concurrency)
    return run


def _add_throughput(run: dict, spec: BenchSpec, concurrency: int) -> None:
    completed = run["steps_completed"]
    if not completed:
        return
    seconds = sum(run["ms_per_step"][:completed]) / 1000.0
    step_tokens = tokens_per_step(spec.resolved_image_tokens(), spec.action_tokens)
    run["tokens_per_s"] = concurrency * step_tokens * completed / seconds
    run["action_tokens_per_s"] = concurrency * spec.action_tokens * completed / seconds


def _speed_ratio(fast: dict | None, slow: dict | None) -> dict:
    """Speed of `fast` over `slow`: at the last step and over the steps both completed."""
    if not fast or not slow:
        return {"last_step": None, "overall": None, "steps_compared": 0}
    common = min(fast["steps_completed"], slow["steps_completed"])
    if common == 0:
        return {"last_step": None, "overall": None, "steps_compared": 0}
    overall = sum(slow["ms_per_step"][:common]) / sum(fast["ms_per_step"][:common])
    return {
        "last_step": slow["ms_per_step"][common - 1] / fast["ms_per_step"][common - 1],
        "overall": overall,
        "steps_compared": common,
    }


def report_steps(steps: int) -> list[int]:
    """Steps shown in tables and checked by targets: 1, 16, 64 and the last, where they exist."""
    return sorted({s for s in (1, 16, 64, steps) if s <= steps})


def _check(target: str, value: float | None, met: bool | None) -> dict:
    return {"target": target, "value": value, "met": met}


def evaluate_targets(spec: BenchSpec, engines: dict) -> list[dict]:
    """Compare the measured figures with the targets the hybrid is built to meet."""
    checks = []
    step_tokens = tokens_per_step(spec.resolved_image_tokens(), spec.action_tokens)
    window = language_config(spec.preset).attention_window
    for concurrency in spec.concurrency:
        key = str(concurrency)
        hybrid = engines.get("hybrid", {}).get("runs", {}).get(key)
        twin = engines.get("transformer", {}).get("runs", {}).get(key)
        stock = engines.get("hf-nemotron-h", {}).get("runs", {}).get(key)
        if hybrid and twin:
            ratio = _speed_ratio(hybrid, twin)["overall"]
            checks.append(_check(f"concurrency {key}: hybrid throughput >= 2x the transformer twin's (whole episode)",
                                 ratio, None if ratio is None else ratio >= 2.0))
        if hybrid and hybrid["steps_completed"] == spec.steps and spec.steps > 1:
            growth = hybrid["ms_per_step"][-1] / hybrid["ms_per_step"][0]
            checks.append(_check(f"concurrency {key}: hybrid step {spec.steps} time <= 1.15x step 1", growth, growth <= 1.15))
            if window is not None:
                fill_step = math.ceil(window / step_tokens)
                tail = hybrid["state_bytes"][fill_step - 1:]
                if tail:
                    checks.append(_check(f"concurrency {key}: hybrid state bytes constant from step {fill_step} (window full)",
                                         float(len(set(tail))), len(set(tail)) == 1))
        if twin and twin["steps_completed"] >= 3:
            sizes = twin["state_bytes"][:twin["steps_completed"]]
            increments = {b - a for a, b in zip(sizes, sizes[1:])}
            checks.append(_check(f"concurrency {key}: transformer twin state grows linearly (equal increments)",
                                 float(len(increments)), len(increments) == 1))
        if hybrid and stock:
            for step in report_steps(spec.steps):
                ours, theirs = hybrid["ms_per_step"][step - 1], stock["ms_per_step"][step - 1]
                ratio = None if ours is None or theirs is None else theirs / ours
                checks.append(_check(f"concurrency {key}: hybrid >= 2x faster than hf-nemotron-h at step {step}",
                                     ratio, None if ratio is None else ratio >= 2.0))
    return checks


def run_bench(spec: BenchSpec, command: str, on_step=None) -> dict:
    """Run every engine at every concurrency and return the results object (see results.json)."""
    from eval.provenance import code_version, machine_info, now_iso

    spec.validate()
    if spec.device == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise RuntimeError(
                "--device cuda was requested but torch sees no CUDA device "
                f"(torch {torch.__version__}, CUDA build {torch.version.cuda or 'none'}); run with --device cpu"
            )
    engines: dict[str, dict] = {
        name: {
            "description": describe_engine(name, spec.preset),
            "pattern": _engine_pattern(name, spec.preset),
            "runs": {},
        }
        for name in spec.engines
    }
    for concurrency in spec.concurrency:
        for name in spec.engines:
            logger.info("running %s at concurrency %d", name, concurrency)
            run = run_engine(spec, name, concurrency, on_step)
            engines[name]["parameters"] = run["parameters"]
            engines[name]["runs"][str(concurrency)] = run
    ratios = {}
    if "hybrid" in engines and "transformer" in engines:
        for concurrency in spec.concurrency:
            key = str(concurrency)
            ratios[key] = _speed_ratio(engines["hybrid"]["runs"][key], engines["transformer"]["runs"][key])
    step_tokens = tokens_per_step(spec.resolved_image_tokens(), spec.action_tokens)
    return {
        "preset": spec.preset,
        "command": command,
        "code_version": code_version(),
        "date": now_iso(),
        "machine": machine_info(),
        "device": spec.device,
        "dtype": "bfloat16" if spec.device == "cuda" else "float32",
        "spec": asdict(spec),
        "workload": {
            "steps": spec.steps,
            "image_tokens": spec.resolved_image_tokens(),
            "action_tokens": spec.action_tokens,
            "special_tokens_per_step": SPECIAL_TOKENS_PER_STEP,
            "tokens_per_step": step_tokens,
            "weights": "random with a fixed seed: speed does not depend on the values",
            "image_embeddings": "random with a fixed seed, the same for every engine: the vision encoder "
                                "would be shared, so only the language models are compared",
            "timing": f"median of {spec.repeats} timed runs of each step after {spec.warmup} warm-up run(s), "
                      "each from the same state",
        },
        "memory_method": CUDA_MEMORY_METHOD if spec.device == "cuda" else MEMORY_METHOD,
        "engines": engines,
        "throughput_ratio": ratios,
        "targets": evaluate_targets(spec, engines),
    }


def _engine_pattern(engine: str, preset: str) -> str:
    config = engine_config(engine, preset)
    if engine == "hf-llama":
        return "*-" * config.layer_kinds.count("attention")
    return config.pattern


# Plot ----------------------------------------------------------------------------------------


def plot_results(results: dict, path: str | Path) -> Path:
    """Plot step time and state memory against the step number for every engine and concurrency."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (time_axis, state_axis) = plt.subplots(1, 2, figsize=(11, 4.2))
    styles = ["-", "--", ":", "-."]
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    concurrencies = results["spec"]["concurrency"]
    for engine_index, (name, engine) in enumerate(results["engines"].items()):
        color = colors[engine_index % len(colors)]
        for style_index, concurrency in enumerate(concurrencies):
            run = engine["runs"].get(str(concurrency))
            if run is None or not run["steps_completed"]:
                continue
            done = run["steps_completed"]
            steps = list(range(1, done + 1))
            label = f"{name} x{concurrency}"
            style = styles[style_index % len(styles)]
            time_axis.plot(steps, run["ms_per_step"][:done], style, color=color, label=label)
            time_axis.fill_between(steps, run["ms_min"][:done], run["ms_max"][:done], color=color, alpha=0.15)
            state_axis.plot(steps, [b / 2**20 for b in run["state_bytes"][:done]], style, color=color, label=label)
            if run["status"] != "ok":
                time_axis.plot([done], [run["ms_per_step"][done - 1]], "x", color=color, markersize=9)
    workload = results["workload"]
    figure.suptitle(
        f"{results['preset']} on {results['device']}: {workload['image_tokens']} image + "
        f"{workload['action_tokens']} action tokens per step (x: stopped by timeout or error)",
        fontsize=10,
    )
    time_axis.set(xlabel="step", ylabel="ms per step (median, band: min-max)", yscale="log")
    state_axis.set(xlabel="step", ylabel="session state (MiB, whole batch)")
    for axis in (time_axis, state_axis):
        axis.grid(alpha=0.3)
    if state_axis.get_legend_handles_labels()[0]:
        state_axis.legend(fontsize=7, loc="upper left")
    figure.tight_layout()
    path = Path(path)
    figure.savefig(path, dpi=90)
    plt.close(figure)
    return path


if __name__ == "__main__":
    if sys.argv[1:] == ["--worker"]:
        sys.exit(worker_main())
    sys.exit("usage: python -m eval.bench --worker (a job as JSON on stdin); run benchmarks with `holdfast bench`")
