"""The direct topology: the OpenAI API and the engine in one process (``topology: direct``)."""
