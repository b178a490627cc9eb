"""The HTTP edge: auth, validation, admission, enqueue, answer."""
