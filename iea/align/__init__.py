"""Fine-Grained Aligner: FGCA building, span location, aligner format/train/predict."""
