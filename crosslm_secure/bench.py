"""``crosslm bench``: each cost of the framework as a ratio against its baseline, in one run.

Rows (all measured in this process or its children, on this machine, now):

- ``dp_step``: a DP-SGD step (ghost clipping) / a non-private step (``benchmarks/dp_overhead.py``);
- ``ckks_round``: a CKKS feedback round / a plaintext round, with bytes per score
  (``benchmarks/he_costs.py``);
- ``llm_eval``: LLM label scoring, fast path (shared prefix, length buckets) / reference path;
- ``sweep_cell_round0``: a cell's round-0 LLM evaluation with a warm cache / computing it;
- ``generation``: a seeded synthetic batch drawn inside the top-p nucleus / transformers'
  full-sort top-p and vocabulary-wide sampling (the note gives each side's tokens: the draws differ);
- ``tuning``: LoRA tuning steps with the batch's shared prompt prefix run once / every full
  sequence (``server/tuning_loss.py``; the note gives the largest loss difference);
- ``sweep_cell``: a whole standalone cell (round 0 and one private round) at another epsilon
  after a first cell filled the caches / the first cell (round-0 LLM results, public centre,
  every client's embeddings from its site cache).

``--scale`` adds the aggregation scale grid: K clients x N scores per round (time and bytes
per round, and the decryptor's share of the time). Results go to ``benchmarks/results/bench-<date>.json``
and one dated row is appended to the table in ``benchmarks/README.md``.

Timings on a shared CPU are noisy: each ratio times both sides back to back, and the load
average is recorded with the results.
"""

from __future__ import annotations

import importlib.util
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

BENCH_DIR = Path(__file__).resolve().parents[1] / "benchmarks"
TABLE_START = "<!-- bench-rows -->"
COLUMNS = ("dp_step", "ckks_round", "llm_eval", "sweep_cell_round0", "generation", "sweep_cell", "tuning")
"""The ratio columns of the README's history table, in order."""


def _script(name: str) -> Any:
    """Import ``benchmarks/<name>.py`` (the benchmarks are scripts, not a package)."""
    path = BENCH_DIR / f"{name}.py"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found; run crosslm bench from a checkout of the repository")
    spec = importlib.util.spec_from_file_location(f"crosslm_bench_{name}", path)
    module = importlib.util.module_from_spec(spec)
    assert spec.loader is not None
    spec.loader.exec_module(module)
    return module


def _timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    start = time.perf_counter()
    value = fn()
    return value, time.perf_counter() - start


def dp_step(steps: int = 3, batch: int = 16) -> dict:
    """Seconds per step, ghost-clipping DP-SGD vs non-private, each in its own process."""
    rows = {}
    for mode in ("plain", "ghost"):
        out = subprocess.run(
            [sys.executable, str(BENCH_DIR / "dp_overhead.py"), "--steps", str(steps), "--batch", str(batch)]
            + ["--max-length", "48", "--worker", mode],
            check=True,
            capture_output=True,
            text=True,
        )
        rows[mode] = json.loads(out.stdout.strip().splitlines()[-1])["seconds_per_step"]
    return {"name": "dp_step", "baseline_s": rows["plain"], "measured_s": rows["ghost"], "note": f"batch {batch}"}


def _plain_round(k: int, count: int) -> tuple[float, int]:
    from crosslm_secure.aggregation.plaintext import PlaintextAggregator

    agg = PlaintextAggregator()
    sites = [f"client-{i}" for i in range(k)]
    scores = np.random.default_rng(k).random((k, count))
    start = time.perf_counter()
    blobs = [agg.protect(s, round_index=0, participants=sites).contribution for s in scores]
    agg.reveal(agg.combine(blobs), blobs, count=count)
    return time.perf_counter() - start, len(blobs[0])


def ckks_round(k: int = 3, count: int = 1000, preset: str = "n8192") -> dict:
    """One protected round (all clients protect, server combines, decryptor verifies and reveals)."""
    he = _script("he_costs").measure(preset, k, count, repeat=1)
    ckks_s = he["protect_s_per_client"] * k + he["combine_s"] + he["reveal_s"]
    plain_s, plain_bytes = _plain_round(k, count)
    return {
        "name": "ckks_round",
        "baseline_s": plain_s,
        "measured_s": ckks_s,
        "note": f"K={k}, {count} scores: {he['bytes_per_score']:.0f} B/score vs {plain_bytes / count:.0f}",
        "bytes_per_score": he["bytes_per_score"],
        "plaintext_bytes_per_score": plain_bytes / count,
    }


