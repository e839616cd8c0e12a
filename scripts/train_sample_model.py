"""Train the small Mask2Former shipped in samples/model on synthetic scenes.

Reproduce with:
    python scripts/train_sample_model.py --out samples/model --steps 2500

Frames are rendered on the fly from scene seeds below 1,000,000 (the sample clip uses a seed above it, the
tracking tests' hard scenes seeds above 5,000,000),
at 2x the model's input size and shrunk with area averaging, like the antialiased resize that
streamseg applies to a 640x360 clip. The model computes its own Hungarian-matched loss from
``mask_labels`` and ``class_labels``. A checkpoint in the hub layout (float16 safetensors, config
with id2label, preprocessor_config.json) is written every ``--save-every`` steps and at the end,
with the learning curve in ``training_log.csv``.

``--init FOLDER --hard SHARE`` fine-tunes a trained model with that share of each batch drawn from scenes with
the options that make tracking hard (same-class balls crossing, a ball passing behind a box, a kite coming
in and leaving, changing speeds); its curve goes to ``finetune_log.csv``.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import platform
import time
from pathlib import Path

import cv2
import numpy as np
import torch
from transformers import Mask2FormerConfig, Mask2FormerForUniversalSegmentation, SwinConfig

from streamseg.testing.synthetic import LABELS, STUFF_IDS, Scene

INPUT_H, INPUT_W = 128, 224
MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)
TRAIN_SEEDS = 1_000_000
EVAL_SEEDS = range(3_000_000, 3_000_008)


def build_config() -> Mask2FormerConfig:
    backbone = SwinConfig(
        embed_dim=32, depths=[1, 1, 2, 1], num_heads=[1, 2, 4, 8], window_size=7, image_size=224,
        out_features=["stage1", "stage2", "stage3", "stage4"],
    )
    return Mask2FormerConfig(
        backbone_config=backbone, hidden_dim=128, mask_feature_size=128, feature_size=128,
        encoder_layers=2, encoder_feedforward_dim=256, decoder_layers=4, dim_feedforward=512,
        num_queries=16, num_labels=len(LABELS), class_weight=5.0,
        id2label=dict(enumerate(LABELS)), label2id={name: i for i, name in enumerate(LABELS)},
    )


def preprocessor_config() -> dict:
    return {
        "image_processor_type": "Mask2FormerImageProcessor",
        "do_resize": True, "size": {"height": INPUT_H, "width": INPUT_W}, "size_divisor": 32,
        "resample": 2, "do_rescale": True, "rescale_factor": 1 / 255, "do_normalize": True,
        "image_mean": list(MEAN), "image_std": list(STD), "ignore_index": 255, "num_labels": len(LABELS),
    }


def hard_scene(seed: int) -> Scene:
    """A scene with some of the options that make tracking hard, drawn from its seed."""
    rng = np.random.default_rng(seed)
    crossing, occlusion, exits, speed = (bool(v) for v in rng.random(4) < (0.7, 0.5, 0.5, 0.5))
    return Scene(seed, crossing=crossing, occlusion=occlusion, exits=exits, speed_changes=speed,
                 own_things=int(rng.integers(0, 4)))


def sample(seed: int, index: int, rng: np.random.Generator, augment: bool,
           scene: Scene | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One training frame: normalized CHW image, (N, H, W) masks and (N,) labels."""
    image, truth = (scene or Scene(seed)).render(index, INPUT_W * 2, INPUT_H * 2)
    image = cv2.resize(image, (INPUT_W, INPUT_H), interpolation=cv2.INTER_AREA)
    panoptic = cv2.resize(truth.panoptic, (INPUT_W, INPUT_H), interpolation=cv2.INTER_NEAREST)
    if augment:
        image = image.astype(np.float32) * rng.uniform(0.8, 1.2) + rng.uniform(-20, 20)
        image = image + rng.normal(0, rng.uniform(0, 6), size=image.shape)
        if rng.random() < 0.5:
            image, panoptic = image[:, ::-1], panoptic[:, ::-1]
        image = image.clip(0, 255).round()
    x = (image.astype(np.float32) / 255.0 - np.array(MEAN, np.float32)) / np.array(STD, np.float32)
    ids = [s for s in truth.segments if (panoptic == s).any()]
    masks = np.stack([(panoptic == s) for s in ids]).astype(np.float32)
    labels = np.array([truth.segments[s] for s in ids], dtype=np.int64)
    return np.ascontiguousarray(x.transpose(2, 0, 1)), masks, labels


