"""Full-ranking evaluation: metrics and the evaluator (no artifacts: the evaluate stage reads and
writes them)."""
