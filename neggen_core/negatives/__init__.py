"""The negatives stage: templates 2 (intervene) and 3 (complete) over every positive item."""
