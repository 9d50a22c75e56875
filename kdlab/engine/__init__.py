"""The training engine: one loop for teachers and students."""
