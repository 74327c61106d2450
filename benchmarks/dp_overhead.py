"""DP-SGD overhead on the default SLM: step time and peak memory, hooks vs ghost clipping.

Run: ``python benchmarks/dp_overhead.py [--steps 5] [--batch 32] [--max-length 48]
[--lora-rank 0] [--device auto]``. Each mode (non-private, DP with per-sample-gradient
hooks, DP with ghost clipping) runs in its own process, so that peak memory (RSS on CPU,
``max_memory_allocated`` on CUDA) is that mode's alone. Prints a table and writes
``benchmarks/results/dp_overhead.json``. Target: ghost <= 1.5x the non-private step.

Batches have a fixed size here (not Poisson) so that every mode times the same work.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import subprocess
import sys
import time
import warnings
from pathlib import Path

import torch

RESULTS = Path(__file__).parent / "results" / "dp_overhead.json"
MODES = ("plain", "hooks", "ghost")


def _texts(n: int) -> tuple[list[str], list[int]]:
    """Real drug reviews when the embedded data is installed, else repeated filler text."""
    from crosslm_secure.config import DataConfig, TaskConfig
    from crosslm_secure.data.loaders import load_labelled_data
    from crosslm_secure.errors import CrossLMError

    try:
        train, _ = load_labelled_data(DataConfig(), TaskConfig(), seed=0)
        train = (train * (n // len(train) + 1))[:n]
        return [e.text for e in train], [e.label for e in train]
    except CrossLMError:
        filler = "the medicine helped with my pain but the side effects were hard to live with " * 4
        return [filler] * n, [i % 3 for i in range(n)]


def _rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_mode(mode: str, args: argparse.Namespace) -> dict:
    """Time ``args.steps`` training steps of one mode after one warm-up step."""
    from opacus import PrivacyEngine
    from torch.utils.data import DataLoader, TensorDataset

    from crosslm_secure.config import SLMConfig
    from crosslm_secure.models.batches import INPUT_KEYS, encode_texts, forward_logits
    from crosslm_secure.models.device import resolve_device
    from crosslm_secure.models.slm import load_slm

    device = resolve_device(args.device)
    torch.manual_seed(0)
    tokenizer, model = load_slm(SLMConfig(), 3, device, seed=0)
    if args.lora_rank:
        from peft import LoraConfig, get_peft_model

        get_peft_model(
            model,
            LoraConfig(r=args.lora_rank, lora_alpha=16, target_modules=["query", "value"], task_type="SEQ_CLS"),
        )
    texts, labels = _texts(args.batch * (args.steps + 1))
    inputs = encode_texts(tokenizer, texts, args.max_length, pad_to_max_length=True)
    dataset = TensorDataset(*(inputs[k] for k in INPUT_KEYS), torch.tensor(labels))
    loader = DataLoader(dataset, batch_size=args.batch)
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-4)
    criterion = torch.nn.CrossEntropyLoss()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    baseline_rss = _rss_mib()
    if mode != "plain":
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            wrapped = PrivacyEngine().make_private(
                module=model,
                optimizer=optimizer,
                criterion=criterion,
                data_loader=loader,
                noise_multiplier=1.0,
                max_grad_norm=1.0,
                poisson_sampling=False,
                grad_sample_mode=mode,
            )
        if mode == "ghost":
            model, optimizer, criterion, loader = wrapped
        else:
            model, optimizer, loader = wrapped
    times = []
    warnings.filterwarnings("ignore", message="Full backward hook is firing")
    for batch in loader:
        batch_inputs = dict(zip(INPUT_KEYS, batch[:-1], strict=True))
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        loss = criterion(forward_logits(model, batch_inputs, device).float(), batch[-1].to(device))
        loss.backward()
        optimizer.step()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - start)
    timed = times[1:]  # the first step warms up kernels and allocators
    result = {
        "mode": mode,
        "seconds_per_step": sum(timed) / len(timed),
        "steps_timed": len(timed),
        "peak_rss_mib": _rss_mib(),
        "rss_growth_mib": _rss_mib() - baseline_rss,
        "trainable_params": sum(p.numel() for p in params),
        "device": str(device),
    }
    if device.type == "cuda":
        result["peak_cuda_mib"] = torch.cuda.max_memory_allocated(device) / 2**20
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=5, help="timed steps per mode (after 1 warm-up)")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--max-length", type=int, default=48)
    parser.add_argument("--lora-rank", type=int, default=0, help="0 = full fine-tuning")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or auto")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = default)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--worker", choices=MODES, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.worker:
        print(json.dumps(run_mode(args.worker, args)))
        return
    forwarded = [
        "--steps",
        str(args.steps),
        "--batch",
        str(args.batch),
        "--max-length",
        str(args.max_length),
        "--lora-rank",
        str(args.lora_rank),
        "--device",
        args.device,
        "--threads",
        str(args.threads),
    ]
    results = {}
    for mode in MODES:
        out = subprocess.run(
            [sys.executable, __file__, *forwarded, "--worker", mode],
            check=True,
            capture_output=True,
            text=True,
        )
        results[mode] = json.loads(out.stdout.strip().splitlines()[-1])
        row = results[mode]
        print(
            f"{mode:6s} {row['seconds_per_step']:.3f} s/step  peak RSS {row['peak_rss_mib']:.0f} MiB"
            + (f"  peak CUDA {row['peak_cuda_mib']:.0f} MiB" if "peak_cuda_mib" in row else ""),
            flush=True,
        )
    plain = results["plain"]["seconds_per_step"]
    summary = {
        "hooks_over_plain": results["hooks"]["seconds_per_step"] / plain,
        "ghost_over_plain": results["ghost"]["seconds_per_step"] / plain,
        "ghost_target": 1.5,
    }
    summary["ghost_meets_target"] = summary["ghost_over_plain"] <= summary["ghost_target"]
    print(
        f"hooks/plain {summary['hooks_over_plain']:.2f}x  ghost/plain {summary['ghost_over_plain']:.2f}x "
        f"(target <= 1.5x: {'met' if summary['ghost_meets_target'] else 'not met'})"
    )
    report = {
        "settings": {k: v for k, v in vars(args).items() if k not in ("worker", "out")},
        "machine": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "cpu_count": torch.get_num_threads(),
            "platform": platform.platform(),
        },
        "modes": results,
        "summary": summary,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
