"""Teacher-training methods, one module each; every module is listed in :mod:`kdlab.core.builtins`."""
