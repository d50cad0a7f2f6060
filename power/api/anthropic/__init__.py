"""The Anthropic Messages API under ``/v1/messages``, on top of the native chat."""
