"""Model names, sources and loading, shared by every stage (data_prep, train, eval, deploy, bench)."""
