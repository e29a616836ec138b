"""LLM backends (vLLM server, lexicon), prompt templates, the response cache."""
