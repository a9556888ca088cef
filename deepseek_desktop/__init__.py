"""DeepSeek Desktop: the GUI process. It never imports torch; the engine runs in a worker process."""
