"""DNS checks of sending domains: one module per subject, each returning CheckResults."""
