"""LLM backends (vLLM server, offline), prompt templates, the response cache."""
