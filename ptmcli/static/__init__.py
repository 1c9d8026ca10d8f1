"""Static word vectors: training (word2vec, fastText, GloVe, NNLM), files and evaluation."""
