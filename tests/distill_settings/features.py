"""Test settings of the feature-based methods (FitNets, AT, SP, CC, VID, RKD, PKT, NST, FT, AB, FSP): library
defaults, except that the initialisation stages run one epoch instead of the reference's 30."""
SETTINGS = {
    "fitnet": {"params": {}},
    "at": {"params": {}},
    "sp": {"params": {}},
    "cc": {"params": {}},
    "vid": {"params": {}},
    "rkd": {"params": {}},
    "pkt": {"params": {}},
    "nst": {"params": {}},
    "ft": {"params": {"init_epochs": 1}},
    "ab": {"params": {"init_epochs": 1}},
    "fsp": {"params": {"init_epochs": 1}},
}
