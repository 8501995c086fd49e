"""Stage agents of the distillation loop (generate, validate, train, eval) and what they run on."""
