"""Captioning methods that share the harness with I-Tuning: its fully fine-tuned variant and
ClipCap's two variants (``registry.py`` names them and builds one; ``base.py`` says what a method
is to the trainer, the decoder and the checkpoint)."""
