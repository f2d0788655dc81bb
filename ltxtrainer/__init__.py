"""ltxtrainer: LoRA training for LTX-Video, with command-line stages and a Gradio GUI."""

__version__ = "0.1.0"
