"""Policies for the episode runner: expert, random, hf, llamacpp, openai.

Heavy dependencies (torch, llama_cpp) are imported only by the policy that needs them.
"""

from __future__ import annotations

from eval.policies.base import EpisodeState, Policy, PolicyError, Reply

POLICY_NAMES = ("expert", "random", "hf", "llamacpp", "openai")

__all__ = ["POLICY_NAMES", "EpisodeState", "Policy", "PolicyError", "Reply"]
