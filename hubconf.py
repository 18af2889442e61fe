"""torch.hub entry points: ``torch.hub.load("mmnet-org/mmnet", "mmnet_efficientnet_lite2", pretrained=True)``.

Every registered architecture is an entry point (`mmnet.list_models`): one with a trainable network returns it
(`mmnet.create_model`), a training-free one its matcher (`mmnet.create_matcher`). ``matcher`` returns a ready
matcher of any family for registered weights, a hub repo id or a folder.
"""

dependencies = ["torch", "timm", "huggingface_hub", "safetensors", "numpy", "PIL"]

import mmnet as _mmnet  # noqa: E402
from mmnet.defaults import DEFAULT_WEIGHTS as _DEFAULT_WEIGHTS  # noqa: E402
from mmnet.zoo._registry import get_model_entry as _entry  # noqa: E402


def _load(arch: str):
    trainable = _entry(arch).model is not None

    def load(pretrained: bool = True, tag: str | None = None, **kwargs):
        name = f"{arch}.{tag}" if tag else arch
        create = _mmnet.create_model if trainable else _mmnet.create_matcher
        return create(name, pretrained=pretrained or bool(tag), **kwargs)

    load.__name__ = arch
    load.__doc__ = (
        f"`{arch}`: pretrained=True loads registered weights (tag= picks one), pretrained=False builds "
        f"it fresh; kwargs go to mmnet.{'create_model' if trainable else 'create_matcher'}."
    )
    return load


def matcher(name: str = _DEFAULT_WEIGHTS, **kwargs):
    """A ready matcher (`mmnet.create_matcher`) for registered weights, a hub repo id or a folder."""
    return _mmnet.create_matcher(name, **kwargs)


for _arch in _mmnet.list_models():
    globals()[_arch] = _load(_arch)
