"""The OpenAI-compatible API under ``/v1``, each endpoint on top of a native handler's chunks
(as Ollama's middleware converts from its native handlers). ``create_app`` lists each module's
routes."""
