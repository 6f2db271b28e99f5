"""The main window: layout, actions, toolbar, undo, autosave, settings, and the link other modules use."""
