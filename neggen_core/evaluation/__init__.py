"""Full-ranking evaluation: metrics, the evaluator, the evaluate stage."""
