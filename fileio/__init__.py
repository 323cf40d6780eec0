"""File writing shared by every stage: each output appears whole at its final path or not at all."""
