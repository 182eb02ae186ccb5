"""IEA, Interpretation-based Explicit Alignment: the method, free of any platform code."""
