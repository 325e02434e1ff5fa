"""The SPEECH/NONSPEECH LoRA audio classifier (seed 003): its lightning_modules code."""
