"""A tiny study config (2 teacher methods, 3 student methods), shared by the study tests."""

from conftest import TINY_DATA, TINY_TRAIN


def study_cfg(out, seeds=(0, 1)):
    return {
        "name": "tiny", "out_dir": str(out), "seeds": list(seeds), "data": dict(TINY_DATA),
        "teacher": {"model": "resnet8", "methods": {"standard": "standard", "wd0": "standard"},
                    "train": dict(TINY_TRAIN), "schedule": {"milestones": [1]}},
        "student": {"model": {"name": "mlp", "hidden": [16]},
                    "methods": {"alone": "none", "kd": "kd", "kdT2": {"name": "kd", "T": 2}},
                    "train": dict(TINY_TRAIN), "schedule": {"milestones": [1]}},
    }
