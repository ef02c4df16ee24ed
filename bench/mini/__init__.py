"""The ``mini`` profile's own frozen backbones: word-level GPT-2 LMs (``lm``) and a small CLIP
ViT (``clip``), pre-trained here on the Shapes world, checked by quality gates (``gates``) and
cached by configuration (``backbones``, ``python -m bench.mini``)."""
