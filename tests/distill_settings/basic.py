SETTINGS = {
    "none": {"params": {}},
    "kd": {"params": {"T": 4.0}},
}
