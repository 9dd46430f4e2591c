"""`region-report`: the paper's tables and figures from the JSON files the other tools write."""
