"""The SPEECH/NONSPEECH LoRA audio classifier (seed 003): its datamodules code."""
