"""Who may call what: API tokens for users, JWT callback tokens for trainers."""