@torch.no_grad()
def evaluate(model: Mask2FormerForUniversalSegmentation, hard: bool = False) -> tuple[float, float]:
    """Semantic mIoU and thing-class accuracy of the argmax map on held-out scenes (``hard``: with the
    options that make tracking hard)."""
    model.eval()
    inter = np.zeros(len(LABELS))
    union = np.zeros(len(LABELS))
    for seed in EVAL_SEEDS:
        x, masks, labels = sample(seed, 40, np.random.default_rng(0), augment=False,
                                  scene=hard_scene(seed) if hard else None)
        out = model(pixel_values=torch.from_numpy(x)[None])
        probs = out.class_queries_logits.softmax(-1)[..., :-1]
        m = torch.nn.functional.interpolate(out.masks_queries_logits, size=(INPUT_H, INPUT_W), mode="bilinear")
        pred = torch.einsum("bqc,bqhw->bchw", probs, m.sigmoid()).argmax(1)[0].numpy()
        gt = np.zeros((INPUT_H, INPUT_W), dtype=np.int64)
        for mk, lb in zip(masks, labels):
            gt[mk > 0] = lb
        for c in range(len(LABELS)):
            inter[c] += np.logical_and(pred == c, gt == c).sum()
            union[c] += np.logical_or(pred == c, gt == c).sum()
    model.train()
    present = union > 0
    iou = inter[present] / union[present]
    things = [c for c in range(len(LABELS)) if present[c] and c not in STUFF_IDS]
    thing_iou = float(np.mean(inter[things] / union[things])) if things else float("nan")
    return float(iou.mean()), thing_iou


def save(model: Mask2FormerForUniversalSegmentation, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    half = Mask2FormerForUniversalSegmentation(model.config)
    half.load_state_dict(model.state_dict())
    half.half().save_pretrained(out)
    (out / "preprocessor_config.json").write_text(json.dumps(preprocessor_config(), indent=2) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("samples/model"))
    parser.add_argument("--steps", type=int, default=2500)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--lr", type=float, default=3e-4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--save-every", type=int, default=250)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--init", type=Path, help="fine-tune this trained model instead of starting afresh")
    parser.add_argument("--hard", type=float, default=0.0, help="share of each batch from hard scenes")
    parser.add_argument("--warmup", type=int, default=200)
    args = parser.parse_args()

    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)
    rng = np.random.default_rng(args.seed)
    model = Mask2FormerForUniversalSegmentation(build_config())
    if args.init:
        model.load_state_dict(Mask2FormerForUniversalSegmentation.from_pretrained(args.init).float().state_dict())
    model.train()
    optim = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.05)
    warmup = args.warmup

    def lr_at(step: int) -> float:
        if step < warmup:
            return args.lr * (step + 1) / warmup
        progress = (step - warmup) / max(1, args.steps - warmup)
        return args.lr * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * progress)))

    args.out.mkdir(parents=True, exist_ok=True)
    stage = "finetune" if args.init else "training"
    log_path = args.out / f"{stage}_log.csv"
    start = time.time()
    with open(log_path, "w", newline="") as log_file:
        log = csv.writer(log_file)
        log.writerow(["step", "seconds", "loss", "lr", "eval_miou", "eval_thing_iou", "hard_miou", "hard_thing_iou"])
        running = 0.0
        for step in range(args.steps):
            hard = round(args.hard * args.batch)
            if hard:
                seeds = [int(rng.integers(TRAIN_SEEDS)) for _ in range(args.batch)]
                batch = [sample(seed, int(rng.integers(0, 600)), rng, True) for seed in seeds[hard:]]
                batch += [sample(seed, int(rng.integers(0, 300)), rng, True, hard_scene(seed)) for seed in seeds[:hard]]
            else:  # the draws the first model was trained with, so that its command still makes it
                batch = [sample(int(rng.integers(TRAIN_SEEDS)), int(rng.integers(0, 600)), rng, True)
                         for _ in range(args.batch)]
            for group in optim.param_groups:
                group["lr"] = lr_at(step)
            out = model(
                pixel_values=torch.from_numpy(np.stack([b[0] for b in batch])),
                mask_labels=[torch.from_numpy(b[1]) for b in batch],
                class_labels=[torch.from_numpy(b[2]) for b in batch],
            )
            optim.zero_grad(set_to_none=True)
            out.loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optim.step()
            running = out.loss.item() if step == 0 else 0.98 * running + 0.02 * out.loss.item()
            last = step + 1 == args.steps
            if (step + 1) % args.save_every == 0 or last:
                miou, thing_iou = evaluate(model)
                hard_miou, hard_thing_iou = evaluate(model, hard=True)
                elapsed = time.time() - start
                log.writerow([step + 1, round(elapsed, 1), round(running, 4), lr_at(step), round(miou, 4),
                              round(thing_iou, 4), round(hard_miou, 4), round(hard_thing_iou, 4)])
                log_file.flush()
                save(model, args.out)
                print(f"step {step + 1}/{args.steps} {elapsed / 60:.1f} min loss {running:.3f} "
                      f"mIoU {miou:.3f} thing IoU {thing_iou:.3f} (hard scenes {hard_miou:.3f}, {hard_thing_iou:.3f})",
                      flush=True)
    (args.out / f"{stage}_run.json").write_text(json.dumps({
        "command": "python scripts/train_sample_model.py " + " ".join(
            f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items()),
        "wall_seconds": round(time.time() - start, 1),
        "machine": f"{platform.machine()} {platform.processor() or ''} {torch.get_num_threads()} threads".strip(),
        "torch": torch.__version__,
        "parameters": sum(p.numel() for p in model.parameters()),
    }, indent=2) + "\n")


if __name__ == "__main__":
    main()
