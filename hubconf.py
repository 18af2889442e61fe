"""torch.hub entry points: ``torch.hub.load("<owner>/mmnet", "mmnet_efficientnet_lite2", pretrained=True)``.

Every registered architecture is an entry point; ``pretrained=True`` loads its first registered weights
(or the ones named by ``tag=``), ``pretrained=False`` builds it fresh. ``matcher`` returns a ready `Matcher`.
"""

dependencies = ["torch", "timm", "huggingface_hub", "safetensors", "numpy", "PIL"]

import mmnet as _mmnet  # noqa: E402


def _entry(arch: str):
    def load(pretrained: bool = True, tag: str | None = None, **kwargs):
        name = f"{arch}.{tag}" if tag else arch
        if pretrained or tag:
            return _mmnet.create_model(name, pretrained=True)
        return _mmnet.create_model(name, **kwargs)

    load.__name__ = arch
    load.__doc__ = (f"MMNet `{arch}`. pretrained=True loads registered weights (tag= picks one); "
                    "pretrained=False builds it fresh (kwargs: pretrained_backbone, MMNetConfig fields).")
    return load


def matcher(name: str = "mmnet_efficientnet_lite2.cub_photos", **kwargs):
    """A ready `mmnet.Matcher` for registered weights, a hub repo id or a folder (kwargs go to Matcher)."""
    return _mmnet.Matcher.from_pretrained(name, **kwargs)


for _arch in _mmnet.list_models():
    globals()[_arch] = _entry(_arch)


def scot(backbone: str = "efficientnet_lite2", **kwargs):
    """A training-free SCOT matcher (`mmnet.scot.ScotMatcher`, same API as `Matcher`) on a registered backbone;
    kwargs (device, layers, iterations, ...) go to it."""
    from mmnet.scot import ScotMatcher

    return ScotMatcher.from_pretrained(f"scot_{backbone}", **kwargs)


def _scot_entry(backbone: str):
    def load(**kwargs):
        return scot(backbone, **kwargs)

    load.__name__ = f"scot_{backbone}"
    load.__doc__ = f"SCOT matcher on {backbone} (`mmnet.scot.ScotMatcher`); kwargs go to it."
    return load


for _backbone in _mmnet.list_backbones():
    globals()[f"scot_{_backbone}"] = _scot_entry(_backbone)
