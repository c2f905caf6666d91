"""Command-line tools: evaluation, forecast training, the retraining job, the demo and the
helpers it shares with the tests."""
