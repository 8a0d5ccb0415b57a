"""The judge's verdict on prior samples against the training budget: for each number of
epochs, train (or load: the checkpoints are the main job's, keyed by the config) the chosen
models of Table 2 at the quick profile with that budget, draw 2,000 prior samples and report
the share the judge recognises with confidence >= 0.9 and the classes covered (>= 1 % of
the samples), as notebook 04's samples table does. A checkpoint resumes to a larger budget, so
the rows of one run train each model once, to the largest budget. It measures what budget a
model needs to do what its kind does; the main job's budget is the profile's. Set
FA_OUTPUT_ROOT to a scratch folder to start from no checkpoints.

    python -m benchmarks.judge_curve [--epochs 12 24 48] [--models VFA VFA-GAN]

Prints a Markdown table (seconds: the training that row added, all models together).
"""
import argparse
import time

import torch

from fa_utils import config, experiments, fid, models


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--epochs", type=int, nargs="+", default=[12, 24, 48])
    ap.add_argument("--models", nargs="+", default=["VFA", "VFA-GAN"],
                    choices=[m.name for m in experiments.MODELS if m.sample])
    ap.add_argument("--samples", type=int, default=2000)
    args = ap.parse_args()
    wanted = [m for m in experiments.MODELS if m.name in args.models]
    needs = {"VFA-GAN": "VFA"}  # VFA-GAN refines VFA's encoder: train it first
    train = [m for m in experiments.MODELS
             if m.name in args.models or m.name in {needs.get(w.name) for w in wanted}]
    rows = []
    for epochs in args.epochs:
        gcfg = config.make_config("vfagan", "quick", epochs=epochs)
        data = experiments.load_image_data(gcfg, verbose=False)
        vcfg = experiments.vfa_config_for(gcfg, 0)
        trial = experiments.Trial(0, vcfg, experiments.vfa_settings(vcfg))
        start = time.perf_counter()
        with models.scaled_architectures(gcfg.width_scale):
            for m in train:
                *nets, trial.histories[m.name] = m.train(gcfg, data, trial, False)
                trial.nets[m.name] = tuple(nets)
        seconds = time.perf_counter() - start
        judge, acc = experiments.train_judge(gcfg, data, progress=False)
        for m in wanted:
            g = torch.Generator().manual_seed(config.SEED_STREAMS["samples"])
            x = torch.cat([m.sample(trial, 500, g).detach().float().cpu()
                           for _ in range(args.samples // 500)])
            top, cls = fid.recognise(judge, x)
            sure = top >= fid.CONFIDENT
            hist = torch.bincount(cls[sure], minlength=10).float() / len(x)
            steps = int(next(iter(trial.histories[m.name].train.values()))[-1][0])
            rows.append((m.name, epochs, steps, f"{sure.float().mean():.3f}",
                         int((hist >= 0.01).sum()), f"{acc:.3f}", f"{seconds:.0f}"))
            print(rows[-1], flush=True)
    print("| model | epochs | optimiser steps | share recognised (>= 0.9) | classes covered "
          "(>= 1 %) | judge held-out accuracy | seconds of training added |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print("| " + " | ".join(map(str, r)) + " |")


if __name__ == "__main__":
    main()
