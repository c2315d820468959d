"""Who may ask, and how much: API keys and their scopes, rate and concurrency limits,
checked by one gate before any protocol's route sees a request."""
