"""Training: flow matching, LoRA and quantization setup, checkpoints, validation, and the loop."""
