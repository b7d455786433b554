"""How fast each deep peer leaves the identity at the start of training, on plain Gaussian noise.

DnCNN's row in docs/peers.md sits at the input's PSNR after unet_ae's budget. This asks
whether that is our data and damage, our training settings, or DnCNN itself: each network
learns one task any denoiser learns, white Gaussian noise of ``--sigma`` on random
``--crop`` px crops of scikit-image's astronaut (a new crop and a new noise draw at every
step, seeded), with plain Adam at ``--lr`` and the mean squared error of its clamped output
(the peers' ``run``, as the crop trainer trains them), no schedule, no validation. Every
``--every`` steps it restores a held-out noisy image (scikit-image's ``chelsea``, the same
noise draw for all) and records its PSNR. Variants of DnCNN (``--variants``): its width, its
learning rate, the batch and crop of its paper (128 x 40 px), orthogonal or Kaiming
initialisation, batch norm removed. Each network is built as the pipeline builds it from
``--params`` (its latent and ``arch.<name>.model``: the peers' small configurations).
``--threads`` threads; times are wall seconds on this
machine (compare rows of one run).

    python benchmarks/bench_peer_start.py [--steps 1500] [--out docs/peers/start]

Writes ``<out>.json`` (conditions, the PSNR curve of every run) and ``<out>.md`` (a table:
held-out PSNR at each checkpoint).
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from aerestore import metrics  # noqa: E402
from aerestore.io import write_json  # noqa: E402
from aerestore.models import create_model  # noqa: E402
from aerestore.params import load_params  # noqa: E402

# name: (network, model kwargs, overrides of lr / batch / crop / init / batch norm)
VARIANTS = {
    "unet_ae": ("unet_ae", {}, {}),
    "nafnet": ("nafnet", {}, {}),
    "drunet": ("drunet", {}, {}),
    "dncnn": ("dncnn", {}, {}),
    "dncnn lr 1e-4": ("dncnn", {}, {"lr": 1e-4}),
    "dncnn orthogonal init": ("dncnn", {}, {"init": "orthogonal"}),
    "dncnn kaiming init": ("dncnn", {}, {"init": "kaiming"}),
    "dncnn no batch norm": ("dncnn", {}, {"bn": False}),
    "dncnn width 64": ("dncnn", {"width": 64}, {}),
    "dncnn batch 128 x 40 px": ("dncnn", {}, {"batch": 128, "crop": 40}),
}


def held_out(sigma: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(noisy, clean) (1, 3, H, W): chelsea with one seeded noise draw."""
    from skimage import data

    clean = torch.tensor(data.chelsea() / 255.0, dtype=torch.float32).permute(2, 0, 1)[None]
    noise = torch.randn(clean.shape, generator=torch.Generator().manual_seed(123))
    return clean + sigma * noise, clean


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    """:func:`aerestore.metrics.psnr` of one (1, C, H, W) output, clamped to [0, 1], against ``b``."""
    return metrics.psnr(a[0].clamp(0, 1).permute(1, 2, 0).numpy(), b[0].permute(1, 2, 0).numpy())


def build(params, net: str, kwargs: dict, opts: dict, seed: int) -> torch.nn.Module:
    """``net`` as the pipeline builds it from ``params`` (its latent and ``arch.<net>.model``),
    with ``kwargs`` on top, then the variant's changes."""
    torch.manual_seed(seed)
    model = create_model(net, latent=params.latent_for(net), block=48, channels=3,
                         **{**params.arch_params(net).model, **kwargs})
    if not opts.get("bn", True):
        body = model.net.body
        for i, layer in enumerate(body):
            if isinstance(layer, torch.nn.BatchNorm2d):
                body[i] = torch.nn.Identity()
    init = opts.get("init")
    for layer in model.modules():
        if init and isinstance(layer, torch.nn.Conv2d):
            if init == "orthogonal":
                torch.nn.init.orthogonal_(layer.weight)
            else:
                torch.nn.init.kaiming_normal_(layer.weight, nonlinearity="relu")
    return model


