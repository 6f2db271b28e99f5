"""The model in the loop: the controller, proposals, the model dialog and offer, the CRF panel,
the uncertainty view and batch progress."""
