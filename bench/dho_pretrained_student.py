"""Experiment (issue 6): does DHO beat single-head KD when the student starts pretrained, as the
paper's ImageNet-pretrained students do? Plain PyTorch on the package's models and data.

    .venv/bin/python bench/dho_pretrained_student.py teacher=noshear sdom=noisy frac=0.1
    (keys: teacher, sdom (student pretraining domain or none), frac, steps, seeds, lr, kinds)

Domains are MNIST-1D made by `mnist1d.data.make_dataset` with other arguments: `noshear`
(seed 123, no shear or scale jitter) and `noisy` (seed 321, correlated noise 0.6, iid 0.1);
`std` is the standard set. The teacher (64-channel cnn1d, 3000 steps) is trained on its domain,
the 15-channel student optionally pretrained on another (2000 steps), then trained on the
standard split with `frac` of its labels plus the 25k transfer set, equal labelled and
unlabelled halves in every batch of 256, 0.5 CE + 0.5 T²-KL at T = 2 (the reference code's
weights). `dho` adds a distillation head (a copy of the label head) and mixes the heads at
α 0.5, β 1; `dho-search` holds 20% of the labelled rows out and picks (α, β) on them from the
reference code's grid. Prints mean ± std test accuracy over seeds.
"""

from __future__ import annotations

import copy
import sys

import numpy as np
import torch
import torch.nn.functional as F
from mnist1d.data import get_dataset_args, make_dataset

from distill.data.mnist1d import generated
from distill.kd.methods.logits import kept_labels
from distill.registry import MODELS

DOMAINS = {"noshear": dict(seed=123, shear_scale=0, scale_coeff=0),
           "noisy": dict(seed=321, corr_noise_scale=0.6, iid_noise_scale=0.1)}
BETAS = [0.5, 0.75, 1.0, 1.25, 1.5, 2.0, 4.0]


def domain(seed: int, **changes: float) -> tuple[torch.Tensor, torch.Tensor]:
    args = get_dataset_args()
    args.num_samples, args.seed = 5000, seed
    for key, value in changes.items():
        setattr(args, key, value)
    d = make_dataset(args)
    x, y = np.concatenate([d["x"], d["x_test"]]), np.concatenate([d["y"], d["y_test"]])
    return torch.tensor(x, dtype=torch.float32)[:, None], torch.tensor(y)


def cnn(channels: int) -> torch.nn.Module:
    return MODELS.get("cnn1d")(name="cnn1d", channels=channels).make_classifier((1, 40), 10)


def train_supervised(model, x, y, steps, lr, batch=128, weight_decay=0.0, seed=0):
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    for _ in range(steps):
        i = torch.randint(len(x), (batch,), generator=gen)
        loss = F.cross_entropy(model(x[i]), y[i])
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
    return model.eval()


def accuracy(logits: torch.Tensor, y: torch.Tensor) -> float:
    return (logits.argmax(-1) == y).float().mean().item() * 100