def _eval_inputs(examples: int, config: str) -> tuple[Any, Any, Any, list]:
    from crosslm_secure.config import load_config
    from crosslm_secure.data.loaders import load_labelled_data
    from crosslm_secure.data.partition import partition_clients
    from crosslm_secure.models.llm import load_llm
    from crosslm_secure.models.slm import quiet_transformers

    cfg = load_config(config)
    train, test = load_labelled_data(cfg.data, cfg.task, seed=cfg.run.seed)
    split = partition_clients(train, test, cfg.partition, cfg.client_ids(), seed=cfg.run.seed)
    import torch

    with quiet_transformers():
        llm = load_llm(cfg.llm, torch.device("cpu"))
    return cfg, llm, split, split.llm_test[:examples]


def llm_eval_and_cache(examples: int, config: str) -> list[dict]:
    """Fast vs reference label scoring on the config's LLM and evaluator set; warm vs cold round-0 cache."""
    from crosslm_secure.cache import ContentCache, content_key
    from crosslm_secure.eval.llm_eval import classification_prompt, label_logits, label_token_ids, llm_perplexity

    cfg, llm, _, chosen = _eval_inputs(examples, config)
    prompts = [classification_prompt(llm.tokenizer, cfg.task, e.text, cfg.eval.llm_max_length) for e in chosen]
    targets = label_token_ids(llm.tokenizer, cfg.task)
    batch = cfg.eval.llm_batch_size
    # CPU seconds too: on a loaded machine they follow the work done better than wall time.
    start_cpu = time.process_time()
    reference, ref_s = _timed(lambda: label_logits(llm, prompts, targets, batch, fast=False))
    middle_cpu = time.process_time()
    fast, fast_s = _timed(lambda: label_logits(llm, prompts, targets, batch, fast=True))
    ref_cpu, fast_cpu = middle_cpu - start_cpu, time.process_time() - middle_cpu
    same = bool((fast.argmax(1) == reference.argmax(1)).all())
    eval_row = {
        "name": "llm_eval",
        "baseline_s": ref_s,
        "measured_s": fast_s,
        "note": f"{len(prompts)} prompts; max |logit diff| {float((fast - reference).abs().max()):.1e}; "
        f"same predictions: {same}; CPU s {fast_cpu:.1f} / {ref_cpu:.1f}",
        "cpu_s": {"fast": fast_cpu, "reference": ref_cpu},
    }

    def round0() -> dict:
        scores = label_logits(llm, prompts, targets, batch, fast=True)
        return {"predictions": scores.argmax(1).tolist(), "perplexity": llm_perplexity(llm, cfg.eval, progress=False)}

    with tempfile.TemporaryDirectory() as folder:
        cache = ContentCache(folder)
        key = content_key("bench_round0", llm.fingerprint, len(prompts))
        _, cold_s = _timed(lambda: cache.get_or_compute("bench", key, round0))
        _, warm_s = _timed(lambda: cache.get_or_compute("bench", key, round0))
    cache_row = {
        "name": "sweep_cell_round0",
        "baseline_s": cold_s,
        "measured_s": warm_s,
        "note": "round-0 LLM eval + perplexity: cache hit / computed",
    }
    return [eval_row, cache_row]


def generation(samples_per_label: int, config: str) -> dict:
    """One seeded synthetic batch: drawn inside the top-p nucleus / transformers' top-p.

    The two draw from the same distribution with different random streams, so their samples
    differ; the note gives each side's generated tokens, which the time depends on.
    """
    from crosslm_secure.models.sampling import reference_processors
    from crosslm_secure.server.generation import generate_synthetic

    cfg, llm, _, _ = _eval_inputs(0, config)
    gen = cfg.generation.model_copy(update={"samples_per_label": samples_per_label})

    def tokens(**sampling: Any) -> int:
        samples = generate_synthetic(llm, cfg.task, gen, round_index=1, seed=cfg.run.seed, progress=False, **sampling)
        return sum(len(llm.tokenizer(s.text, add_special_tokens=False)["input_ids"]) for s in samples)

    ours, ours_s = _timed(tokens)
    theirs, theirs_s = _timed(lambda: tokens(sampling=reference_processors))
    return {
        "name": "generation",
        "baseline_s": theirs_s,
        "measured_s": ours_s,
        "note": f"tokens in the kept samples: {ours} / {theirs}",
    }


