"""Models: a compact RoBERTa encoder with MLM and sequence-classification heads."""
