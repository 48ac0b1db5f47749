"""Shared test set-up: small models run fastest on one thread, and CI has two cores."""

import torch

torch.set_num_threads(1)
