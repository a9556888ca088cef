"""View models and stores without widgets: chat history (SQLite), settings, the model library."""
