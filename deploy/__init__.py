"""deploy package of unsloth-recipes."""
