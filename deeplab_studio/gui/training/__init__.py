"""Training on the user's labels: the tools, the dialog, the run and its chart."""
