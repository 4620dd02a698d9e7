"""Networks shared by the experiments: the MSP multilayer perceptron (`mlp`) and the pure-function transformer."""
