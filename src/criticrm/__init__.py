"""criticrm: critique-based reward models (Critic-RM), from self-generated critiques to a served reward."""

__version__ = "0.1.0"