def tuning(count: int, config: str) -> dict:
    """LoRA tuning steps on the config's LLM: shared prompt prefix run once / every full sequence.

    The items are the job's own (``build_tuning_items`` at the config's ``tuning.weighting``) on the
    evaluator's texts standing in for synthetic samples, in a seeded random order like tuning's.
    """
    import torch

    from crosslm_secure.data.records import SyntheticSample
    from crosslm_secure.models.lora import add_lora
    from crosslm_secure.server.tuning import build_tuning_items
    from crosslm_secure.server.tuning_loss import sequence_losses

    cfg, llm, _, chosen = _eval_inputs(count, config)
    llm.model = add_lora(llm.model, cfg.llm.lora, seed=cfg.run.seed)
    samples = [SyntheticSample(f"bench-{i}", e.text, e.label) for i, e in enumerate(chosen)]
    rng = np.random.default_rng(cfg.run.seed)
    scores = rng.uniform(0.0, 1.0, len(samples))
    items = build_tuning_items(
        llm.tokenizer, samples, scores, cfg.task, cfg.tuning, accepted=scores >= 0.5, weighting=cfg.tuning.weighting
    )
    items = [items[k] for k in rng.permutation(len(items))][:count]
    size, pad = cfg.tuning.batch_size, llm.tokenizer.pad_token_id
    llm.model.eval()  # no LoRA dropout, so the two losses compare; the arithmetic is tuning's

    def steps(share: bool) -> list[torch.Tensor]:
        losses = []
        for start in range(0, len(items), size):
            per_item = sequence_losses(llm.model, items[start : start + size], pad, share_prefix=share)
            per_item.sum().backward()
            losses.append(per_item.detach())
        llm.model.zero_grad(set_to_none=True)
        return losses

    sequence_losses(llm.model, items[:size], pad).sum().backward()  # untimed: the first call's set-up
    llm.model.zero_grad(set_to_none=True)
    shared, shared_s = _timed(lambda: steps(True))
    full, full_s = _timed(lambda: steps(False))
    diff = max(float((a - b).abs().max()) for a, b in zip(shared, full, strict=True))
    return {
        "name": "tuning",
        "baseline_s": full_s,
        "measured_s": shared_s,
        "note": f"{len(items)} items in batches of {size}; max |loss diff| {diff:.1e}",
    }


def sweep_cell(config: str) -> dict:
    """A standalone cell at epsilon 4 after a cell at epsilon 8 filled the caches / that first cell."""
    from crosslm_secure.cache import ENV_VAR
    from crosslm_secure.config import load_config
    from crosslm_secure.runner import run_job

    before = os.environ.get(ENV_VAR)
    with tempfile.TemporaryDirectory() as folder:
        os.environ[ENV_VAR] = str(Path(folder) / "cache")
        try:
            seconds = []
            for epsilon in (8, 4):
                overrides = [
                    "run.method=standalone",
                    "run.rounds=1",
                    "run.progress=false",
                    f"run.output_dir={Path(folder) / 'runs'}",
                    f"privacy.target_epsilon={epsilon}",
                ]
                _, took = _timed(lambda o=overrides: run_job(load_config(config, o), log=lambda _line: None))
                seconds.append(took)
        finally:
            if before is None:
                os.environ.pop(ENV_VAR, None)
            else:
                os.environ[ENV_VAR] = before
    return {
        "name": "sweep_cell",
        "baseline_s": seconds[0],
        "measured_s": seconds[1],
        "note": "standalone, 1 round: eps 4 with the caches eps 8 filled / eps 8 from empty caches",
    }


