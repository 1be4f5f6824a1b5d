"""Tune a bag-of-n-grams sentiment classifier (PyTorch EmbeddingBag, fastText style).

A template for your own train.py; the contract with autofinetune (README, "The training script") is the same as in
examples/image_classification: searched hyperparameters as argparse options of the same name,
--saved_params_dir, --model_path + --epochs (population-based), report_final_result(score).

Data, first that applies:
  --data_dir=DIR     DIR/train.tsv and DIR/dev.tsv: `sentence<TAB>label` per line, label 0/1,
                     an optional header line (GLUE's SST-2 files work as they are); without
                     dev.tsv, a fixed 20% of train.tsv is held out.
  --dataset=sst2     SST-2 (GLUE) through the `datasets` package; needs the internet once.
  --dataset=sample   data/sample.tsv, a ~300 sentence smoke-test sample shipped here.
  --dataset=auto     (default) sst2 when it can be fetched, else the sample, said in one line.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import re
import socket
import sys
import time
from collections import Counter

try:
    import autofinetune  # standard library only: cheap to import in every trial
except ImportError:
    sys.exit("train.py: cannot import autofinetune; install it (`pip install -e .` in the "
             "autofinetune checkout) or put the checkout on PYTHONPATH")

import torch
from torch import nn

HERE = os.path.dirname(os.path.abspath(__file__))
SAMPLE = os.path.join(HERE, "data", "sample.tsv")
WEIGHTS_FILE, VOCAB_FILE, INFO_FILE = "model.pt", "vocab.json", "model.json"


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    # Searched (hparam.yaml); defaults = its init_values, the README's baseline.
    p.add_argument("--learning_rate", type=float, default=0.01)
    p.add_argument("--batch_size", type=int, default=32)
    p.add_argument("--dropout", type=float, default=0.3)
    p.add_argument("--weight_decay", type=float, default=1e-4)
    # Architecture: fixed by the parent when resuming, so not in hparam.yaml (see README).
    p.add_argument("--embed_dim", type=int, default=64)
    p.add_argument("--max_vocab", type=int, default=20000,
                   help="keep the most frequent n-grams (the embedding's size and speed)")
    # Data.
    p.add_argument("--dataset", choices=("auto", "sst2", "sample"), default="auto")
    p.add_argument("--data_dir", default=None, help="train.tsv + dev.tsv (overrides --dataset)")
    # The tuner's contract.
    p.add_argument("--saved_params_dir", default=None, help="save the trained model here")
    p.add_argument("--model_path", default=None, help="restore the model from this directory")
    p.add_argument("--epochs", type=int, default=10,
                   help="epochs to train (0: only evaluate, e.g. a restored model)")
    p.add_argument("--seed", type=int, default=0, help="weight init and batch order")
    return p.parse_args(argv)


# ---------------------------------------------------------------------------------------- data
def read_tsv(path):
    rows = []
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f):
            text, _, label = line.rstrip("\n").rpartition("\t")
            if n == 0 and not label.strip().isdigit():
                continue  # header line
            rows.append((text, int(label)))
    return rows


def split_off(rows, fraction=0.2):
    """A fixed held-out split (its own seed, not --seed): every trial is scored on the same
    sentences, or the tuner would compare luck rather than hyperparameters."""
    rows = list(rows)
    random.Random(1234).shuffle(rows)
    n_val = max(1, int(len(rows) * fraction))
    return rows[n_val:], rows[:n_val]


def split_sample(rows):
    """sample.tsv comes in contrasting pairs (a positive line, then a negative one about the
    same thing). Every 5th pair is held out whole: split apart, the words a pair shares ("the
    hotel room") would be learnt with one label and scored against the other."""
    pairs = [rows[i:i + 2] for i in range(0, len(rows), 2)]
    return ([r for k, p in enumerate(pairs) if k % 5 != 4 for r in p],
            [r for k, p in enumerate(pairs) if k % 5 == 4 for r in p])


def can_reach(host="huggingface.co", port=443, timeout=3.0):
    """Answer quickly whether the internet is there, instead of letting a download hang."""
    try:
        socket.create_connection((host, port), timeout=timeout).close()
        return True
    except OSError:
        return False


def load_sst2():
    from datasets import load_dataset  # optional: pip install datasets
    ds = load_dataset("nyu-mll/glue", "sst2")  # GLUE's test labels are hidden: use validation
    return [list(zip(ds[split]["sentence"], ds[split]["label"]))
            for split in ("train", "validation")]


def load_corpus(args):
    """Returns (train, validation, source) with train/validation lists of (text, label)."""
    if args.data_dir:
        train = read_tsv(os.path.join(args.data_dir, "train.tsv"))
        dev = os.path.join(args.data_dir, "dev.tsv")
        if os.path.exists(dev):
            return train, read_tsv(dev), args.data_dir
        return (*split_off(train), args.data_dir + " (20% of train.tsv held out)")
    if args.dataset in ("auto", "sst2"):
        offline = os.environ.get("HF_DATASETS_OFFLINE") == "1"  # a cached copy still loads
        try:
            if not (offline or can_reach()):
                raise ConnectionError("no internet connection")
            return (*load_sst2(), "SST-2")
        except Exception as exc:  # ImportError, network, hub errors: all mean "not available"
            if args.dataset == "sst2":
                sys.exit(f"train.py: cannot load SST-2: {exc}")
            print(f"SST-2 not available ({type(exc).__name__}: {exc}); using the "
                  "smoke-test sample shipped in data/sample.tsv", flush=True)
    return (*split_sample(read_tsv(SAMPLE)), "sample")


def tokenize(text):
    """Lower-cased words plus adjacent word pairs: bigrams let a bag of words see "not good"."""
    words = re.findall(r"[a-z0-9']+", text.lower())
    return words + [a + " " + b for a, b in zip(words, words[1:])]


def build_vocab(texts, max_size):
    counts = Counter(tok for t in texts for tok in tokenize(t))
    # Sorted by (-count, token): the same data always gives the same ids.
    return ["<unk>"] + sorted(counts, key=lambda t: (-counts[t], t))[:max_size - 1]


def encode(rows, index):
    """Each sentence as its token ids (unknown n-grams -> 0, <unk>), with its label."""
    return [([index.get(tok, 0) for tok in tokenize(text)] or [0], label) for text, label in rows]


def collate(examples, device):
    """EmbeddingBag input: all ids in one flat tensor, plus where each sentence starts."""
    offsets, ids = [0], []
    for seq, _ in examples:
        ids.extend(seq)
        offsets.append(len(ids))
    return (torch.tensor(ids, device=device), torch.tensor(offsets[:-1], device=device),
            torch.tensor([label for _, label in examples], device=device))


# --------------------------------------------------------------------------------------- model
class BagOfNgrams(nn.Module):
    def __init__(self, vocab_size, embed_dim, dropout):
        super().__init__()
        # padding_idx=0: unknown n-grams (id 0) are left out of the mean, rather than adding
        # one random vector that training never sees (worth ~20 points on the sample).
        self.embed = nn.EmbeddingBag(vocab_size, embed_dim, mode="mean", padding_idx=0)
        self.dropout = nn.Dropout(dropout)  # no weights: a child trial may change it freely
        self.out = nn.Linear(embed_dim, 2)

    def forward(self, ids, offsets):
        return self.out(self.dropout(self.embed(ids, offsets)))


def weights_sha256(model):
    """Fingerprint of the weights, recorded in model.json; a restore is checked against it."""
    h = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


@torch.no_grad()
def accuracy(model, batch):
    ids, offsets, labels = batch
    model.eval()
    return (model(ids, offsets).argmax(1) == labels).sum().item() / len(labels)


def main(argv=None):
    args = parse_args(argv)
    torch.set_num_threads(1)  # parallel trials share the cores; one thread each avoids thrashing
    torch.manual_seed(args.seed)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    train_rows, val_rows, source = load_corpus(args)
    print(f"data: {source}, {len(train_rows)} train / {len(val_rows)} validation; "
          f"device: {device}", flush=True)

    epochs_before = 0
    if args.model_path:  # population-based: continue from the parent's vocab and weights
        with open(os.path.join(args.model_path, INFO_FILE)) as f:
            parent = json.load(f)
        if parent["embed_dim"] != args.embed_dim:
            sys.exit(f"train.py: --embed_dim={args.embed_dim} but the parent in "
                     f"{args.model_path} has {parent['embed_dim']}; an architecture cannot "
                     "change on resume (search embed_dim with --evaluator=fulltrail)")
        with open(os.path.join(args.model_path, VOCAB_FILE)) as f:
            vocab = json.load(f)
        epochs_before = parent["epochs_trained"]
    else:
        vocab = build_vocab([text for text, _ in train_rows], args.max_vocab)

    model = BagOfNgrams(len(vocab), args.embed_dim, args.dropout).to(device)
    if args.model_path:
        model.load_state_dict(torch.load(os.path.join(args.model_path, WEIGHTS_FILE),
                                         map_location=device, weights_only=True))
        if weights_sha256(model) != parent["weights_sha256"]:
            sys.exit(f"train.py: weights in {args.model_path} do not match its {INFO_FILE}")
        print(f"restored {args.model_path} (val acc {parent['val_accuracy']:.4f}, "
              f"{epochs_before} epochs, weights {parent['weights_sha256'][:12]})", flush=True)

    index = {tok: i for i, tok in enumerate(vocab)}
    train, val = encode(train_rows, index), collate(encode(val_rows, index), device)
    # A fresh optimizer on purpose: the child's learning_rate/weight_decay are the point.
    opt = torch.optim.AdamW(model.parameters(), lr=args.learning_rate,
                            weight_decay=args.weight_decay)
    loss_fn = nn.CrossEntropyLoss()
    order = random.Random(args.seed)
    for _ in range(epochs_before):  # a resumed run continues the parent's batch-order stream
        order.shuffle(list(range(len(train))))
    start = time.time()
    for epoch in range(args.epochs):
        model.train()
        perm = list(range(len(train)))
        order.shuffle(perm)
        for i in range(0, len(perm), args.batch_size):
            ids, offsets, labels = collate([train[j] for j in perm[i:i + args.batch_size]],
                                           device)
            opt.zero_grad()
            loss = loss_fn(model(ids, offsets), labels)
            loss.backward()
            opt.step()
        print(f"epoch {epochs_before + epoch + 1}: loss {loss.item():.4f} "
              f"val acc {accuracy(model, val):.4f}", flush=True)

    acc = accuracy(model, val)
    print(f"validation accuracy {acc:.4f} ({args.epochs} epochs in {time.time() - start:.1f}s)")
    if args.saved_params_dir:
        os.makedirs(args.saved_params_dir, exist_ok=True)
        torch.save(model.state_dict(), os.path.join(args.saved_params_dir, WEIGHTS_FILE))
        with open(os.path.join(args.saved_params_dir, VOCAB_FILE), "w") as f:
            json.dump(vocab, f)
        info = {"val_accuracy": acc, "epochs_trained": epochs_before + args.epochs,
                "weights_sha256": weights_sha256(model), "embed_dim": args.embed_dim,
                "data": source, "parent": args.model_path,
                "hyperparameters": {k: getattr(args, k) for k in
                                    ("learning_rate", "batch_size", "dropout", "weight_decay")}}
        with open(os.path.join(args.saved_params_dir, INFO_FILE), "w") as f:
            json.dump(info, f, indent=1)
    autofinetune.report_final_result(acc)


if __name__ == "__main__":
    main()
