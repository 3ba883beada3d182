"""MedTrinity-25M -> ms-swift JSONL: ROI recovery, caption fields, splits, preference pairs."""
