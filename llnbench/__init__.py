"""llnbench: pretrain, fine-tune and benchmark RoBERTa models with efficient attention."""

__version__ = "0.1.0"
