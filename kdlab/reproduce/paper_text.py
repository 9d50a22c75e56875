"""The recipes the two teacher papers state in their text, and the choices kdlab makes for every experiment of a
paper (:mod:`kdlab.reproduce.statements` explains both; the catalogue adds each experiment's own choices).

Sources: SoTeacher (Dong, Liu & Shang 2023) Sec. 4-5, App. D, E, G.1, G.2 and I; SFTN (Park, Cha, Jeong, Kim &
Han 2021) Sec. 3.3, 4.1-4.6 and the table captions; where SFTN says its CIFAR-100 setup "is identical to the one
performed in CRD", the CRD benchmark's recipe is the stated one.
"""

from __future__ import annotations

from kdlab.reproduce.statements import ANY, Above, Choice, Stated

CIFAR = {"data.name": "cifar100"}
TINY = {"data.name": "tinyimagenet"}
IMAGENET = {"data.name": "imagenet"}
SHUFFLENETS = ("ShuffleV1", "ShuffleV2")
SFTN_WITH_KD = ("fitnet", "at", "sp", "vid", "rkd", "pkt", "ab", "ft", "ofd")  # SFTN Sec. 4.1's [18, ..., 19]
SOTEACHER_BETAS = {"fitnet": (100, 50), "at": (1000, 500), "sp": (3000, 1500), "cc": (0.02, 0.01),
                   "vid": (1.0, 0.5), "rkd": (1.0, 0.5), "pkt": (30000, 15000), "ab": (1.0, 0.5),
                   "ft": (200, 100), "nst": (50, 25), "crd": (0.8, 0.5)}  # SoTeacher App. Table 5
STANDARD_TEACHERS = ("standard", "l1", "l2", "mixup", "cutmix", "augmix", "crl")  # every teacher but SoTeacher


def _recipe(source: str, where: dict, lr: float, wd: float, batch: int, epochs: int, milestones: list[int],
            ) -> list[Stated]:
    return [Stated("optim.name", "sgd", source, where), Stated("optim.lr", lr, source, where),
            Stated("optim.momentum", 0.9, source, where), Stated("optim.weight_decay", wd, source, where),
            Stated("train.batch_size", batch, source, where), Stated("train.epochs", epochs, source, where),
            Stated("schedule.milestones", milestones, source, where), Stated("schedule.gamma", 0.1, source, where)]


def _soteacher_facts() -> list[Stated]:
    g1, g2 = "SoTeacher App. G.1", "SoTeacher App. G.2"
    out = _recipe(g1, CIFAR, 0.05, 5e-4, 64, 240, [150, 180, 210])
    out.append(Stated("optim.lr", 0.01, f"{g1} (ShuffleNet)", {**CIFAR, "kind": "student",
                                                                "student.name": SHUFFLENETS}))
    out += _recipe(g1, {**TINY, "kind": "teacher"}, 0.1, 5e-4, 128, 90, [30, 60])
    out += _recipe(g1, {**TINY, "kind": "student"}, 0.1, 5e-4, 128, 100, [30, 60, 90])
    so = {"method.name": "soteacher"}
    out += [Stated("method.lambda_cr_max", 1.0, "SoTeacher Sec. 5", so),
            Stated("method.lambda_lr", 1e-5, "SoTeacher Sec. 5", {**so, **CIFAR}),
            Stated("method.lambda_lr", 1e-6, "SoTeacher Sec. 5", {**so, **TINY}),
            Stated("method.schedule", "linear", "SoTeacher App. D", so),
            Stated("method.average", "mean", "SoTeacher App. E (the plain average of previous predictions)", so),
            Stated("method.lipschitz", "exact", "SoTeacher App. E (the Lipschitz constant induced by the 1-norm)",
                   so)]
    for ds in (CIFAR, TINY):
        kd = {**ds, "method.name": "kd"}
        out += [Stated("method.gamma", 0.5, g2, kd), Stated("method.alpha", 0.5, g2, kd),
                Stated("method.T", 4.0, g2, kd)]
    for name, (standard, halved) in SOTEACHER_BETAS.items():
        m = {**CIFAR, "method.name": name}
        out += [Stated("method.gamma", 1.0, g2, m), Stated("method.alpha", 1.0, g2, m),
                Stated("method.beta", standard, f"{g2}, Table 5", {**m, "teacher.method": STANDARD_TEACHERS}),
                Stated("method.beta", halved, f"{g2}, Table 5", {**m, "teacher.method": "soteacher"})]
    sskd = {**CIFAR, "method.name": "sskd"}
    out += [Stated("method.gamma", 1.0, g2, sskd), Stated("method.alpha", 1.0, g2, sskd),
            Stated("method.ss_weight", 10.0, g2, sskd),
            Stated("method.tf_weight", 2.7, g2, {**sskd, "teacher.method": STANDARD_TEACHERS}),
            Stated("method.tf_weight", 1.0, g2, {**sskd, "teacher.method": "soteacher"}),
            Stated("method.num_anchors", 24, g2, {**CIFAR, "method.name": "rco"})]
    i = "SoTeacher App. I, Table 7"
    out += [Stated("method.weight", 1e-5, i, {"method.name": "l1"}),
            Stated("method.alpha", 0.2, i, {"method.name": ("mixup", "cutmix")}),
            Stated("method.alpha", 1.0, i, {"method.name": "augmix"}),
            Stated("method.width", 3, i, {"method.name": "augmix"}),
            Stated("method.weight", 1.0, i, {"method.name": "crl"})]
    return out


