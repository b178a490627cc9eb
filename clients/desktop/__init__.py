"""TinyLlama Desktop: a Tk client of the gateway (or any OpenAI-compatible endpoint)."""