def train(name: str, params, args: argparse.Namespace, image: torch.Tensor, test: tuple) -> dict:
    net, kwargs, opts = VARIANTS[name]
    model = build(params, net, kwargs, opts, args.seed)
    lr, batch, crop = opts.get("lr", args.lr), opts.get("batch", args.batch), opts.get("crop", args.crop)
    optimiser = torch.optim.Adam(model.parameters(), lr)
    gen = torch.Generator().manual_seed(args.seed)
    _, h, w = image.shape
    curve, t0 = [], time.perf_counter()
    for step in range(1, args.steps + 1):
        model.train()
        ys = torch.randint(0, h - crop, (batch,), generator=gen)
        xs = torch.randint(0, w - crop, (batch,), generator=gen)
        clean = torch.stack([image[:, y:y + crop, x:x + crop] for y, x in zip(ys.tolist(), xs.tolist())])
        noisy = clean + args.sigma * torch.randn(clean.shape, generator=gen)
        loss = ((model.run(noisy).x_hat - clean) ** 2).mean()
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        if step % args.every == 0 or step == args.steps:
            model.eval()
            with torch.no_grad():
                curve.append((step, round(psnr(model.run(test[0]).x_hat, test[1]), 2)))
    row = {"name": name, "lr": lr, "batch": batch, "crop": crop, "params": sum(p.numel() for p in model.parameters()),
           "seconds": round(time.perf_counter() - t0, 1), "curve": curve}
    print(f"{name:24s} {row['seconds']:6.0f} s  " + "  ".join(f"{s}:{p:.2f}" for s, p in curve), flush=True)
    return row


def table(report: dict) -> str:
    steps = [s for s, _ in report["rows"][0]["curve"]]
    head = ["network", "lr", "batch x crop", "params", "wall s"] + [f"step {s}" for s in steps]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head),
             "| noisy input | | | | | " + " | ".join(f"{report['conditions']['input_psnr']:.2f}" for _ in steps) + " |"]
    for r in report["rows"]:
        cells = [r["name"], f"{r['lr']:g}", f"{r['batch']} x {r['crop']}", f"{r['params']:,}", f"{r['seconds']:.0f}"]
        lines.append("| " + " | ".join(cells + [f"{p:.2f}" for _, p in r["curve"]]) + " |")
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--variants", nargs="+", choices=list(VARIANTS), default=list(VARIANTS))
    ap.add_argument("--steps", type=int, default=1500)
    ap.add_argument("--every", type=int, default=300)
    ap.add_argument("--sigma", type=float, default=0.1)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--crop", type=int, default=48)
    ap.add_argument("--params", type=Path, default=Path("params.yaml"),
                    help="the networks' configurations (latent, arch.<name>.model), as the pipeline builds them")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", type=Path, default=Path("docs/peers/start"))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    from skimage import data

    image = torch.tensor(data.astronaut() / 255.0, dtype=torch.float32).permute(2, 0, 1)
    test = held_out(args.sigma)
    conditions = {"steps": args.steps, "every": args.every, "sigma": args.sigma, "lr": args.lr, "batch": args.batch,
                  "crop": args.crop, "seed": args.seed, "params": str(args.params), "threads": args.threads, "train_image": "skimage astronaut",
                  "held_out": "skimage chelsea", "input_psnr": round(psnr(test[0], test[1]), 2),
                  "cpu": platform.processor() or platform.machine(), "torch": torch.__version__}
    report = {"conditions": conditions, "rows": []}
    params = load_params(args.params)
    for name in args.variants:
        report["rows"].append(train(name, params, args, image, test))
        write_json(args.out.with_suffix(".json"), report)  # a run cut short keeps the rows done
        args.out.with_suffix(".md").write_text(table(report))
    print(table(report))


if __name__ == "__main__":
    main()
