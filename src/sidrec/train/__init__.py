"""Training: SFT (HF Trainer) and RL."""
