"""Settings of CRD, SSKD, OFD, DKD, DIST, CTKD, ReviewKD, KD+, RCO, DML and KDCL for the registry harness.

The harness data set has 192 training samples in 10 classes and 4 epochs, so some defaults are scaled down:
CRD draws 64 negatives (a sample has only ~170 samples of other classes) and uses memory momentum 0.9 (with the
reference's 0.5 its NCE loss rises during the first few epochs on this tiny set, while the memory's random initial
entries are replaced by still undiscriminating embeddings, and only falls later); SSKD trains the teacher's head for
one epoch instead of 60; DKD's warm-up lasts 2 epochs, ReviewKD's 1 (its loss is at full weight from the first
epoch, so the harness's falling-loss check compares like with like); the harness teacher run keeps no epoch_XXX.pt
checkpoints, so RCO names its two anchors (tests/methods/test_distill_advanced_methods.py covers the default
anchors from ``train.save_every``).
DML and KDCL use no teacher, so their two harness pairs would be the same run: one is enough (their peers are the
student's architecture; tests/methods/test_distill_advanced_methods.py runs a heterogeneous peer).
"""

SETTINGS = {
    "crd": {"params": {"nce_k": 64, "nce_m": 0.9}},
    "sskd": {"params": {"ss_epochs": 1}},
    "ofd": {"params": {}},
    "dkd": {"params": {"warmup": 2}},
    "dist": {"params": {}},
    "ctkd": {"params": {"lambda_epochs": 2}},
    "reviewkd": {"params": {"warmup_epochs": 1}},
    "kdplus": {"params": {"mix": ["mixup", "cutmix", "noise"]}},
    "rco": {"params": {"anchors": ["best", "last"]}},
    "dml": {"params": {}, "skip_pairs": ["heterogeneous"]},
    "kdcl": {"params": {}, "skip_pairs": ["heterogeneous"]},
}
