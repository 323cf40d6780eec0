"""eval package of unsloth-recipes."""
