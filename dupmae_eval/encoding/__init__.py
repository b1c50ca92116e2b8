"""From text to vectors: checkpoint loading, encoder kinds, Pyserini-compatible encoders, corpus encoding."""
