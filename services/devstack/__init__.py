"""The laptop stack: a dev token issuer and the ``make up`` supervisor. Never used in AWS."""
