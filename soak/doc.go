// Package soak holds the soak test (build tag soak, `make soak`): floods of
// careless and hostile clients against real `lambdadb serve` processes for
// minutes, checking that the node's memory stays bounded and that every
// write it acknowledged reads back. It has no code of its own; the floods
// are the benchmark's (lambdadb/bench).
package soak