def _sftn_facts() -> list[Stated]:
    crd = "SFTN Sec. 4.2.1 ('identical to the one performed in CRD')"
    out = _recipe(crd, CIFAR, 0.05, 5e-4, 64, 240, [150, 180, 210])
    out.append(Stated("optim.lr", 0.01, "SFTN Sec. 4.2.1 (ShuffleNet)",
                      {**CIFAR, "kind": "student", "student.name": SHUFFLENETS}))
    torch_recipe = "SFTN Sec. 4.2.2 (the standard PyTorch ImageNet set-up)"
    out += _recipe(torch_recipe, IMAGENET, 0.1, 1e-4, 256, 90, [30, 60])
    sftn = {"method.name": "sftn"}
    out += [Stated("method.lambda_t", 1.0, "SFTN Sec. 4.2", sftn), Stated("method.lambda_ce", 1.0, "SFTN Sec. 4.2",
                                                                          sftn),
            Stated("method.lambda_kl", 3.0, "SFTN Sec. 4.2.1", {**sftn, **CIFAR}),
            Stated("method.lambda_kl", 1.0, "SFTN Sec. 4.2.2", {**sftn, **IMAGENET}),
            Stated("method.tau", 1.0, "SFTN Sec. 4.2", sftn),
            Stated("method.T", 4.0, "SFTN Sec. 4.2.1", {"kind": "student", "method.name": ("kd", *SFTN_WITH_KD)}),
            Stated("method.alpha", Above(0), "SFTN Sec. 4.1 (feature methods 'joint distillation with "
                   "conventional KD')", {"kind": "student", "method.name": SFTN_WITH_KD}),
            Stated("method.num_anchors", 4, "SFTN Table 4 (RCO-EEI-4)", {"label": "rco_eei_4"}),
            Stated("train.epochs", 960, "SFTN Table 4 (RCO-EEI-4: 240 x 4 epochs)", {"label": "rco_eei_4"}),
            Stated("method.ensemble", "naive", "SFTN Table 4 (KDCL-Naive)", {"method.name": "kdcl"}),
            Stated("method.branch_only_epochs", 30, "SFTN Sec. 4.6", {**sftn, "method.pretrained": ANY}),
            Stated("train.epochs", 60, "SFTN Sec. 4.6", {**sftn, "method.pretrained": ANY})]
    return out


def method_modes() -> tuple[list[Stated], list[Choice]]:
    """The distillation methods whose loss has a code form and a paper form (``mode: code|paper``): the paper form
    is the method paper's text, kdlab's default the code behind the tables (the CRD benchmark's)."""
    from kdlab.core.registry import DISTILL_METHODS

    facts, choices = [], []
    for entry in DISTILL_METHODS.entries():
        f = entry.params.model_fields.get("mode")
        if f is None or f.default != "code":
            continue
        where = {"method.name": entry.name}
        facts.append(Stated("method.mode", "paper", f"{entry.meta.get('paper', entry.name)} (the method's paper)",
                            where))
        choices.append(Choice("code", f"{entry.name}'s loss as the CRD benchmark's code computes it ({f.description})",
                              where, ("method.mode",), {"mode": "paper"}))
    return facts, choices


STUDENTS_OF_LAST = Choice(
    "silent", "students distil from the teacher's last checkpoint (teacher.checkpoint: last; neither paper says "
    "which), and the table's accuracies are those of the last epoch (the CRD benchmark's rule); the files hold "
    "the best-epoch table too", {"kind": "student", "teacher.checkpoint": "last"}, ("teacher.checkpoint",))

