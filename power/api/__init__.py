"""HTTP handlers, one module per Ollama resource. Handlers never touch processes or sockets."""