def main() -> None:
    cfg = dict(arg.split("=") for arg in sys.argv[1:])
    frac, steps, lr = float(cfg.get("frac", 0.1)), int(cfg.get("steps", 800)), float(cfg.get("lr", 3e-2))
    seeds = [int(s) for s in cfg.get("seeds", "0,1,2").split(",")]
    torch.set_num_threads(1)
    std = generated(5000, 42)
    x, y = torch.tensor(std["x"], dtype=torch.float32)[:, None], torch.tensor(std["y"])
    x_test, y_test = torch.tensor(std["x_test"], dtype=torch.float32)[:, None], torch.tensor(std["y_test"])
    more = generated(25000, 7)
    transfer = torch.tensor(np.concatenate([more["x"], more["x_test"]]), dtype=torch.float32)[:25000, None]

    torch.manual_seed(100)
    tdom = cfg.get("teacher", "noshear")
    tx, ty = (x, y) if tdom == "std" else domain(**DOMAINS[tdom])
    teacher = train_supervised(cnn(64), tx, ty, 3000, 1e-2, weight_decay=0.01)
    with torch.no_grad():
        print("teacher on the target split", accuracy(teacher(x_test), y_test))
    pretrained = None
    if cfg.get("sdom", "noisy") != "none":
        torch.manual_seed(200)
        pretrained = train_supervised(cnn(15), *domain(**DOMAINS[cfg.get("sdom", "noisy")]), 2000, 3e-2, batch=256)
        with torch.no_grad():
            print("pretrained student on the target split", accuracy(pretrained(x_test), y_test))
    rows = torch.cat([x, transfer])
    with torch.no_grad():
        teacher_logits = torch.cat([teacher(c) for c in rows.split(4096)])

    def run(kind: str, seed: int):
        torch.manual_seed(seed)
        labels = kept_labels(y, frac, seed)
        lab = (labels != -100).nonzero().flatten()
        unl = torch.cat([(labels == -100).nonzero().flatten(), torch.arange(len(x), len(rows))])
        if kind == "dho-search":
            perm = lab[torch.randperm(len(lab), generator=torch.Generator().manual_seed(seed))]
            val, lab = perm[: len(lab) // 5], perm[len(lab) // 5:]
            unl = torch.cat([unl, val])
        model = cnn(15)
        if pretrained is not None:
            model.load_state_dict(pretrained.state_dict())
        dual = kind.startswith("dho")
        distill_head = copy.deepcopy(model.head) if dual else None
        params = list(model.parameters()) + (list(distill_head.parameters()) if dual else [])
        opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
        gen, temp = torch.Generator().manual_seed(seed + 1000), 2.0
        all_labels = torch.cat([labels, torch.full((len(transfer),), -100)])
        for _ in range(steps):
            i = torch.cat([lab[torch.randint(len(lab), (128,), generator=gen)],
                           unl[torch.randint(len(unl), (128,), generator=gen)]])
            features = model.blocks(rows[i]).flatten(1)
            z_label = model.head(features)
            z_distill = distill_head(features) if dual else z_label
            yi = all_labels[i]
            ce = F.cross_entropy(z_label[yi != -100], yi[yi != -100])
            kl = F.kl_div(F.log_softmax(z_distill / temp, -1), F.log_softmax(teacher_logits[i] / temp, -1),
                          log_target=True, reduction="batchmean") * temp**2
            loss = 0.5 * ce + 0.5 * kl
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
        with torch.no_grad():
            features = model.blocks(x_test).flatten(1)
            z_label = model.head(features)
            if not dual:
                return accuracy(z_label, y_test), None
            z_distill = distill_head(features)

            def mixed(zl, zd, a, b):
                return (1 - a) * zl.softmax(-1) + a * (zd / b).softmax(-1)

            out = {"label": accuracy(z_label, y_test), "distill": accuracy(z_distill, y_test),
                   "mix.5": accuracy(mixed(z_label, z_distill, 0.5, 1.0), y_test)}
            if kind == "dho-search":
                fv = model.blocks(x[val]).flatten(1)
                vl, vd = model.head(fv), distill_head(fv)
                best = max((accuracy(mixed(vl, vd, a, b), y[val]), -abs(a - 0.5), a, b)
                           for b in BETAS for a in np.arange(0, 1.01, 0.05))
                out["searched"] = accuracy(mixed(z_label, z_distill, best[2], best[3]), y_test)
                return out["searched"], out
            return out["mix.5"], out

    for kind in cfg.get("kinds", "kd,dho,dho-search").split(","):
        results = [run(kind, s) for s in seeds]
        values = [r[0] for r in results]
        print(f"{kind:12s} {np.mean(values):.1f} ± {np.std(values):.1f}",
              [r[1] for r in results] if results[0][1] else "", flush=True)


if __name__ == "__main__":
    main()
