"""metabench: meta-learning methods on fixed, versioned episodes, with honest confidence intervals."""

__version__ = "0.1.0"
