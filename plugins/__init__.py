"""How pytest runs mailgate: options, parametrisation, deploy gate, sign-off, reports, sandbox."""
