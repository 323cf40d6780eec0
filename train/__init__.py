"""train package of unsloth-recipes."""
