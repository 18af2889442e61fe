"""Released mmnet weights, installed as the package data of `mmnet.weights` (one folder per weight name)."""
