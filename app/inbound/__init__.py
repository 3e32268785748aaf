"""Wire dialects clients speak to the gateway besides OpenAI's: each translates its requests
into the canonical (OpenAI-shaped) call and the gateway's answers back, with no I/O."""
