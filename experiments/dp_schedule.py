"""Choose the head-only SLM's DP-SGD schedule on public data, the documented way.

The defaults in ``crosslm_secure/client/schedule.py`` (100 full-batch steps of plain gradient
descent at learning rate 2 per round) were chosen with this script on a public corpus, the
embedded movie-review data (Pang & Lee), never on a site's private labels. A site that wants
to re-tune runs it on a public corpus of its own domain, with its own record count and budget:

    .venv/bin/python experiments/dp_schedule.py --config experiments/configs/default.yaml
    .venv/bin/python experiments/dp_schedule.py --config my.yaml --epsilon 3 --out schedule.md

It trains every schedule of a small grid through the project's own DPTrainer (real Opacus,
the run's accountant, noise calibrated to the target epsilon over the planned rounds) on the
config's data split into its clients, and prints mean held-out macro-F1 per schedule, with
the non-private result of the same schedule beside it.
"""

from __future__ import annotations

import argparse
import itertools
import math
import tempfile
from pathlib import Path

import numpy as np
import torch

from crosslm_secure.client.features import FeatureCache, own_head, set_public_centre
from crosslm_secure.client.trainers import slm_trainer
from crosslm_secure.config import load_config
from crosslm_secure.eval.metrics import macro_f1
from crosslm_secure.models.slm import load_slm
from crosslm_secure.privacy.ledger import Ledger
from crosslm_secure.runner import prepare_job

GRID = {
    "private_sample_rate": [0.08, 0.5, 1.0],
    "private_steps": [24, 100],
    "private_optimizer": ["sgd", "adamw"],
}
LEARNING_RATES = {"sgd": 2.0, "adamw": 1e-2}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, default=Path("experiments/configs/default.yaml"))
    parser.add_argument("--epsilon", type=float, default=8.0)
    parser.add_argument("--out", type=Path, default=None, help="also write the table to this Markdown file")
    args = parser.parse_args()
    config = load_config(args.config, ["run.progress=false"])
    job = prepare_job(config, None)
    clients = []
    for client in job.split.clients:
        settings = config.slm_for(client.client_id)
        tokenizer, model = load_slm(settings, len(config.task.labels), job.device, seed=0)
        encode = {"max_length": settings.max_length, "batch_size": settings.eval_batch_size}
        set_public_centre(tokenizer, model, **encode)
        cache = FeatureCache()
        centre = model.feature_mean.cpu()

        def features(examples, cache=cache, tokenizer=tokenizer, model=model, encode=encode, centre=centre):
            return (
                cache.features(tokenizer, model, [e.uid for e in examples], [e.text for e in examples], **encode)
                - centre
            )

        clients.append((client, model, features(client.train), features(client.test)))
    lines = [
        f"Schedules on {args.config} ({config.data.source}:{config.data.embedded}), {len(clients)} clients, "
        f"{config.run.rounds} rounds, target epsilon {args.epsilon:g}; mean held-out macro-F1 over clients.",
        "",
        "| sample rate | steps/round | optimizer | lr | macro-F1 DP | macro-F1 non-private |",
        "|---|---|---|---|---|---|",
    ]
    for rate, steps, optimizer in itertools.product(*GRID.values()):
        update = {
            "private_sample_rate": rate,
            "private_steps": steps,
            "private_optimizer": optimizer,
            "private_learning_rate": LEARNING_RATES[optimizer],
        }
        scores = [_score(config, clients, update, dp, args.epsilon) for dp in (True, False)]
        lines.append(
            f"| {rate:g} | {steps} | {optimizer} | {LEARNING_RATES[optimizer]:g} | {scores[0]:.3f} | {scores[1]:.3f} |"
        )
        print(lines[-1], flush=True)
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out is not None:
        args.out.write_text(text)


def _score(config, clients, update: dict, dp: bool, epsilon: float) -> float:
    privacy = config.privacy.model_copy(update={"dp": dp, "target_epsilon": epsilon})
    f1s = []
    for client, model, train_x, test_x in clients:
        settings = config.slm_for(client.client_id).model_copy(update=update)
        head = own_head(model)
        with torch.no_grad():
            head.classifier.reset_parameters()
        labels = torch.tensor([e.label for e in client.train])
        with tempfile.TemporaryDirectory() as folder:
            trainer = slm_trainer(
                settings,
                privacy,
                ledger=Ledger(Path(folder) / "ledger.jsonl", client_id=client.client_id),
                run_id="schedule",
                client_id=client.client_id,
                planned_rounds=config.run.rounds,
                num_records=len(client.train),
                device="cpu",
                seed=0,
                progress=False,
            )
            for round_index in range(1, config.run.rounds + 1):
                trainer.train_private_features(head, train_x, labels, round_index=round_index)
        head.eval()
        with torch.no_grad():
            predictions = head(test_x).argmax(dim=1).tolist()
        f1s.append(macro_f1([e.label for e in client.test], predictions, len(config.task.labels)))
    return float(np.mean(f1s)) if f1s else math.nan


if __name__ == "__main__":
    main()
