"""kdlab's built-in components: per registry, the modules whose registration decorators define them.

A registry imports its list on first lookup (as an installed plugin's entry point is imported by name), so the core
names no code of the layers above it, and ``import kdlab.models`` does not import every method.  A new built-in
module is added here; ``tests/core/test_builtins.py`` fails when a module that registers a component is missing.
"""

BUILTINS: dict[str, tuple[str, ...]] = {
    "dataset": (
        "kdlab.data.arrays",
        "kdlab.data.cifar",
        "kdlab.data.digits",
        "kdlab.data.idx",
        "kdlab.data.class_folders",
        "kdlab.data.image_folders",
        "kdlab.data.mixed_feature",
        "kdlab.data.mnist1d",
    ),
    "model": (
        "kdlab.models.adapter",
        "kdlab.models.mobilenetv1",
        "kdlab.models.mobilenetv2",
        "kdlab.models.patchwise",
        "kdlab.models.resnet_cifar",
        "kdlab.models.shufflenet",
        "kdlab.models.small",
        "kdlab.models.timm_adapter",
        "kdlab.models.torchvision_resnet",
        "kdlab.models.vgg",
        "kdlab.models.wrn",
    ),
    "teacher method": (
        "kdlab.methods.teacher.augmix",
        "kdlab.methods.teacher.crl",
        "kdlab.methods.teacher.label_smoothing",
        "kdlab.methods.teacher.mixing",
        "kdlab.methods.teacher.patch_erm",
        "kdlab.methods.teacher.sftn",
        "kdlab.methods.teacher.soteacher",
        "kdlab.methods.teacher.standard",
        "kdlab.methods.teacher.weight_penalty",
    ),
    "distillation method": (
        "kdlab.methods.distill.ab",
        "kdlab.methods.distill.at",
        "kdlab.methods.distill.cc",
        "kdlab.methods.distill.crd",
        "kdlab.methods.distill.ctkd",
        "kdlab.methods.distill.dist",
        "kdlab.methods.distill.reviewkd",
        "kdlab.methods.distill.dkd",
        "kdlab.methods.distill.dml",
        "kdlab.methods.distill.fitnet",
        "kdlab.methods.distill.fsp",
        "kdlab.methods.distill.ft",
        "kdlab.methods.distill.kd",
        "kdlab.methods.distill.kdcl",
        "kdlab.methods.distill.kdplus",
        "kdlab.methods.distill.none",
        "kdlab.methods.distill.nst",
        "kdlab.methods.distill.ofd",
        "kdlab.methods.distill.pkt",
        "kdlab.methods.distill.rco",
        "kdlab.methods.distill.rkd",
        "kdlab.methods.distill.sp",
        "kdlab.methods.distill.sskd",
        "kdlab.methods.distill.vid",
    ),
}