def scale(clients: tuple[int, ...] = (3, 10, 30, 100), counts: tuple[int, ...] = (100, 1000, 10000)) -> list[dict]:
    """CKKS feedback round time and bytes vs K clients and N scores; the decryptor's share of the time."""
    measure = _script("he_costs").measure
    rows = []
    for k in clients:
        for count in counts:
            he = measure("n8192", k, count, repeat=1)
            client_s = he["protect_s_per_client"]
            total = client_s * k + he["combine_s"] + he["reveal_s"]
            rows.append(
                {
                    "K": k,
                    "N": count,
                    "round_s_serial": total,
                    "client_protect_s": client_s,
                    "server_combine_s": he["combine_s"],
                    "decryptor_reveal_s": he["reveal_s"],
                    "round_s_parallel_clients": client_s + he["combine_s"] + he["reveal_s"],
                    "bytes_per_round": he["contribution_bytes"] * k + he["aggregate_bytes"],
                }
            )
            print(_scale_line(rows[-1]), flush=True)
    return rows


def _scale_line(r: dict) -> str:
    slowest = max(
        ("client", r["client_protect_s"]),
        ("server", r["server_combine_s"]),
        ("decryptor", r["decryptor_reveal_s"]),
        key=lambda x: x[1],
    )
    return (
        f"K={r['K']:>3} N={r['N']:>5}  round {r['round_s_parallel_clients']:7.2f} s (clients in parallel; "
        f"{r['round_s_serial']:7.2f} s serial)  client {r['client_protect_s']:.3f}  "
        f"server {r['server_combine_s']:.3f}  "
        f"decryptor {r['decryptor_reveal_s']:.3f}  {r['bytes_per_round'] / 1e6:8.1f} MB  slowest: {slowest[0]}"
    )


def run_bench(
    *,
    examples: int = 48,
    config: str = "experiments/configs/default.yaml",
    with_scale: bool = False,
    out_dir: Path | None = None,
    readme: Path | None = None,
    log: Callable[[str], None] = print,
) -> dict:
    """Run every row, print the ratio table, write the JSON and append the dated README row."""
    load_before = os.getloadavg()[0]
    rows: list[dict] = []
    steps = (
        lambda: [dp_step()],
        lambda: [ckks_round()],
        lambda: llm_eval_and_cache(examples, config),
        lambda: [generation(16, config)],
        lambda: [sweep_cell(config)],
        lambda: [tuning(32, config)],
    )
    for step in steps:
        for row in step():
            row["ratio"] = row["measured_s"] / row["baseline_s"] if row["baseline_s"] else float("nan")
            rows.append(row)
            log(
                f"{row['name']:<18} {row['measured_s']:9.3f} s / {row['baseline_s']:9.3f} s = {row['ratio']:7.3f}x  "
                f"{row['note']}"
            )
    log("flower_round       not measured by bench (slow; see benchmarks/README.md for the measured figures)")
    result: dict[str, Any] = {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count(), "platform": platform.platform()},
        "load_average": [load_before, os.getloadavg()[0]],
        "rows": rows,
    }
    if with_scale:
        result["scale"] = scale()
    out_dir = out_dir or BENCH_DIR / "results"
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"bench-{datetime.now(UTC).strftime('%Y%m%dT%H%M%S')}.json"
    path.write_text(json.dumps(result, indent=2) + "\n")
    log(f"wrote {path}")
    append_row(readme or BENCH_DIR / "README.md", result)
    return result


def append_row(readme: Path, result: dict) -> None:
    """Append one dated row of ratios under the ``bench-rows`` marker of ``readme`` (atomic rewrite)."""
    ratios = {r["name"]: r["ratio"] for r in result["rows"]}
    cells = [result["date"], f"{result['load_average'][0]:.1f}"] + [
        f"{ratios[n]:.3f}" if n in ratios else "" for n in COLUMNS
    ]
    text = readme.read_text() if readme.is_file() else ""
    if TABLE_START not in text:
        text += (
            f"\n## `crosslm bench` history (ratio = measured / baseline)\n\n{TABLE_START}\n"
            "| date | load | DP step / plain | CKKS round / plaintext | eval fast / reference "
            "| round 0 cached / computed | generation ours / transformers | sweep cell warm / cold "
            "| tuning shared prefix / full |\n"
            "|---|---|---|---|---|---|---|---|---|\n"
        )
    text = text.rstrip("\n") + "\n| " + " | ".join(cells) + " |\n"
    tmp = readme.with_suffix(".md.tmp")
    tmp.write_text(text)
    os.replace(tmp, readme)
