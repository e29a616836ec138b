"""The attributes stage: template 1 over every item, and the key features per category."""
