"""The annotation session (no Qt): the open project, the current image and its document, the
label set and the jobs, with typed events. Every user intention is a method here; the window
(`deeplab_studio.gui`) calls these methods and subscribes to the events."""
