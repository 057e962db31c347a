"""The language models under study: corpus, tokenizer and token arrays, the embedded family and its
training, loading of hub / local models, and hooks into any supported architecture."""