SOTEACHER_CHOICES = [
    Choice("code", "SoTeacher's consistency target is the released code's running average, which counts the first "
           "epoch's prediction twice ((2 p_0 + p_1 + ... + p_e) / (e + 2)); App. E's text: the plain average of the "
           "previous predictions (average: mean)", {"method.name": "soteacher"}, ("method.average",),
           {"average": "mean"}),
    Choice("code", "SoTeacher's Lipschitz term takes a convolution's entry-wise L1 norm of the whole kernel, as the "
           "released code does; App. E's text: the Lipschitz constant induced by the 1-norm (lipschitz: exact), "
           "72x (WRN-40-2) to 145x (ResNet32x4) smaller at initialisation, so the same lambda_LR weighs the code's "
           "term about two orders of magnitude more", {"method.name": "soteacher"}, ("method.lipschitz",),
           {"lipschitz": "exact"}),
    Choice("silent", "the linear consistency schedule lambda_CR(t) = t / T lambda_CR_max reads t as the 1-based epoch "
           "(App. G's piecewise schedule, 0 < t <= T/3, counts from 1), which is the released code's (e + 1) / T",
           {"method.name": "soteacher"}),
    Choice("silent", "RCO's loss weights are KD's (CE 0.5 + KD 0.5 at T 4; App. G.2 gives them for KD only); its "
           "anchors are every saved teacher checkpoint (num_anchors unset), one per 10 epochs: App. G.2's 24 over 240 "
           "epochs", {"method.name": "rco"}, ("method.gamma", "method.alpha", "method.num_anchors")),
    STUDENTS_OF_LAST,
]

SFTN_CHOICES = [
    Choice("silent", "the feature methods run jointly with KD (Sec. 4.1) take gamma 1, alpha 1 and their standard "
           "beta: the paper gives no weights; these are the CRD code's own joint variant's (CRD+KD)",
           {"kind": "student", "method.name": SFTN_WITH_KD[:-1]}, ("method.gamma", "method.alpha", "method.beta")),
    Choice("silent", "CRD runs without KD, as its authors' scripts run it (gamma 1, alpha 0, beta 0.8): Sec. 4.1 "
           "lists CRD [23] apart from the feature methods it runs jointly with KD and says it used 'the "
           "implementations provided by the authors'", {"method.name": "crd"},
           ("method.gamma", "method.alpha", "method.beta")),
    Choice("silent", "SSKD takes its authors' code defaults (CE 0.1, KD 0.9, tf 2.7, ss 10): the paper gives no "
           "weights", {"method.name": "sskd"},
           ("method.gamma", "method.alpha", "method.tf_weight", "method.ss_weight")),
    Choice("silent", "OFD (OH) runs with KD (Sec. 4.1) at gamma 1, alpha 1 and its authors' feature weight beta "
           "1e-3: the paper gives no weights", {"method.name": "ofd"}, ("method.gamma", "method.alpha", "method.beta")),
    Choice("silent", "KD takes the CRD benchmark's weights (CE 0.1 + KD 0.9): the paper gives tau = 4 only",
           {"kind": "student", "method.name": "kd"}, ("method.gamma", "method.alpha")),
    Choice("silent", "RCO keeps every saved teacher checkpoint as an anchor, one per 10 epochs (24 over 240), with "
           "KD's weights: Table 4 says only 'one-stage EEI'", {"method.name": "rco", "label": "rco"},
           ("method.num_anchors", "method.gamma", "method.alpha")),
    Choice("silent", "an SFTN transform layer T^i is followed by batch norm and ReLU (the student stages expect "
           "post-activation inputs; Sec. 3.2 names the convolution only)", {"method.name": "sftn"}),
    Choice("silent", "an SFTN teacher with ShuffleNet branches trains at the teacher's learning rate 0.05, branches "
           "included (Sec. 4.2.1's lr 0.01 'in the ShuffleNet experiments' is read as the ShuffleNet students')",
           {"method.name": "sftn", "method.student.name": SHUFFLENETS}),
    STUDENTS_OF_LAST,
]


def paper_facts(paper: str) -> list[Stated]:
    facts = _soteacher_facts() if paper == "soteacher" else _sftn_facts()
    return facts + method_modes()[0]


def paper_choices(paper: str) -> list[Choice]:
    return (SOTEACHER_CHOICES if paper == "soteacher" else SFTN_CHOICES) + method_modes()[1]


__all__ = ["paper_choices", "paper_facts"]
