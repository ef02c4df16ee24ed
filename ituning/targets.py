"""Where a causal LM keeps its decoder layers and each layer's FFN, per model family.

I-Tuning puts a module in parallel with every kept layer's FFN, so injection needs, for each layer
in order, the FFN submodule whose *input* is X of eq. (1) and whose *output* receives dh. Known
families are listed explicitly; anything else is found by shape (a ModuleList of
``num_hidden_layers`` blocks that each own an ``mlp``), and failing that a one-line BackboneError.
"""

from __future__ import annotations

from torch import nn

from ituning.errors import BackboneError

#: model_type -> (dotted path of the decoder-layer ModuleList, FFN attribute of one layer)
FAMILIES: dict[str, tuple[str, str]] = {
    "gpt2": ("transformer.h", "mlp"),
    "gpt_neo": ("transformer.h", "mlp"),
    "gptj": ("transformer.h", "mlp"),
    "gpt_neox": ("gpt_neox.layers", "mlp"),
    "llama": ("model.layers", "mlp"),
    "mistral": ("model.layers", "mlp"),
    "qwen2": ("model.layers", "mlp"),
    "qwen3": ("model.layers", "mlp"),
    "gemma": ("model.layers", "mlp"),
    "gemma2": ("model.layers", "mlp"),
    "phi3": ("model.layers", "mlp"),
    "olmo": ("model.layers", "mlp"),
}


def _get(root: nn.Module, dotted: str) -> nn.Module | None:
    obj: object = root
    for part in dotted.split("."):
        obj = getattr(obj, part, None)
        if obj is None:
            return None
    return obj if isinstance(obj, nn.Module) else None


def decoder_layers(lm: nn.Module) -> nn.ModuleList:
    """The LM's decoder layers, bottom to top."""
    model_type = getattr(getattr(lm, "config", None), "model_type", None)
    if model_type in FAMILIES:
        layers = _get(lm, FAMILIES[model_type][0])
        if isinstance(layers, nn.ModuleList):
            return layers
    n_layers = getattr(getattr(lm, "config", None), "num_hidden_layers", None)
    for module in lm.modules():
        if (
            isinstance(module, nn.ModuleList)
            and len(module) > 0
            and (n_layers is None or len(module) == n_layers)
            and all(hasattr(block, "mlp") for block in module)
        ):
            return module
    raise BackboneError(
        f"cannot find the decoder layers of LM type '{model_type}' ({type(lm).__name__}); "
        "add its layer path and FFN attribute to ituning.targets.FAMILIES"
    )


def ffn_modules(lm: nn.Module) -> list[nn.Module]:
    """Each decoder layer's FFN (the module I-Tuning runs in parallel with), bottom to top."""
    model_type = getattr(getattr(lm, "config", None), "model_type", None)
    attr = FAMILIES.get(model_type, ("", "mlp"))[1]
    ffns = []
    for i, block in enumerate(decoder_layers(lm)):
        ffn = getattr(block, attr, None)
        if not isinstance(ffn, nn.Module):
            raise BackboneError(
                f"layer {i} of LM type '{model_type}' has no FFN submodule '{attr}'; "
                "add the right attribute to ituning.targets.FAMILIES"
            )
        ffns.append(ffn)
    return ffns


def hidden_size(lm: nn.Module) -> int:
    """d_lm, the width of the residual stream (and of the FFN input)."""
    size = getattr(getattr(lm, "config", None), "hidden_size", None)
    if not isinstance(size, int):
        raise BackboneError(f"LM {type(lm).__name__} has no integer config.hidden_size")
    return size
