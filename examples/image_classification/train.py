"""Tune a small CNN on scikit-learn's bundled 8x8 handwritten digits (no download).

A template for your own train.py. The contract with autofinetune (README, "The training script"):
  * every searched hyperparameter is an argparse option of the same name (see hparam.yaml);
  * --saved_params_dir=DIR: save the trained model there (the tuner creates DIR);
  * --model_path=DIR and --epochs=N: the population-based evaluator restores a parent's model
    from DIR and trains N more epochs (it passes --epochs=1) with the child's hyperparameters;
  * call autofinetune.report_final_result(validation_score) once, at the end; higher is better;
  * optionally, autofinetune.report_intermediate_result(score, step) after each epoch: the
    learning curve VisualDL shows, and what `--pruner` judges (it returns True to say "stop").

Standalone:  python train.py --learning_rate=0.003 --saved_params_dir=/tmp/digits
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import time

try:
    import autofinetune  # standard library only: cheap to import in every trial
except ImportError:
    sys.exit("train.py: cannot import autofinetune; install it (`pip install -e .` in the "
             "autofinetune checkout) or put the checkout on PYTHONPATH")

import numpy as np
import torch
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from torch import nn

WEIGHTS_FILE = "model.pt"
INFO_FILE = "model.json"


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    # Searched (hparam.yaml). The defaults equal hparam.yaml's init_value, so a plain
    # `python train.py` is the "default hyperparameters" baseline quoted in the README.
    p.add_argument("--learning_rate", type=float, default=1e-3)
    p.add_argument("--batch_size", type=int, default=64)
    p.add_argument("--dropout", type=float, default=0.5)
    p.add_argument("--weight_decay", type=float, default=1e-3)
    # The tuner's contract.
    p.add_argument("--saved_params_dir", default=None, help="save the trained model here")
    p.add_argument("--model_path", default=None, help="restore the model from this directory")
    p.add_argument("--epochs", type=int, default=10,
                   help="epochs to train (0: only evaluate, e.g. a restored model)")
    p.add_argument("--seed", type=int, default=0, help="weight init and batch order")
    return p.parse_args(argv)


class SmallCNN(nn.Module):
    """About 40k parameters. `dropout` holds no weights, so a child trial can change it and
    still load its parent's state_dict (architecture-changing hyperparameters cannot)."""

    def __init__(self, dropout: float):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(),
            nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(),
            nn.MaxPool2d(2),  # 8x8 -> 4x4
        )
        self.head = nn.Sequential(
            nn.Flatten(), nn.Dropout(dropout),
            nn.Linear(32 * 4 * 4, 64), nn.ReLU(), nn.Dropout(dropout),
            nn.Linear(64, 10),
        )

    def forward(self, x):
        return self.head(self.features(x))


def load_data(device):
    """The split's random_state is fixed and independent of --seed: every trial must be
    scored on the same validation images, or the tuner compares luck, not hyperparameters."""
    digits = load_digits()
    x = digits.images.astype(np.float32)[:, None] / 16.0  # (N, 1, 8, 8) in [0, 1]
    y = digits.target.astype(np.int64)
    x_tr, x_va, y_tr, y_va = train_test_split(x, y, test_size=0.2, random_state=0, stratify=y)
    to = lambda a: torch.from_numpy(a).to(device)  # noqa: E731 - 1797 images: keep all on device
    return to(x_tr), to(y_tr), to(x_va), to(y_va)


def weights_sha256(model: nn.Module) -> str:
    """Fingerprint of the weights, recorded in model.json; a restore is checked against it."""
    h = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


@torch.no_grad()
def accuracy(model, x, y, batch_size=512):
    model.eval()
    correct = sum((model(x[i:i + batch_size]).argmax(1) == y[i:i + batch_size]).sum().item()
                  for i in range(0, len(x), batch_size))
    return correct / len(x)


def main(argv=None):
    args = parse_args(argv)
    torch.set_num_threads(1)  # parallel trials share the cores; one thread each avoids thrashing
    torch.manual_seed(args.seed)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.type == "cuda":
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False
        print(f"device: cuda ({torch.cuda.get_device_name(0)}), "
              f"CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES', '')}", flush=True)
    else:
        print("device: cpu", flush=True)

    x_tr, y_tr, x_va, y_va = load_data(device)
    model = SmallCNN(args.dropout).to(device)
    epochs_before = 0
    if args.model_path:  # population-based: continue from the parent's weights
        with open(os.path.join(args.model_path, INFO_FILE)) as f:
            parent = json.load(f)
        model.load_state_dict(torch.load(os.path.join(args.model_path, WEIGHTS_FILE),
                                         map_location=device, weights_only=True))
        if weights_sha256(model) != parent["weights_sha256"]:
            sys.exit(f"train.py: weights in {args.model_path} do not match its {INFO_FILE}")
        epochs_before = parent["epochs_trained"]
        print(f"restored {args.model_path} (val acc {parent['val_accuracy']:.4f}, "
              f"{epochs_before} epochs, weights {parent['weights_sha256'][:12]})", flush=True)

    # A fresh optimizer on purpose: the child's learning_rate/weight_decay are the point of
    # the trial. (AdamW: weight decay that does not interact with the adaptive step size.)
    opt = torch.optim.AdamW(model.parameters(), lr=args.learning_rate,
                            weight_decay=args.weight_decay)
    loss_fn = nn.CrossEntropyLoss()
    order = torch.Generator().manual_seed(args.seed)
    for _ in range(epochs_before):  # a resumed run continues the parent's batch-order stream
        torch.randperm(len(x_tr), generator=order)
    start = time.time()
    trained = 0
    for epoch in range(args.epochs):
        trained = epoch + 1
        model.train()
        perm = torch.randperm(len(x_tr), generator=order).to(device)
        for i in range(0, len(perm), args.batch_size):
            idx = perm[i:i + args.batch_size]
            opt.zero_grad()
            loss = loss_fn(model(x_tr[idx]), y_tr[idx])
            loss.backward()
            opt.step()
        epoch_acc = accuracy(model, x_va, y_va)
        print(f"epoch {epochs_before + epoch + 1}: loss {loss.item():.4f} val acc {epoch_acc:.4f}", flush=True)
        # The learning curve, for VisualDL and for --pruner: True means the tuner judged this
        # trial hopeless; stop training, but still save and report (the tuner keeps neither
        # as a result, and a clean exit beats the SIGTERM that follows --prune_grace).
        if autofinetune.report_intermediate_result(epoch_acc, step=epochs_before + epoch + 1):
            print(f"the tuner asked this trial to stop after epoch {epochs_before + epoch + 1}", flush=True)
            break

    acc = accuracy(model, x_va, y_va)
    print(f"validation accuracy {acc:.4f} ({trained} epochs in {time.time() - start:.1f}s)")
    if args.saved_params_dir:
        os.makedirs(args.saved_params_dir, exist_ok=True)
        torch.save(model.state_dict(), os.path.join(args.saved_params_dir, WEIGHTS_FILE))
        info = {"val_accuracy": acc, "epochs_trained": epochs_before + trained,
                "weights_sha256": weights_sha256(model), "parent": args.model_path,
                "hyperparameters": {k: getattr(args, k) for k in
                                    ("learning_rate", "batch_size", "dropout", "weight_decay")}}
        with open(os.path.join(args.saved_params_dir, INFO_FILE), "w") as f:
            json.dump(info, f, indent=1)
    autofinetune.report_final_result(acc)


if __name__ == "__main__":
    main()
