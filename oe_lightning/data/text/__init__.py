"""The text data family: tokenisation and vocabulary, padding, readers of text corpora in their formats."""
