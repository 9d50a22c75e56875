"""The command line under random configurations: every key of the schemas and of the components' parameters,
given values of every type (sensible and absurd), run for real on tiny data.  The outcome is a run (exit 0), a
one-line error (exit 1, or 2 for a config error) and never an internal error or a raw traceback.

Slow (kept out of CI: ``pytest -m slow tests/e2e/test_cli_fuzz.py``); FUZZ_CASES and FUZZ_SEED set the cases.
"""

import collections
import io
import os
import random
import sys
from contextlib import redirect_stderr, redirect_stdout

import pytest

from kdlab.cli.main import main
from kdlab.config.describe import param_rows, schema_rows
from kdlab.core.registry import DISTILL_METHODS, MODELS, TEACHER_METHODS

CASES = int(os.environ.get("FUZZ_CASES", "300"))
TINY = ["data.name=mixed-feature", "data.num_train=48", "data.num_test=24", "train.epochs=1", "train.batch_size=16",
        "train.progress=off"]
MODELS_SMALL = ["resnet8", "mlp", "wrn_16_1", "vgg8", "ShuffleV2", "MobileNetV2", "cnn1d", "patchwise"]
VALUES = ["0", "1", "-1", "2", "0.5", "1e9", "-1e-9", "true", "false", "null", "''", "abc", "'[1, 2]'", "[1, 2]",
          "[]", "{}", "{a: 1}", "nan", "inf", "'1'", "[[[]]]", "'x' * 3", "3.0", "100000000000000"]


BOUNDED = {"epochs", "num_train", "num_test", "num_samples", "batch_size", "eval_batch_size", "channels", "depth",
           "ss_epochs", "init_epochs", "hint_epochs", "feat_dim", "nce_k", "queue_size", "num_anchors", "grid",
           "patch_size", "num_features", "length", "warmup", "warmup_epochs", "save_every", "eval_every", "widen",
           "filters", "layers", "blocks", "embed_dim", "k", "n_data", "hidden_dim"}


def _keys(kind: str) -> list[tuple[str, str]]:
    return [(r.key, r.type) for r in schema_rows(kind)]


def _component_keys(prefix: str, registry, names) -> list[tuple[str, str]]:
    out = []
    for n in names:
        out += [(f"{prefix}.{r.key}", r.type) for r in param_rows(registry.get(n).params)]
    return out


def _plausible(rng: random.Random, type_text: str) -> str:
    """A value of the key's own type (half the cases): the runs then get past validation and really train."""
    t = type_text.split(" or ")[0]
    if t.startswith("bool"):
        return rng.choice(["true", "false"])
    if t.startswith("int"):
        return str(rng.choice([0, 1, 2, 3]))
    if t.startswith("float"):
        return str(rng.choice([0.0, 0.1, 0.5, 1.0, 2.0]))
    if "/" in t and " " not in t:
        return rng.choice(t.split("/"))
    return rng.choice(VALUES)


def _case(rng: random.Random, tmp) -> list[str]:
    kind = rng.choice(["train-teacher", "distill"])
    if kind == "train-teacher":
        model, method = rng.choice(MODELS_SMALL), rng.choice(TEACHER_METHODS.names())
        keys = _keys("teacher") + _component_keys("model", MODELS, [model]) + \
            _component_keys("method", TEACHER_METHODS, [method])
        base = [f"model={model}", f"method={method}"]
    else:
        model, method = rng.choice(MODELS_SMALL), rng.choice(DISTILL_METHODS.names())
        keys = _keys("distill") + _component_keys("student", MODELS, [model]) + \
            _component_keys("method", DISTILL_METHODS, [method])
        base = [f"student={model}", f"method={method}", f"teacher.path={tmp / 'teacher'}"]
    changes = []
    for _ in range(rng.randint(1, 3)):
        key, type_text = rng.choice(keys)
        # sizes and lengths stay plausible: a valid 10^14 epochs or samples is a run that never ends, not a bug
        sized = key.rsplit(".", 1)[-1] in BOUNDED or any(w in key for w in ("epochs", "num_", "width", "hidden"))
        value = _plausible(rng, type_text) if sized or rng.random() < 0.5 else rng.choice(VALUES)
        changes.append(f"{key}={value}")
    return [kind, f"out_dir={tmp / 'runs' / str(rng.random())}", *TINY, *base, *changes]


@pytest.mark.slow
def test_random_configurations_never_end_in_an_internal_error(tmp_path):
    assert main(["train-teacher", f"out_dir={tmp_path / 'teacher'}", *TINY, "model=resnet8"]) == 0
    rng = random.Random(int(os.environ.get("FUZZ_SEED", "0")))
    outcomes: collections.Counter = collections.Counter()
    bad = []
    for _ in range(CASES):
        args = _case(rng, tmp_path)
        err, out = io.StringIO(), io.StringIO()
        with redirect_stderr(err), redirect_stdout(out):
            try:
                code = main(args)
            except SystemExit as e:  # argparse
                code = e.code
        text = err.getvalue()
        last = [line for line in text.splitlines() if line.startswith("kdlab")]
        category = {0: "ran", 1: "error", 2: "config error"}.get(code, f"exit {code}")
        if "internal error" in text or "Traceback" in text or category.startswith("exit"):
            category = "internal"
            bad.append((args[0], args[-3:], text[-300:]))
        elif code and (not last or "\n" in last[-1]):
            category = "unclear"
            bad.append((args[0], args[-3:], text[-300:]))
        outcomes[category] += 1
    print(dict(outcomes), file=sys.__stderr__)
    assert not bad, bad[:5]
